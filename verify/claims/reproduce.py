"""``ptverify reproduce``: run every registered claim into an output folder and write a report.

The folder may be reused.  ptverify records every file it writes there in
``.ptverify-manifest.json``; the next run first deletes the files that manifest lists (only those,
and only when their content is unchanged), so an old run's results never mix with the new report.
Files ptverify did not write are never touched; the report says what was removed and what else
the folder holds.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Optional

from constructions.model import InputError, atomic_write_text, sha256_file

from verify.claims import Claim, all_claims
from verify.result import Result, Status

__all__ = ["run_reproduce", "MANIFEST", "ClaimRun", "FolderReport"]

MANIFEST = ".ptverify-manifest.json"
MANIFEST_FORMAT = "ptverify-manifest/1"


@dataclass
class ClaimRun:
    """One claim's run: its result, the files it wrote (paths relative to the output folder)."""
    claim: Claim
    params: dict
    result: Result
    seconds: float
    artifact: str               # the result file (path as written)
    ok: bool
    files: list = field(default_factory=list)   # [(relative path, role)]: result, side, smt2, plot, example, other


@dataclass
class FolderReport:
    """What happened to the output folder before the run."""
    removed: list = field(default_factory=list)      # files of the previous run, deleted
    kept_changed: list = field(default_factory=list)  # listed in the manifest but changed since: kept
    foreign: list = field(default_factory=list)      # files ptverify did not write (never touched)


def run_reproduce(out: str, quick: bool = False, only: Optional[list] = None, seed: int = 0,
                  progress: Optional[Callable[[str], None]] = None, claims: Optional[list] = None,
                  command: Optional[str] = None) -> tuple[int, list]:
    """Run the claims, write one result per claim and ``out/report.md``.

    Returns (exit code, rows of (claim, params, result, seconds, artifact, ok)); printing is the
    CLI's business (``progress`` receives one line per claim started).  ``claims`` replaces the
    registry (tests); ``command`` is the command line the report records (default: ``sys.argv``)."""
    selected = _select(claims if claims is not None else all_claims(), only)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
        raise InputError("--seed", "an integer from 0 to 2**32 - 1", repr(seed))
    _make_folder(out)
    folder = _clear_previous(out)
    before, before_dirs = _snapshot(out), _folders(out)
    runs: list[ClaimRun] = []
    try:
        for i, claim in enumerate(selected):
            if progress is not None:
                progress(f"claim {i + 1} of {len(selected)}: {claim.id}: {claim.title} ...")
            runs.append(_run_one(claim, out, quick, seed))
        folder.foreign = sorted(set(before) - {MANIFEST})
        from verify.claims.report import render_report
        atomic_write_text(os.path.join(out, "report.md"),
                          render_report(runs, quick, seed, folder, command or _command_line()))
    finally:
        explicit = {p for r in runs for p, role in r.files if role in ("result", "side", "example")}
        _write_manifest(out, before, before_dirs, explicit | {"report.md"})
    failures = sum(1 for r in runs if not r.ok)
    return (1 if failures else 0), [(r.claim, r.params, r.result, r.seconds, r.artifact, r.ok) for r in runs]


def _select(claims: list, only: Optional[list]) -> list:
    """The claims to run (bad ``--only`` ids are exit 2, before anything is written)."""
    if only is None:
        return list(claims)
    ids = {c.id for c in claims}
    missing = [x for x in only if x not in ids]
    if missing or not only:
        raise InputError("--only", f"comma-separated claim ids among {', '.join(c.id for c in claims)}",
                         repr(",".join(missing)) if missing else "no id")
    return [c for c in claims if c.id in only]


def _make_folder(out: str) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError("--out", "a folder, or a path where one can be created", f"{out!r} is a file")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".ptverify-write-test")
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as exc:
        raise InputError("--out", "a writable folder, or a path where one can be created",
                         f"{out!r} ({exc.strerror or type(exc).__name__})") from None


def _run_one(claim: Claim, out: str, quick: bool, seed: int) -> ClaimRun:
    params = dict(claim.quick if quick else claim.default)
    params.setdefault("seed", seed)
    artifact = os.path.join(out, f"{claim.id}.json")
    before = _snapshot(out)
    t0 = time.perf_counter()
    try:
        res: Result = claim.run(params, out)
    except Exception as exc:  # a crash is reported, never hidden
        res = Result(claim=claim.id, status=Status.ERROR,
                     message=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
    secs = time.perf_counter() - t0
    try:
        written = res.write(artifact)
    except Exception as exc:  # e.g. a side file gone: the result becomes an error, still written
        res = Result(claim=claim.id, status=Status.ERROR, message=f"the result could not be written: "
                     f"{type(exc).__name__}: {exc}")
        written = res.write(artifact)
    _copy_examples(claim.command, out)
    after = _snapshot(out)
    sides = [os.path.relpath(p, out) for p in written[1:]]
    new = sorted({p for p, st in after.items() if before.get(p) != st} | set(sides))
    files = [(p, _role(p, os.path.relpath(artifact, out), set(sides))) for p in new]
    ok = Status(res.status) == claim.expected
    return ClaimRun(claim, params, res, secs, artifact, ok, files)


def _role(rel: str, result_rel: str, sides: set) -> str:
    ext = os.path.splitext(rel)[1].lower()
    if rel == result_rel:
        return "result"
    if rel in sides:
        return "side"
    if rel.startswith("examples" + os.sep):
        return "example"
    if ext == ".smt2":
        return "smt2"
    if ext in (".png", ".svg", ".jpg", ".jpeg", ".gif"):
        return "plot"
    return "other"


def _repo_examples() -> Optional[str]:
    """The repository's ``examples/`` folder (absent from a non-editable install)."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(here, "examples")
    return path if os.path.isdir(path) else None


def _copy_examples(command: str, out: str) -> None:
    """Copy the ``examples/...`` files a claim's command names into ``out/examples/`` so that the
    command runs as printed from the output folder."""
    src = _repo_examples()
    if not command or src is None:
        return
    try:
        tokens = shlex.split(command)
    except ValueError:
        return
    for tok in tokens:
        rel = os.path.normpath(tok)
        if not rel.startswith("examples" + os.sep) or ".." in rel.split(os.sep):
            continue
        source = os.path.join(os.path.dirname(src), rel)
        target = os.path.join(out, rel)
        if os.path.isfile(source) and not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(source, target)


def _command_line() -> str:
    prog = os.path.basename(sys.argv[0]) if sys.argv else ""
    if prog in ("ptverify", "__main__.py"):
        prog = "ptverify"
    return " ".join([shlex.quote(prog)] + [shlex.quote(a) for a in sys.argv[1:]])


# --------------------------------------------------------------------------- the folder and its manifest

def _snapshot(out: str) -> dict:
    """Every regular file under ``out`` (relative path -> (size, mtime_ns)), hidden files and
    folders left out (ptverify writes none but its manifest); symlinks are not followed."""
    snap = {}
    for root, dirs, files in os.walk(out):
        dirs[:] = [d for d in dirs if not d.startswith(".") and not os.path.islink(os.path.join(root, d))]
        for name in files:
            path = os.path.join(root, name)
            if name.startswith(".") or os.path.islink(path):
                continue
            try:
                st = os.stat(path)
            except OSError:      # gone meanwhile
                continue
            snap[os.path.relpath(path, out)] = (st.st_size, st.st_mtime_ns)
    return snap


def _inside(out: str, rel) -> Optional[str]:
    """``out/rel`` when ``rel`` is a plain relative path that stays inside ``out``."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel):
        return None
    norm = os.path.normpath(rel)
    if norm.startswith("..") or norm == ".":
        return None
    return os.path.join(out, norm)


def _read_manifest(out: str) -> dict:
    path = os.path.join(out, MANIFEST)
    if not os.path.isfile(path) or os.path.islink(path):
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) and obj.get("format") == MANIFEST_FORMAT else {}


def _clear_previous(out: str) -> FolderReport:
    """Delete the files the previous run's manifest lists, when unchanged; then the folders it
    created, when empty.  Nothing else is touched."""
    rep = FolderReport()
    man = _read_manifest(out)
    for entry in man.get("files", []):
        path = _inside(out, entry.get("path") if isinstance(entry, dict) else None)
        if path is None or not os.path.isfile(path) or os.path.islink(path):
            continue
        if sha256_file(path) == entry.get("sha256"):
            os.unlink(path)
            rep.removed.append(entry["path"])
        else:
            rep.kept_changed.append(entry["path"])
    for rel in sorted((d for d in man.get("dirs", []) if isinstance(d, str)), key=len, reverse=True):
        path = _inside(out, rel)
        if path is not None and os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path):
            os.rmdir(path)
    if os.path.isfile(os.path.join(out, MANIFEST)):
        os.unlink(os.path.join(out, MANIFEST))
    return rep


def _folders(out: str) -> set:
    """Every folder under ``out`` (relative paths), hidden ones left out."""
    found = set()
    for root, dirs, _ in os.walk(out):
        dirs[:] = [d for d in dirs if not d.startswith(".") and not os.path.islink(os.path.join(root, d))]
        found |= {os.path.relpath(os.path.join(root, d), out) for d in dirs}
    return found


def _write_manifest(out: str, before: dict, before_dirs: set, explicit: set) -> None:
    """Record the files this run wrote: those it wrote by name (results, side files, copied
    examples, the report) and those that did not exist before it (what the claims wrote: queries,
    plots); a file that existed before and changed is recorded only when written by name, so a
    file someone else edits meanwhile is never claimed.  And the folders it created."""
    after = _snapshot(out)
    files = [{"path": p, "sha256": sha256_file(os.path.join(out, p))}
             for p in sorted(after) if p != MANIFEST and (p in explicit or p not in before)]
    dirs = sorted(_folders(out) - before_dirs)
    atomic_write_text(os.path.join(out, MANIFEST),
                      json.dumps({"format": MANIFEST_FORMAT, "files": files, "dirs": dirs}, indent=1))
