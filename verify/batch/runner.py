"""Running a batch: a local pool of worker processes with a per-job kill, or an existing Dask
distributed cluster; then the summary.

Local (``--workers N``): N long-lived worker processes (``python -m verify.batch.job --serve``) each run one job at a time in
process (the imports are paid once per worker).  A job that runs past its limit has its worker
killed and replaced, and is recorded as ``timeout``; a worker that dies is replaced and its job
recorded as ``error``.

Dask (``--scheduler ADDRESS``): each job is a task that runs ``python -m verify.batch.job`` in a
subprocess on a worker, killed at the limit; the client writes the records.  The workers must see
the same file system (the manifest's inputs and OUT).

Records are written atomically (``OUT/jobs/ID.json``); a job whose record is already there is
skipped, so an interrupted batch resumes where it stopped.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from typing import Callable, Optional

from constructions.model import atomic_write_text
from verify.batch.jobs import error_record, load_record, run_job_here, write_record

__all__ = ["run_batch", "run_local", "run_dask", "summarize", "SUMMARY_FORMAT"]

SUMMARY_FORMAT = "ptverify-batch-summary/1"


def _limit(job: dict, default: float) -> float:
    return float(job.get("job_timeout", default))


_MARK = "@@ptverify-batch-record "


class _Slot:
    """One worker process (``python -m verify.batch.job --serve``: jobs on its standard input, one
    JSON line each; records on its standard output after a marker) and the job it runs."""

    def __init__(self):
        self.start()

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "verify.batch.job", "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buf = b""
        self.job = None
        self.t0 = 0.0
        self.deadline = math.inf

    def send(self, job: dict, out: str) -> None:
        self.job = job
        self.t0 = time.perf_counter()
        self.proc.stdin.write((json.dumps([job, out]) + "\n").encode())
        self.proc.stdin.flush()

    def read(self) -> tuple[Optional[dict], bool]:
        """(a record if one arrived, whether the process has closed its output)."""
        eof = False
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                eof = True
                break
            self.buf += chunk
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            text = line.decode(errors="replace")
            if text.startswith(_MARK):
                try:
                    return json.loads(text[len(_MARK):]), eof
                except ValueError:
                    continue
        return None, eof

    def kill(self):
        _kill_group(self.proc)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        for fh in (self.proc.stdin, self.proc.stdout):
            try:
                fh.close()
            except OSError:
                pass

    def restart(self):
        self.kill()
        self.start()

    def stop(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


def run_local(jobs: list, out: str, workers: int = 1, job_timeout: float = 600.0,
              on_record: Optional[Callable] = None) -> list:
    """Run ``jobs`` on ``workers`` local processes; returns their records (also written)."""
    import selectors
    out = os.path.abspath(out)
    pending = list(jobs)
    slots = [_Slot() for _ in range(max(1, min(workers, len(jobs))))] if jobs else []
    records = []

    def done(rec):
        write_record(out, rec)
        records.append(rec)
        if on_record:
            on_record(rec)
    try:
        while pending or any(s.job for s in slots):
            for s in slots:
                if s.job is None and pending:
                    job = pending.pop(0)
                    try:
                        s.send(job, out)
                    except (BrokenPipeError, OSError):
                        s.restart()
                        s.send(job, out)
                    s.deadline = s.t0 + _limit(job, job_timeout)
            busy = [s for s in slots if s.job]
            sel = selectors.DefaultSelector()
            for s in busy:
                sel.register(s.fd, selectors.EVENT_READ, s)
            nearest = min(s.deadline for s in busy)
            sel.select(timeout=max(0.0, min(nearest - time.perf_counter(), 1.0)))
            sel.close()
            now = time.perf_counter()
            for s in busy:
                rec, eof = s.read()
                if rec is not None:
                    s.job = None
                    done(rec)
                elif eof or s.proc.poll() is not None:
                    code = s.proc.wait()
                    done(error_record(s.job, "error", now - s.t0, f"the job's process died (exit code {code})"))
                    s.restart()
                elif now >= s.deadline:
                    lim = _limit(s.job, job_timeout)
                    done(error_record(s.job, "timeout", now - s.t0, f"killed after the job limit of {lim:g} s"))
                    s.restart()
    finally:
        for s in slots:
            if s.job is None:
                s.stop()
            else:
                s.kill()
    return records


# --------------------------------------------------------------------------- Dask

def _dask_task(job: dict, out: str, limit: float) -> dict:
    """On a Dask worker: run the job in a subprocess, killed (with its process group) at ``limit``."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "verify.batch.job", json.dumps(job), out]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        so, se = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        return error_record(job, "timeout", time.perf_counter() - t0, f"killed after the job limit of {limit:g} s")
    last = so.strip().splitlines()[-1] if so.strip() else ""
    try:
        rec = json.loads(last)
        if isinstance(rec, dict) and rec.get("id") == job["id"]:
            return rec
    except ValueError:
        pass
    tail = (se or "").strip().splitlines()
    return error_record(job, "error", time.perf_counter() - t0,
                        f"the job's process died (exit code {proc.returncode})" + (f": {tail[-1][:200]}" if tail else ""))


def _kill_group(proc) -> None:
    import signal
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _connect(scheduler: str):
    """A Dask client of the scheduler at ``scheduler`` (InputError naming --scheduler otherwise)."""
    from constructions.model import InputError
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - depends on the installation
        raise InputError("--scheduler", "dask.distributed installed (pip install 'ptverify[batch]')",
                         "no module named distributed") from None
    try:
        return Client(scheduler, timeout=30)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError("--scheduler", "the address of a running Dask scheduler such as tcp://host:8786",
                         f"{scheduler!r} ({type(exc).__name__})") from None


def run_dask(jobs: list, out: str, scheduler: Optional[str], job_timeout: float = 600.0,
             on_record: Optional[Callable] = None, client=None) -> list:
    """Run ``jobs`` on the Dask distributed cluster at ``scheduler`` (or on ``client``)."""
    own = client is None
    if own:
        client = _connect(scheduler)
    from distributed import as_completed
    records = []
    try:
        futs = {client.submit(_dask_task, dict(j), os.path.abspath(out), _limit(j, job_timeout),
                              pure=False, retries=0): j for j in jobs}
        for fut in as_completed(list(futs)):
            job = futs[fut]
            try:
                rec = fut.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker or task is this job's error
                rec = error_record(job, "error", 0.0, f"the task failed on the cluster ({type(exc).__name__}: "
                                                      f"{str(exc)[:200]})")
            write_record(out, rec)
            records.append(rec)
            if on_record:
                on_record(rec)
    finally:
        if own:
            client.close()
    return records


# --------------------------------------------------------------------------- the batch

def run_batch(jobs: list, out: str, workers: int = 1, scheduler: Optional[str] = None,
              job_timeout: float = 600.0, on_record: Optional[Callable] = None, client=None) -> dict:
    """Run every job of ``jobs`` whose record is not in ``out`` yet; write and return the summary
    over all of them (``skipped``: how many had a record already)."""
    if scheduler is not None and client is None:      # an unreachable scheduler is refused before OUT is made
        client = _connect(scheduler)
        try:
            return run_batch(jobs, out, workers, scheduler, job_timeout, on_record, client)
        finally:
            client.close()
    os.makedirs(os.path.join(out, "jobs"), exist_ok=True)
    todo, skipped = [], 0
    for j in jobs:
        if load_record(out, j["id"]) is not None:
            skipped += 1
        else:
            todo.append(j)
    t0 = time.perf_counter()
    if scheduler is not None or client is not None:
        run_dask(todo, out, scheduler, job_timeout, on_record, client=client)
    else:
        run_local(todo, out, workers, job_timeout, on_record)
    records = [load_record(out, j["id"]) or error_record(j, "error", 0.0, "no record was written") for j in jobs]
    summary = summarize(records)
    summary.update(ran=len(todo), skipped=skipped, wall_seconds=round(time.perf_counter() - t0, 3),
                   runner=f"dask {scheduler or 'client'}" if (scheduler or client) else f"local x{workers}")
    atomic_write_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=1))
    return summary


def _pct(xs: list, q: float) -> Optional[float]:
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))
    return round(xs[k], 4)


def summarize(records: list) -> dict:
    """Verdict and status counts, time percentiles and the failures (error/timeout) with reasons."""
    verdicts, statuses = {}, {}
    for r in records:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        if r["status"] == "ok":
            verdicts[str(r["verdict"])] = verdicts.get(str(r["verdict"]), 0) + 1
    secs = [r["seconds"] for r in records if isinstance(r.get("seconds"), (int, float))]
    return {"format": SUMMARY_FORMAT, "jobs": len(records), "statuses": statuses, "verdicts": verdicts,
            "seconds": {"p50": _pct(secs, 50), "p90": _pct(secs, 90), "p99": _pct(secs, 99),
                        "max": max(secs) if secs else None, "total": round(sum(secs), 3)},
            "failures": [{"id": r["id"], "status": r["status"], "reason": r.get("message", "")}
                         for r in records if r["status"] != "ok"]}
