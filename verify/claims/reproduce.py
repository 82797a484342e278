"""``ptverify reproduce``: run every registered claim and write a report."""
from __future__ import annotations

import os
import time
import traceback
from typing import Callable, Optional

from constructions.model import atomic_write_text

from verify.claims import all_claims
from verify.result import Result, Status

__all__ = ["run_reproduce"]


def run_reproduce(out: str, quick: bool = False, only: Optional[list] = None, seed: int = 0,
                  progress: Optional[Callable[[str], None]] = None) -> tuple[int, list]:
    """Run the claims, write one result per claim and ``out/report.md``.

    Returns (exit code, rows of (claim, params, result, seconds, artifact, ok)); printing is the
    CLI's business (``progress`` receives one line per claim started)."""
    os.makedirs(out, exist_ok=True)
    claims = [c for c in all_claims() if only is None or c.id in only]
    if only:
        missing = set(only) - {c.id for c in claims}
        if missing:
            from constructions.model import InputError
            raise InputError("--only", f"claim ids among {[c.id for c in all_claims()]}", f"{sorted(missing)}")
    rows = []
    failures = 0
    for claim in claims:
        params = dict(claim.quick if quick else claim.default)
        params.setdefault("seed", seed)
        artifact = os.path.join(out, f"{claim.id}.json")
        t0 = time.perf_counter()
        if progress is not None:
            progress(f"claim {len(rows) + 1} of {len(claims)}: {claim.id}: {claim.title} ...")
        try:
            res: Result = claim.run(params, out)
        except Exception as exc:  # a crash is reported, never hidden
            res = Result(claim=claim.id, status=Status.ERROR,
                         message=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
        secs = time.perf_counter() - t0
        res.write(artifact)
        ok = Status(res.status) == claim.expected
        failures += 0 if ok else 1
        rows.append((claim, params, res, secs, artifact, ok))
    lines = ["# ptverify report", "",
             f"Mode: {'quick' if quick else 'default'} sizes; seed {seed}.", "",
             "| claim | instance | expected | verdict | seconds | artifact |",
             "|---|---|---|---|---|---|"]
    for claim, params, res, secs, artifact, ok in rows:
        inst = " ".join(f"{k}={v}" for k, v in params.items())
        mark = "" if ok else " **(unexpected)**"
        lines.append(f"| {claim.id} | {inst} | {claim.expected.value} | {Status(res.status).value}{mark} "
                     f"| {secs:.2f} | {os.path.basename(artifact)} |")
    lines.append("")
    for claim, params, res, secs, artifact, ok in rows:
        lines.append(f"## {claim.id}: {claim.title}")
        lines.append("")
        lines.append(f"Statement: {claim.statement}")
        lines.append("")
        lines.append(f"Verdict: **{Status(res.status).value}** via {res.method or '-'}; "
                     f"checks: {res.checks or '-'}")
        if res.message:
            lines.append("")
            lines.append("    " + res.message.replace("\n", "\n    "))
        if claim.command:
            lines.append("")
            lines.append(f"Check it yourself: `{claim.command}`; proof: `{claim.proof}`; test: `{claim.test}`.")
        lines.append("")
    atomic_write_text(os.path.join(out, "report.md"), "\n".join(lines))
    return (1 if failures else 0), rows
