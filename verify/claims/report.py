"""``report.md`` of ``ptverify reproduce``: a summary table, the provenance of the run, and one
section per claim with its verdict, certificate kind, checks, warnings and artifacts.

Every path in the report is relative to the report's folder, and every command in it is meant to
be run from that folder (``ptverify replay L2.json``).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from importlib import metadata
from typing import Any

from verify.result import DECIDED, MOVE_HINT, Status

__all__ = ["render_report", "provenance"]

#: distributions whose versions the report records (label, distribution name)
VERSIONS = (("python", None), ("z3", "z3-solver"), ("torch", "torch"), ("numpy", "numpy"))


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    """The commit of the checkout this ptverify runs from, or "not a git checkout"."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.exists(os.path.join(root, ".git")):
        return "not a git checkout"
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout (git unavailable)"
    return head + (" (with uncommitted changes)" if dirty else "")


def provenance(command: str) -> list[tuple[str, str]]:
    """(field, value) pairs: ptverify version and commit, library versions, date, machine, command."""
    from verify import __version__
    rows = [("ptverify", __version__), ("git commit", _git_commit())]
    for label, dist in VERSIONS:
        rows.append((label, platform.python_version() if dist is None else _version(dist)))
    rows += [("date (UTC)", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")),
             ("machine", f"{platform.platform()}; {platform.machine() or 'unknown'}; {os.cpu_count()} CPUs"),
             ("command", f"`{command}`")]
    return rows


def _cell(v: Any) -> str:
    """A Markdown table cell: JSON for anything that is not a string, pipes and newlines escaped."""
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text.replace("|", "\\|").replace("\n", " ")


def _instance(params: dict) -> str:
    """``k=v`` pairs, lists and other values as JSON (never Python's repr)."""
    return " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in params.items())


def _link(rel: str) -> str:
    return f"[{rel}]({rel.replace(os.sep, '/').replace(' ', '%20')})"


def _kind(res) -> str:
    cert = res.certificate if Status(res.status) in DECIDED else None
    return f"`{cert['kind']}`" if isinstance(cert, dict) and cert.get("kind") else "none"


def render_report(runs: list, quick: bool, seed: int, folder, command: str) -> str:
    """The whole ``report.md``."""
    failures = sum(1 for r in runs if not r.ok)
    lines = ["# ptverify report", "",
             f"Mode: {'quick' if quick else 'default'} sizes; seed {seed}; {len(runs)} claim(s), "
             + (f"**{failures} did not reach the expected verdict**." if failures
                else "each reached its expected verdict."), "",
             "Paths are relative to this folder, and the commands are run from it (`cd` here first). "
             "Each result below comes with its `replay` command, which re-checks it with the trusted checker "
             f"(no solver); a result's side files must sit next to it ({MOVE_HINT}).", "",
             "| claim | instance | expected | verdict | certificate | seconds | result |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        mark = "" if r.ok else " **(unexpected)**"
        lines.append(f"| {r.claim.id} | {_cell(_instance(r.params))} "
                     f"| {r.claim.expected.value} | {Status(r.result.status).value}{mark} | {_kind(r.result)} "
                     f"| {r.seconds:.2f} | {_link(_rel(r))} |")
    decided = [_rel(r) for r in runs if Status(r.result.status) in DECIDED]
    if decided:
        lines += ["", "Every decided result at once, with nothing but the trusted checker (standard library and "
                  f"numpy): `python -m verify.checker {' '.join(decided)}`"]
    lines += ["", "## Provenance", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in provenance(command)]
    lines += ["", "## Output folder", ""] + _folder_lines(folder) + [""]
    for r in runs:
        lines += _section(r)
    return "\n".join(lines) + "\n"


def _rel(r) -> str:
    return next((p for p, role in r.files if role == "result"), os.path.basename(r.artifact))


def _folder_lines(folder) -> list:
    out = []
    if folder.removed:
        out.append(f"Removed first: the {len(folder.removed)} file(s) of the previous run that ptverify had "
                   "written here (listed in `.ptverify-manifest.json`), so none of them is mixed into this "
                   "report.")
    if folder.kept_changed:
        out.append(f"Kept: {len(folder.kept_changed)} file(s) of the previous run that were changed since "
                   f"(ptverify deletes only the files it wrote, and only while unchanged): "
                   + ", ".join(f"`{p}`" for p in folder.kept_changed[:10]) + ".")
    if folder.foreign:
        out.append(f"The folder also holds {len(folder.foreign)} file(s) this run did not write; they are not "
                   "part of this report.")
    if not out:
        out.append("The folder held no earlier files.")
    out.append("Every file this run wrote is listed in `.ptverify-manifest.json`; the next run into this "
               "folder deletes those (unchanged ones only) before it starts.")
    return [" ".join(out)]


def _section(r) -> list:
    res, claim = r.result, r.claim
    data = res.to_json()
    status = Status(res.status).value
    lines = [f"## {claim.id}: {claim.title}", ""]
    if r.ok:
        lines.append(f"Claim (expected **{claim.expected.value}**, reached): {claim.statement}")
    else:
        lines.append(f"Claim (expected **{claim.expected.value}**): not established by this run, whose "
                     f"verdict is **{status}**; the claim's statement is not repeated here.")
    lines += ["", f"Verdict: **{status}** via {res.method or '-'}."]
    if data.get("statement"):
        lines += ["", f"What the result states (derived from its question and verdict): {data['statement']}."]
    lines += ["", f"Certificate kind: {_kind(res)}"
              + (" (re-checked by the trusted checker; its format is in the project's docs/results.md)."
                 if _kind(res) != "none" else f" (a `{status}` result claims nothing).")]
    for w in (data.get("info") or {}).get("warnings", []):
        lines += ["", f"> **Warning:** {w}"]
    if res.checks:
        lines += ["", "| check | value |", "|---|---|"] + [f"| {_cell(k)} | {_cell(v)} |" for k, v in res.checks.items()]
    if res.message:
        lines += ["", "    " + res.message.replace("\n", "\n    ")]
    lines += [""] + _artifact_lines(r)
    if claim.command:
        missing = [t for t in claim.command.split() if t.startswith("examples/")
                   and not os.path.isfile(os.path.join(os.path.dirname(r.artifact), t))]
        note = " (its `examples/` files are in the ptverify source repository)" if missing else ""
        lines += ["", f"Check it yourself (the claim's default instance): `{claim.command}`{note}; proof: "
                      f"`{claim.proof}`; test: `{claim.test}`."]
    return lines + [""]


def _artifact_lines(r) -> list:
    by_role: dict = {}
    for rel, role in r.files:
        by_role.setdefault(role, []).append(rel)
    result = _rel(r)
    status = Status(r.result.status)
    recheck = (f"re-check it: `ptverify replay {result}`" if status in DECIDED
               else f"nothing to re-check (a `{status.value}` result claims nothing)")
    lines = ["Artifacts:", "", f"- result: {_link(result)}; {recheck}"]
    if by_role.get("side"):
        lines.append("- side files (inputs too large to embed; keep them next to the result): "
                     + ", ".join(_link(p) for p in by_role["side"]))
    if by_role.get("smt2"):
        lines.append("- SMT-LIB2 queries (`z3 FILE`): " + ", ".join(_link(p) for p in by_role["smt2"]))
    if by_role.get("example"):
        lines.append("- example inputs for the command below: " + ", ".join(_link(p) for p in by_role["example"]))
    folder = os.path.dirname(r.artifact)
    for p in by_role.get("other", []):
        hint = f"; re-check it: `ptverify replay {p}`" if _is_result(os.path.join(folder, p)) else ""
        lines.append(f"- {_link(p)}{hint}")
    for p in by_role.get("plot", []):
        lines += ["", f"![{r.claim.id}: {os.path.basename(p)}]({p.replace(os.sep, '/')})"]
    return lines


def _is_result(path: str) -> bool:
    """Whether an extra file a claim wrote is a result file (its first key names the format)."""
    from verify.result import RESULT_FORMAT
    if not path.endswith(".json"):
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(200)
    except OSError:
        return False
    return f'"format": "{RESULT_FORMAT}"' in head
