"""The CLI's one output module: the console, errors, the one-line verdict summary, output paths
(checked before any work starts, written atomically, ``-`` for standard output), ``--expect``,
``-q/-v`` and the progress reporter on standard error.

Every command goes through :func:`plumb`: it adds ``-q/--quiet`` and ``-v/--verbose``, refuses
unusable output paths and bad ``--timeout`` values (exit 2) before the command body runs, sends
the human summary to standard error when ``--json -`` claims standard output, and shows progress
on standard error when it is a terminal.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import os
import sys
from typing import Optional

import typer

from constructions.model import InputError

__all__ = ["is_tty", "stderr_is_tty", "console", "error", "fail_input", "emit", "check_expect", "say", "wrote",
           "check_output_paths", "check_timeout", "write_json_out", "write_witness", "plumb", "STATE",
           "TerminalProgress", "stop_progress", "write_result", "OUTPUT_FILES", "OUTPUT_FOLDERS", "INPUT_FILES", "WITNESS_FORMAT", "METAVARS"]

#: option parameters that name a file the command writes (``-`` allowed where noted)
OUTPUT_FILES = {"json_out": "--json", "save_model": "--save-model", "save_dataset": "--save-dataset",
                "witness_out": "--witness-out"}
#: option parameters that name a folder the command writes into
OUTPUT_FOLDERS = {"artifacts": "--artifacts", "out": "--out"}
#: option parameters that name a file the command reads
INPUT_FILES = {"model": "--model", "dataset": "--dataset", "result_file": "RESULT"}
#: option parameters holding a time limit in seconds
TIMEOUTS = {"timeout": "--timeout", "naive_timeout": "--naive-timeout", "job_timeout": "--job-timeout"}

WITNESS_FORMAT = "ptverify-witness/1"


class _State:
    """What ``-q``, ``-v`` and ``--json -`` set for the command being run."""

    def __init__(self):
        self.quiet = False
        self.verbose = False
        self.stdout = None          # the real standard output while ``--json -`` holds it
        self.self_contained = False


STATE = _State()


def is_tty() -> bool:
    return sys.stdout.isatty()


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def console():
    """A rich console on standard output (any progress line on standard error is cleared first)."""
    stop_progress()
    from rich.console import Console
    return Console(no_color=not is_tty(), highlight=False, soft_wrap=True)


def error(msg: str) -> None:
    """One error line on standard error, in the one style (never silenced by ``-q``).  Control
    characters (a newline or a terminal escape in a file name or a key) are shown escaped."""
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(msg))
    print(f"ptverify: error: {text}", file=sys.stderr)


def fail_input(exc: InputError) -> None:
    """Report bad input on stderr and exit 2."""
    error(str(exc))
    raise typer.Exit(2)


def say(msg: str) -> None:
    """A line of the human summary (silenced by ``-q``)."""
    if not STATE.quiet:
        print(msg)


def check_expect(expect: Optional[str]) -> None:
    """``--expect`` must name a verdict (exit 2 otherwise)."""
    from verify.result import Status
    if expect is not None and expect not in {s.value for s in Status}:
        fail_input(InputError("--expect", f"one of {', '.join(s.value for s in Status)}", repr(expect)))


# --------------------------------------------------------------------------- output paths

def check_timeout(name: str, value) -> None:
    """A time limit: a finite number of seconds > 0 (InputError naming the option otherwise)."""
    if value is None:
        return
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= 10 ** 6):
        raise InputError(name, "a finite number of seconds > 0 and at most 10**6", str(value))


def _blocking_file(path: str) -> Optional[str]:
    """The nearest existing ancestor of ``path`` when it is not a folder (a path under a file)."""
    p = os.path.dirname(os.path.abspath(path))
    while p and not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p if p and os.path.exists(p) and not os.path.isdir(p) else None


def _name_problem(path: str) -> Optional[str]:
    if "\0" in path:
        return f"{path!r} holds a NUL character"
    if any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in path.split(os.sep)):
        return f"a name longer than 255 bytes in {path[:80]!r}..."
    return None


def _folder_problem(path: str) -> Optional[str]:
    """Why a folder cannot be created or written at ``path`` (None when it can)."""
    bad = _name_problem(path)
    if bad:
        return bad
    if os.path.exists(path) and not os.path.isdir(path):
        return f"{path!r} is an existing file, not a folder"
    blocker = _blocking_file(os.path.join(path, "x"))
    if blocker:
        return f"{path!r} lies under the file {blocker!r}"
    p = os.path.abspath(path)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    if not os.access(p, os.W_OK | os.X_OK):
        return f"the folder {p!r} is not writable"
    try:                  # os.access says yes to root everywhere (/proc, read-only mounts): probe
        import tempfile
        os.rmdir(tempfile.mkdtemp(prefix=".ptverify-probe-", dir=p))
    except OSError as exc:
        return f"the folder {p!r} is not writable ({exc.strerror or exc})"
    return None


def _file_problem(path: str, check_link: bool = True) -> Optional[str]:
    """Why a file cannot be written atomically at ``path`` (None when it can)."""
    if path == "" or path.endswith(os.sep):
        return f"{path!r} is not a file name"
    bad = _name_problem(path)
    if bad:
        return bad
    if os.path.isdir(path):
        return f"{path!r} is a folder"
    if os.path.exists(path) and not os.path.isfile(path):
        # the file is written next to it and renamed over it: a device (/dev/null) would be replaced
        return f"{path!r} is not a regular file (a device, pipe or socket)"
    blocker = _blocking_file(path)
    if blocker:
        return f"{path!r} lies under the file {blocker!r}"
    if check_link and os.path.islink(path):
        return _LINK_PROBLEM.format(path)
    return _folder_problem(os.path.dirname(os.path.abspath(path)))


#: a file is written by renaming a new file over its path: a symbolic link there would be replaced
_LINK_PROBLEM = "{!r} is a symbolic link (give the file it points to)"


def _same(a: str, b: str) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_output_paths(params: dict) -> None:
    """Refuse (InputError naming the option) every output path of a command that could not be
    written, or that would overwrite one of its inputs or another output, before anything runs."""
    inputs = [(INPUT_FILES[k], v) for k, v in params.items() if k in INPUT_FILES and isinstance(v, str)]
    seen: list = []
    for key, name in OUTPUT_FILES.items():
        path = params.get(key)
        if not isinstance(path, str):
            continue
        if path == "-" and key in ("json_out", "witness_out"):
            if any(p == "-" for _, p in seen):
                raise InputError(name, "one option only writing to standard output ('-')", "two")
            seen.append((name, path))
            continue
        problem = _file_problem(path, check_link=False)
        folders = [(OUTPUT_FOLDERS[k], v) for k, v in params.items() if k in OUTPUT_FOLDERS and isinstance(v, str)]
        if problem is None:
            for other, opath in inputs + [x for x in seen if x[1] != "-"] + folders:
                if _same(path, opath):
                    problem = f"the same {'folder' if (other, opath) in folders else 'file'} as {other} ({opath!r})"
        if problem is None and os.path.islink(path):
            problem = _LINK_PROBLEM.format(path)
        if problem:
            raise InputError(name, "a file path that can be written" + (" (or '-' for standard output)" if key in (
                "json_out", "witness_out") else ""), problem)
        seen.append((name, path))
    for key, name in OUTPUT_FOLDERS.items():
        path = params.get(key)
        if isinstance(path, str):
            problem = "an empty path" if path == "" else _folder_problem(path)
            if problem:
                raise InputError(name, "a folder that can be created or written", problem)


def write_json_out(path: str, obj) -> None:
    """``obj`` as JSON to ``path`` atomically, or to standard output when ``path`` is ``-``."""
    text = json.dumps(obj, indent=1, allow_nan=False)
    if path == "-":
        out = STATE.stdout or sys.stdout
        out.write(text + "\n")
        out.flush()
        return
    from constructions.model import atomic_write_text
    atomic_write_text(path, text)


def wrote(path: str, side_files=()) -> None:
    """Say which files were written (side files named)."""
    if path == "-":
        return
    side = list(side_files)
    extra = ""
    if side:
        extra = f" (and side file{'s' if len(side) > 1 else ''} {', '.join(side)})"
    say(f"wrote {path}{extra}")


def _side_files(data: dict, path: str) -> list:
    """The side files a result written at ``path`` refers to (paths beside it)."""
    out = []
    folder = os.path.dirname(path)
    for ref in (data.get("inputs") or {}).values():
        if isinstance(ref, dict) and isinstance(ref.get("file"), str):
            out.append(os.path.join(folder, ref["file"]))
    return out


# --------------------------------------------------------------------------- results

def emit(result, json_out: Optional[str], expect: Optional[str] = None, quiet: bool = False, also=None) -> None:
    """Print a one-line summary, write ``--json`` (atomically, or to standard output for ``-``;
    every input embedded with ``--self-contained``), call ``also()`` (further files), apply
    ``--expect``."""
    check_expect(expect)
    stop_progress()
    data = result.to_json() if hasattr(result, "to_json") else result
    files = write_result(result, json_out, STATE.self_contained) if json_out else []
    if not (quiet or STATE.quiet):
        _summary(data)
        if files:
            wrote(files[0], files[1:])
    if also is not None:
        also()
    if expect is not None and data["status"] != expect:
        error(f"--expect: expected status {expect!r}, got {data['status']!r}")
        raise typer.Exit(1)


def write_result(result, path: str, self_contained: bool = False) -> list:
    """Write a result (a :class:`verify.result.Result` or its JSON object) to ``path`` or, for
    ``-``, to standard output (always self-contained there: no side file can go along); returns
    the files written, the result first."""
    if not hasattr(result, "write"):
        write_json_out(path, result)
        return [] if path == "-" else [path]
    if path == "-":
        import tempfile
        with tempfile.TemporaryDirectory(prefix="ptverify-") as tmp:
            _write(result, os.path.join(tmp, "result.json"), True)
            with open(os.path.join(tmp, "result.json"), encoding="utf-8") as fh:
                write_json_out("-", json.load(fh))
        return []
    return _write(result, path, self_contained)


def _write(result, path: str, self_contained: bool) -> list:
    if "self_contained" in inspect.signature(result.write).parameters:
        files = result.write(path, self_contained=self_contained)
    else:
        result.write(path)
        files = None
    return list(files) if files else [path] + _side_files(result.to_json(), path)


def _summary(data: dict) -> None:
    info = data.get("info") or {}
    secs = sum(float(v) for v in (info.get("seconds") or {}).values())
    stage = info.get("stage") if data["status"] == "timeout" else None
    stage = f", stage '{stage}'" if stage and stage not in (info.get("method") or "") else ""
    print(f"{data['claim']}: {data['status']}  ({info.get('method') or '-'}{stage}; {secs:.2f} s)")
    if data.get("statement"):
        print(f"  {data['statement']}")
    if info.get("message"):
        print(f"  {info['message']}")
    checks = info.get("checks") or {}
    if checks:
        print("  checks: " + ", ".join(f"{k}={v}" for k, v in checks.items()))


def write_witness(result, path: str, model_path: str = "", dataset_path: str = "") -> bool:
    """Write the memorizing prompt of a "memorized" result as a ``ptverify-witness/1`` file;
    False (nothing written) for any other verdict."""
    from fractions import Fraction
    data = result.to_json() if hasattr(result, "to_json") else result
    cert = data.get("certificate") or {}
    if data.get("status") != "memorized" or cert.get("kind") not in ("prompt-witness", "real-prompt-witness"):
        return False
    prompt = cert["body"]["prompt"]
    inputs = data.get("inputs") or {}
    obj = {"format": WITNESS_FORMAT, "claim": data.get("claim"), "question": data.get("question"),
           "length": len(prompt), "d": len(prompt[0]) if prompt else 0,
           "prompt": prompt, "prompt_float": [[float(Fraction(v)) for v in row] for row in prompt],
           "model": {"path": model_path, "sha256": (inputs.get("model") or {}).get("sha256")},
           "dataset": {"path": dataset_path, "sha256": (inputs.get("dataset") or {}).get("sha256")},
           "replayed": bool((data.get("info") or {}).get("checks", {}).get("witness_replayed", True))}
    write_json_out(path, obj)
    return True


# --------------------------------------------------------------------------- progress

class TerminalProgress:
    """A :class:`verify.progress.Progress` drawing one transient status line on standard error
    (stage, step "head i of h", elapsed seconds); with ``verbose``, log lines above it."""

    def __init__(self, live: bool, verbose: bool):
        self.live, self.verbose = live, verbose
        self._stage, self._step = "", ""
        self.prefix = ""            # an outer step ("claim 2 of 9: L1"), shown before the stage
        self._bar = self._task = None
        self._con = None

    def start(self) -> None:
        import time

        from rich.console import Console
        self._t0 = time.perf_counter()
        self._con = Console(stderr=True, highlight=False, soft_wrap=True)
        if not self.live:
            return
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
        self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                             console=self._con, transient=True, redirect_stdout=False, redirect_stderr=False)
        self._bar.start()
        self._task = self._bar.add_task("starting", total=None)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _show(self) -> None:
        if self._bar is None and self.verbose and self._con is not None and self._step == "":
            import time
            text = " > ".join(x for x in (self.prefix, self._stage) if x)
            if text:       # no live line (standard error is not a terminal): stages as log lines
                self._con.print(f"[{time.perf_counter() - self._t0:7.2f} s] {text}", markup=False, highlight=False)
        if self._bar is not None:
            text = " > ".join(x for x in (self.prefix, self._stage) if x) + (f" - {self._step}" if self._step else "")
            self._bar.update(self._task, description=text.replace("[", "\\["))

    def outer(self, text: str) -> None:
        """Start an outer step (a claim of ``reproduce``): it prefixes every stage until the next."""
        self.prefix, self._stage, self._step = text, "", ""
        self._show()

    def stage(self, name: str) -> None:
        if name != self._stage:
            self._stage, self._step = name, ""
            self._show()

    def step(self, i: int, n: int, what: str) -> None:
        self._step = f"{what} {i} of {n}"
        self._show()

    def log(self, line: str) -> None:
        if self.verbose and self._con is not None:
            self._con.print(line, markup=False, highlight=False)


_ACTIVE: list = []


def stop_progress() -> None:
    for rep in _ACTIVE:
        rep.stop()


@contextlib.contextmanager
def _reporting():
    """Install the command's progress reporter (live on a terminal unless ``-q``)."""
    from verify import progress
    live = stderr_is_tty() and not STATE.quiet
    if not (live or STATE.verbose):
        yield
        return
    rep = TerminalProgress(live, STATE.verbose and not STATE.quiet)
    rep.start()
    _ACTIVE.append(rep)
    try:
        with progress.use(rep):
            yield
    finally:
        rep.stop()
        _ACTIVE.remove(rep)


# --------------------------------------------------------------------------- plumbing

_QUIET = inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                           default=typer.Option(False, "-q", "--quiet",
                                                help="print nothing but errors (no progress, no summary)"))
_SELF_CONTAINED = inspect.Parameter(
    "self_contained", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
    default=typer.Option(False, "--self-contained", help="embed every input in the --json result file "
                                                          "(no side files; the one file can be moved alone)"))
_VERBOSE = inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                             default=typer.Option(False, "-v", "--verbose",
                                                  help="also print the computation's log lines (standard error)"))


#: metavars shown by --help for the common path and time options
METAVARS = {"json_out": "FILE|-", "witness_out": "FILE|-", "save_model": "FILE", "save_dataset": "FILE",
            "model": "FILE", "dataset": "FILE", "artifacts": "FOLDER", "out": "FOLDER", "timeout": "SECONDS",
            "naive_timeout": "SECONDS", "job_timeout": "SECONDS", "expect": "VERDICT", "prompt_length": "K|any", "tolerance": "NUMBER",
            "prompt_norm": "NUMBER"}


#: the metavar of any other option, by its type (click would print ``<int>``-style names otherwise)
TYPE_METAVARS = {"int": "INTEGER", "float": "NUMBER", "str": "TEXT"}


def _type_name(annotation) -> str:
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    name = name.replace("typing.", "")
    if name.startswith("Optional[") and name.endswith("]"):
        name = name[len("Optional["):-1]
    return name


def _metavars(sig: inspect.Signature) -> None:
    for name, param in sig.parameters.items():
        info = param.default
        if not (hasattr(info, "metavar") and getattr(info, "param_decls", None) is not None and info.metavar is None):
            continue
        if name in METAVARS:
            info.metavar = METAVARS[name]
        elif _type_name(param.annotation) in TYPE_METAVARS:
            info.metavar = TYPE_METAVARS[_type_name(param.annotation)]


def _artifacts_written(folder) -> None:
    if isinstance(folder, str) and os.path.isdir(folder):
        n = sum(1 for f in os.listdir(folder) if f.endswith(".smt2"))
        say(f"wrote {n} SMT-LIB2 file{'s' if n != 1 else ''} in {folder}")


def _wrap(fn):
    sig = inspect.signature(fn)
    if "quiet" in sig.parameters or getattr(fn, "_plumbed", False):
        return fn
    _metavars(sig)
    adds_sc = "json_out" in sig.parameters and "self_contained" not in sig.parameters

    @functools.wraps(fn)
    def run(*args, **kwargs):
        quiet, verbose = kwargs.pop("quiet", False), kwargs.pop("verbose", False)
        STATE.quiet, STATE.verbose, STATE.stdout = quiet, verbose and not quiet, None
        STATE.self_contained = bool(kwargs.pop("self_contained", False) if adds_sc else kwargs.get("self_contained"))
        try:
            if quiet and verbose:
                raise InputError("-q/-v", "at most one of --quiet and --verbose", "both")
            if STATE.self_contained and "json_out" in kwargs and not kwargs.get("json_out"):
                raise InputError("--self-contained", "--json FILE as well (it says how the result file is written)",
                                 "no --json")
            check_output_paths(kwargs)
            for key, name in TIMEOUTS.items():
                check_timeout(name, kwargs.get(key))
        except InputError as exc:
            fail_input(exc)
        with contextlib.ExitStack() as stack:
            if "-" in (kwargs.get("json_out"), kwargs.get("witness_out")):
                STATE.stdout = sys.stdout
                stack.enter_context(contextlib.redirect_stdout(sys.stderr))
            if quiet:
                devnull = stack.enter_context(open(os.devnull, "w"))
                stack.enter_context(contextlib.redirect_stdout(devnull))
            stack.enter_context(_reporting())
            if kwargs.get("artifacts"):
                stack.callback(_artifacts_written, kwargs["artifacts"])
            return fn(*args, **kwargs)

    run.__signature__ = sig.replace(parameters=list(sig.parameters.values()) + ([_SELF_CONTAINED] if adds_sc else [])
                                    + [_QUIET, _VERBOSE])
    run._plumbed = True
    return run


def plumb(apps: dict) -> None:
    """Give every registered command ``-q``/``-v``, the output-path and ``--timeout`` checks,
    ``--json -`` and the progress reporter (see the module docstring); command groups added by
    feature modules get the same plain help as the rest."""
    seen: set = set()

    def walk(typer_app) -> None:
        if id(typer_app) in seen:
            return
        seen.add(id(typer_app))
        typer_app.rich_markup_mode = None
        for info in typer_app.registered_commands:
            info.callback = _wrap(info.callback)
        for group in typer_app.registered_groups:
            if group.typer_instance is not None:
                walk(group.typer_instance)
    for typer_app in apps.values():
        walk(typer_app)
