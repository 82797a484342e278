"""Batch jobs: reading a manifest, turning a job into a ``ptverify`` command line, running it in
the current process, and the job record.

A manifest is JSON lines, one job a line (blank lines and lines starting with ``#`` are skipped)::

    {"id": "a1", "command": "check", "model": "m.json", "dataset": "d.json", "tolerance": "1e-9"}
    {"id": "a2", "command": "prove-limitation", "d": 3, "seed": 4}
    {"id": "a3", "command": "prove-multilayer", "layers": 2, "d": 4}
    {"id": "a4", "command": "replay", "result": "r.json"}

Every other key is an option of the command (``prompt_length`` -> ``--prompt-length``; ``true``
is a flag); ``args`` (a list of strings) is appended verbatim; ``artifacts: true`` writes the
solver queries (SMT-LIB2) to ``OUT/smt2/ID/``; ``job_timeout`` overrides ``--job-timeout``.
Relative paths in ``model``, ``dataset`` and ``result`` are relative to the manifest's folder.
The result file of a job goes to ``OUT/results/ID.json`` (``--json``, added by the runner), its
record to ``OUT/jobs/ID.json``.

With the environment variable ``PTVERIFY_BATCH_SELFTEST=1`` two more commands exist, for the
runner's own tests: ``selftest-crash`` (the process dies at once) and ``selftest-sleep``
(``seconds``, default 3600).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
from typing import Optional

from constructions.model import InputError, atomic_write_text

__all__ = ["COMMANDS", "JOB_FORMAT", "read_manifest", "job_argv", "run_job_here", "record_path", "result_path",
           "write_record", "load_record", "error_record"]

JOB_FORMAT = "ptverify-batch-job/1"

#: manifest command -> ptverify command words
COMMANDS = {"check": ["check"], "prove-limitation": ["prove", "limitation"],
            "prove-multilayer": ["prove", "multilayer"], "replay": ["replay"]}
_SELFTEST = ("selftest-crash", "selftest-sleep")
_PATH_KEYS = ("model", "dataset", "result")
_RESERVED = ("id", "command", "args", "artifacts", "job_timeout", "json", "expect_answer", "class")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _selftest_enabled() -> bool:
    return os.environ.get("PTVERIFY_BATCH_SELFTEST") == "1"


def read_manifest(path: str) -> list[dict]:
    """The jobs of a manifest, validated (InputError names the line and field), with paths made
    absolute against the manifest's folder."""
    if not os.path.isfile(path):
        raise InputError("MANIFEST", "a JSON-lines file", repr(path))
    base = os.path.dirname(os.path.abspath(path))
    jobs, seen = [], set()
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("MANIFEST", "a UTF-8 JSON-lines file", f"undecodable bytes at offset {exc.start}") from None
    except OSError as exc:
        raise InputError("MANIFEST", "a readable JSON-lines file", exc.strerror or str(exc)) from None
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        where = f"MANIFEST line {n}"
        try:
            job = json.loads(s)
        except json.JSONDecodeError as exc:
            raise InputError(where, "one JSON object", f"invalid JSON ({exc.msg})") from None
        if not isinstance(job, dict):
            raise InputError(where, "one JSON object", type(job).__name__)
        jid = job.get("id")
        if not isinstance(jid, str) or not _ID.match(jid):
            raise InputError(f"{where}: id", "a string of letters, digits, '.', '_', '-' (at most 128)",
                             repr(jid)[:60])
        if jid in seen:
            raise InputError(f"{where}: id", "an id used once", f"{jid!r} again")
        seen.add(jid)
        cmd = job.get("command")
        allowed = list(COMMANDS) + (list(_SELFTEST) if _selftest_enabled() else [])
        if cmd not in allowed:
            raise InputError(f"{where}: command", " or ".join(allowed), repr(cmd)[:60])
        if "args" in job and not (isinstance(job["args"], list) and all(isinstance(a, str) for a in job["args"])):
            raise InputError(f"{where}: args", "a list of strings", repr(job["args"])[:60])
        own = [a for a in job.get("args", []) if a.split("=", 1)[0] in ("--json", "--artifacts")]
        if own:                       # the runner sets them; a second --json would win and write elsewhere
            raise InputError(f"{where}: args", "options other than --json and --artifacts (the runner writes "
                             "OUT/results/ID.json; use \"artifacts\": true)", repr(own[0])[:60])
        if "job_timeout" in job:
            jt = job["job_timeout"]
            if isinstance(jt, bool) or not isinstance(jt, (int, float)) or not (0 < jt < 1e7):
                raise InputError(f"{where}: job_timeout", "a number of seconds > 0", repr(jt)[:40])
        for k, v in job.items():
            if k in _RESERVED:
                continue
            if not re.match(r"^[a-z][a-z0-9_]*$", k):
                raise InputError(f"{where}: {k}", "an option name such as prompt_length", repr(k)[:40])
            if isinstance(v, (dict, list)) or v is None:
                raise InputError(f"{where}: {k}", "a string, number or true", repr(v)[:40])
            known = _option_keys(cmd)
            if known is not None and k not in known:      # a misspelt option fails every such job
                raise InputError(f"{where}: {k}", f"an option of ptverify {' '.join(COMMANDS[cmd])} "
                                 f"({', '.join(sorted(known))})", repr(k)[:40])
        for k in _PATH_KEYS:
            if isinstance(job.get(k), str) and not os.path.isabs(job[k]):
                job[k] = os.path.join(base, job[k])
        job["_line"] = n
        jobs.append(job)
    if not jobs:
        raise InputError("MANIFEST", "at least one job (one JSON object a line)", "none")
    return jobs


def _option_keys(cmd: str) -> Optional[set]:
    """The job keys that name an option of the manifest command ``cmd`` (``prompt_length`` for
    ``--prompt-length``; ``result`` for replay's argument); None for the self-test commands."""
    if cmd not in COMMANDS:
        return None
    if cmd not in _OPTION_KEYS:
        import typer

        from verify.cli import app
        command = typer.main.get_command(app)
        for word in COMMANDS[cmd]:
            command = command.commands[word]
        keys = {o[2:].replace("-", "_") for p in command.params for o in p.opts if o.startswith("--")}
        _OPTION_KEYS[cmd] = keys | ({"result"} if cmd == "replay" else set())
    return _OPTION_KEYS[cmd]


_OPTION_KEYS: dict = {}


def record_path(out: str, jid: str) -> str:
    return os.path.join(out, "jobs", jid + ".json")


def result_path(out: str, jid: str) -> str:
    return os.path.join(out, "results", jid + ".json")


def job_argv(job: dict, out: str) -> list[str]:
    """The ``ptverify`` command line of a job (the result file goes to OUT/results/ID.json)."""
    cmd = job["command"]
    argv = list(COMMANDS.get(cmd, [cmd]))
    if cmd == "replay":
        argv.append(str(job.get("result", "")))
    for k, v in job.items():
        if k in _RESERVED or k.startswith("_") or (cmd == "replay" and k == "result"):
            continue
        opt = "--" + k.replace("_", "-")
        if v is True:
            argv.append(opt)
        elif v is False:
            continue
        else:
            argv += [opt, str(v)]
    if cmd in ("check", "prove-limitation", "prove-multilayer"):
        argv += ["--json", result_path(out, job["id"])]
    if job.get("artifacts") is True and cmd in ("check", "prove-limitation"):
        argv += ["--artifacts", os.path.join(out, "smt2", job["id"])]
    argv += list(job.get("args", []))
    return argv


def _status_of(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            st = json.load(fh).get("status")
        return st if isinstance(st, str) else None
    except (OSError, ValueError, AttributeError):
        return None


def run_job_here(job: dict, out: str) -> dict:
    """Run one job in this process; returns its record (never raises)."""
    t0 = time.perf_counter()
    cmd = job["command"]
    if cmd == "selftest-crash" and _selftest_enabled():
        os._exit(70)
    if cmd == "selftest-sleep" and _selftest_enabled():
        time.sleep(float(job.get("seconds", 3600)))
        return _record(job, "ok", 0, "slept", t0, None, "")
    if cmd == "smt-cross":   # internal: Z3 against cvc5 on one exported query (verify.batch.smt_cross)
        from verify.batch.smt_cross import cross_check_file
        rec = _record(job, "ok", 0, None, t0, None, "")
        rec["smt"] = cross_check_file(job["file"], int(job.get("ms", 10_000)))
        return rec
    argv = job_argv(job, out)
    os.makedirs(os.path.join(out, "results"), exist_ok=True)
    rp = result_path(out, job["id"])
    if os.path.exists(rp) and cmd != "replay":
        os.remove(rp)   # a stale result of an interrupted run is never reported as this run's
    buf_out, buf_err = io.StringIO(), io.StringIO()
    code, message = 0, ""
    try:
        from verify.cli import app
        import typer
        with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
            try:
                rc = app(args=argv, prog_name="ptverify", standalone_mode=False)
                code = rc if isinstance(rc, int) else 0
            except typer.Exit as exc:
                code = exc.exit_code
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    except InputError as exc:
        code, message = 2, f"ptverify: error: {exc}"
    except Exception as exc:  # noqa: BLE001 - a job's internal error is recorded, the batch goes on
        code, message = 3, f"internal error ({type(exc).__name__}: {str(exc)[:300]})"
    err = buf_err.getvalue().strip()
    if code == 2 and not message:
        message = err.splitlines()[-1] if err else "bad input (exit 2)"
    if code not in (0, 1):
        return _record(job, "error", code, None, t0, None, message or err[-300:] or f"exit {code}")
    if cmd == "replay":
        text = buf_out.getvalue().strip()
        return _record(job, "ok", code, "replay-ok" if code == 0 else "replay-failed", t0, None,
                       text.splitlines()[-1][:300] if text else "")
    verdict = _status_of(rp)
    if verdict is None:
        return _record(job, "error", code, None, t0, None, "no result file was written")
    msg = "" if code == 0 else "--expect not met"
    return _record(job, "ok", code, verdict, t0, os.path.relpath(rp, out), msg)


def _record(job: dict, status: str, code: Optional[int], verdict: Optional[str], t0: float, result: Optional[str],
            message: str) -> dict:
    return {"format": JOB_FORMAT, "id": job["id"], "command": job["command"], "status": status,
            "exit_code": code, "verdict": verdict, "seconds": round(time.perf_counter() - t0, 6),
            "result": result, "message": message}


def error_record(job: dict, status: str, seconds: float, message: str) -> dict:
    """The record of a job that crashed or ran past its limit (written by the runner)."""
    return {"format": JOB_FORMAT, "id": job["id"], "command": job["command"], "status": status,
            "exit_code": None, "verdict": None, "seconds": round(seconds, 6), "result": None, "message": message}


def write_record(out: str, rec: dict) -> None:
    os.makedirs(os.path.join(out, "jobs"), exist_ok=True)
    atomic_write_text(record_path(out, rec["id"]), json.dumps(rec, indent=1))


def load_record(out: str, jid: str) -> Optional[dict]:
    """A job's record when one is there and readable (a re-run skips such jobs)."""
    try:
        with open(record_path(out, jid), encoding="utf-8") as fh:
            rec = json.load(fh)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("format") == JOB_FORMAT and rec.get("id") == jid else None
