"""``ptverify batch MANIFEST`` and ``ptverify campaign generate|score`` (verify/batch/)."""
from __future__ import annotations

import math
import os
from typing import Optional

import typer

from constructions.model import InputError

__all__ = ["register", "batch_cmd", "MAX_CAMPAIGN_N"]

MAX_CAMPAIGN_N = 100_000       #: campaign generate --n: instance ids are numbered with 5 digits


def batch_cmd(
    manifest: str = typer.Argument(..., metavar="MANIFEST.jsonl", help="one job a line: {\"id\", \"command\", ...}"),
    out: str = typer.Option("ptverify-batch", "--out", help="output folder: jobs/, results/, smt2/, summary.json"),
    workers: int = typer.Option(1, "--workers", help="local worker processes"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler",
                                            help="address of a running Dask scheduler (instead of --workers)"),
    job_timeout: float = typer.Option(600.0, "--job-timeout", help="seconds before a job is killed (status timeout)"),
):
    """Run many check / prove-limitation / prove-multilayer / replay jobs; one record per job in
    OUT/jobs/ID.json, the result files in OUT/results/, and a summary (OUT/summary.json).

    A job that crashes or runs past its limit is recorded and the rest go on; a re-run skips jobs
    whose record is already there.  Exit 0 when every job produced a verdict, 1 otherwise."""
    from verify.batch.jobs import read_manifest
    from verify.batch.runner import run_batch
    from verify.cli import fail_input
    try:
        if workers < 1 or workers > 1024:
            raise InputError("--workers", "an integer from 1 to 1024", str(workers))
        if not (math.isfinite(job_timeout) and job_timeout > 0):
            raise InputError("--job-timeout", "a finite number of seconds > 0", str(job_timeout))
        if scheduler is not None and not scheduler.strip():
            raise InputError("--scheduler", "a scheduler address such as tcp://127.0.0.1:8786", repr(scheduler))
        jobs = read_manifest(manifest)
        summary = run_batch(jobs, out, workers=workers, scheduler=scheduler, job_timeout=job_timeout)
    except InputError as exc:
        fail_input(exc)
    _print_summary(summary, out)
    raise typer.Exit(0 if not summary["failures"] else 1)


def _print_summary(s: dict, out: str) -> None:
    from rich.table import Table

    from verify.cli import console
    con = console()
    t = Table(title=f"ptverify batch: {s['jobs']} jobs ({s['ran']} run, {s['skipped']} already done), {s['runner']}")
    t.add_column("verdict / status")
    t.add_column("jobs", justify="right")
    for k, v in sorted(s["verdicts"].items()):
        t.add_row(k, str(v))
    for k, v in sorted(s["statuses"].items()):
        if k != "ok":
            t.add_row(f"[{k}]", str(v))
    con.print(t)
    sec = s["seconds"]
    con.print(f"seconds per job: p50 {sec['p50']}  p90 {sec['p90']}  p99 {sec['p99']}  max {sec['max']}; "
              f"wall {s['wall_seconds']} s")
    for f in s["failures"][:20]:
        con.print(f"  {f['status']}: {f['id']}: {f['reason']}")
    if len(s["failures"]) > 20:
        con.print(f"  ... {len(s['failures']) - 20} more in {os.path.join(out, 'summary.json')}")
    con.print(f"summary: {os.path.join(out, 'summary.json')}")


def campaign_generate_cmd(
    out: str = typer.Option(..., "--out", help="campaign folder (instances/, manifest.jsonl, answers.jsonl)"),
    n: int = typer.Option(300, "--n", help="number of instances"),
    seed: int = typer.Option(0, "--seed", help="seed of the draw"),
    max_d: int = typer.Option(16, "--max-d", help="largest token dimension d (1 to 16)"),
    timeout: float = typer.Option(20.0, "--timeout", help="each check's solver time limit"),
    job_timeout: float = typer.Option(120.0, "--job-timeout", help="each job's kill limit"),
):
    """Write instances with known answers and a batch manifest (one check job each)."""
    from verify.batch.campaign import generate_campaign
    from verify.cli import fail_input
    from verify.cli.validate import seed as check_seed
    try:
        if not 1 <= n <= MAX_CAMPAIGN_N:
            raise InputError("--n", f"an integer from 1 to {MAX_CAMPAIGN_N} (instance ids have 5 digits)", str(n))
        check_seed(seed)
        if not 1 <= max_d <= 16:
            raise InputError("--max-d", "an integer from 1 to 16", str(max_d))
        for name, v in (("--timeout", timeout), ("--job-timeout", job_timeout)):
            if not (math.isfinite(v) and v > 0):
                raise InputError(name, "a finite number of seconds > 0", str(v))
    except InputError as exc:
        fail_input(exc)
    generate_campaign(out, n, seed, max_d, timeout, job_timeout)
    print(f"wrote {n} instances; run: ptverify batch {os.path.join(out, 'manifest.jsonl')} "
          f"--out {os.path.join(out, 'batch')} --workers 2")


def campaign_score_cmd(
    folder: str = typer.Argument(..., metavar="DIR", help="the campaign folder"),
    batch_out: Optional[str] = typer.Option(None, "--batch-out", help="the batch output folder (default DIR/batch)"),
    no_cross: bool = typer.Option(False, "--no-cross", help="skip solving the SMT-LIB2 queries with Z3 and cvc5"),
):
    """Compare verdicts with the known answers, re-check every proved/memorized with the trusted
    checker, cross-check Z3 against cvc5; write DIR/campaign.json.  Exit 1 on any wrong verdict or
    solver disagreement."""
    from verify.batch.campaign import format_report, score_campaign
    from verify.cli import fail_input
    if not os.path.isfile(os.path.join(folder, "answers.jsonl")):
        fail_input(InputError("DIR", "a campaign folder holding answers.jsonl", repr(folder)))
    try:
        from verify.cli.output import _folder_problem
        problem = _folder_problem(folder)
        if problem:
            raise InputError("DIR", "a campaign folder that can be written (the score goes to DIR/campaign.json)",
                             problem)
        _check_answers(os.path.join(folder, "answers.jsonl"))
        if batch_out is not None and not os.path.isdir(batch_out):
            raise InputError("--batch-out", "the folder that ptverify batch wrote (jobs/, results/)",
                             f"{batch_out!r} is a file" if os.path.exists(batch_out) else f"no folder {batch_out!r}")
    except InputError as exc:
        fail_input(exc)
    rep = score_campaign(folder, batch_out, cross=not no_cross)
    print(format_report(rep))
    bad = rep["wrong_verdicts"] or (rep.get("smt_cross_check") or {}).get("disagreements")
    raise typer.Exit(1 if bad else 0)


def _check_answers(path: str) -> None:
    """answers.jsonl: one JSON object a line with string ``id``, ``class`` and ``answer``."""
    import json
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, "a readable UTF-8 file of JSON lines", type(exc).__name__) from None
    for k, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            obj = None
        if not (isinstance(obj, dict) and all(isinstance(obj.get(key), str) for key in ("id", "class", "answer"))):
            raise InputError(f"{path} line {k}", "a JSON object with string fields id, class and answer",
                             repr(line[:60]))


def register(apps) -> None:
    """Add ``ptverify batch`` and ``ptverify campaign generate|score``."""
    apps["root"].command("batch")(batch_cmd)
    campaign_app = typer.Typer(no_args_is_help=True, help="The soundness campaign: instances with known answers.")
    campaign_app.command("generate")(campaign_generate_cmd)
    campaign_app.command("score")(campaign_score_cmd)
    apps["root"].add_typer(campaign_app, name="campaign")
