"""The ``ptverify`` command line (docs/cli.md).

Exit codes: 0 a verdict was produced, 1 an ``--expect`` was not met or a replay failed, 2 bad
input or usage (one line ``ptverify: error: ...`` on stderr naming the field or option), 3 an
internal error (one line naming the file that holds the traceback).  Feature modules add their
commands through ``register(apps)``; see :data:`COMMAND_MODULES`.  Every command then gets the
common options and output checks of :func:`verify.cli.output.plumb`.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Optional


def _interrupted_while_starting() -> None:
    """Ctrl-C during the imports below (numpy, torch, z3: about a second) is exit 130 with one
    line, as it is once a command runs, never an import traceback."""
    print("ptverify: error: interrupted", file=sys.stderr)
    raise SystemExit(130)


try:
    import typer

    from constructions.model import InputError

    from .output import STATE, console, emit, error, fail_input, is_tty, plumb, say
except KeyboardInterrupt:
    _interrupted_while_starting()

__all__ = ["app", "main", "emit", "fail_input", "console", "is_tty", "version_text", "APPS", "COMMAND_MODULES"]

#: -h everywhere, and plain help text (types as <int>, <str>; flags take no value)
_SETTINGS = dict(context_settings={"help_option_names": ["-h", "--help"]}, rich_markup_mode=None)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="ptverify: solver checks, certificates and measurements for the theory of prompt tuning.",
                  **_SETTINGS)
prove_app = typer.Typer(no_args_is_help=True, help="Prove a limitation of prompt tuning on a constructed instance.",
                        **_SETTINGS)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (timings are reported, never asserted).", **_SETTINGS)
experiment_app = typer.Typer(no_args_is_help=True, help="Empirical corroboration in torch.", **_SETTINGS)
app.add_typer(prove_app, name="prove")
app.add_typer(bench_app, name="bench")
app.add_typer(experiment_app, name="experiment")

APPS = {"root": app, "prove": prove_app, "bench": bench_app, "experiment": experiment_app}

#: modules whose ``register(apps)`` adds commands
COMMAND_MODULES = ["verify.cli.core", "verify.cli.bench", "verify.cli.universality", "verify.cli.bounds", "verify.cli.experiment", "verify.cli.multilayer", "verify.cli.batch", "verify.cli.importer", "verify.cli.audit", "verify.cli.reach"]


def version_text() -> str:
    """``ptverify X.Y.Z`` and the versions of the packages its verdicts depend on."""
    import platform
    from importlib import metadata

    from verify import __version__
    parts = []
    for label, dist in (("z3", "z3-solver"), ("numpy", "numpy"), ("torch", "torch")):
        try:
            parts.append(f"{label} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{label} not installed")
    return f"ptverify {__version__} ({', '.join(parts)}, python {platform.python_version()})"


def _version(value: bool) -> None:
    if value:
        print(version_text())
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                       help="print the version of ptverify, z3, numpy and torch, and exit")):
    """ptverify: solver checks, certificates and measurements for the theory of prompt tuning."""


@app.command()
def replay(result_file: str = typer.Argument(..., metavar="RESULT.json", help="a ptverify-result/2 file")):
    """Re-verify the certificate or witness in a result file with exact arithmetic (no solver).

    Exit 0 only if it holds."""
    from verify.checker import check_file
    from verify.result import load_result
    try:
        _side_files_present(load_result(result_file), result_file)
    except InputError as exc:
        fail_input(exc)
    ok, msg = check_file(result_file)
    print(("replay: OK  " if ok else "replay: FAILED  ") + msg)
    raise typer.Exit(0 if ok else 1)


def _side_files_present(obj: dict, path: str) -> None:
    """Every side file a result refers to sits next to it (bad input, exit 2, when one is missing)."""
    inputs = obj.get("inputs")
    folder = os.path.dirname(os.path.abspath(path))
    for key, ref in (inputs.items() if isinstance(inputs, dict) else ()):
        name = ref.get("file") if isinstance(ref, dict) else None
        if isinstance(name, str) and not os.path.isfile(os.path.join(folder, name)):
            raise InputError(f"inputs.{key}.file", f"the side file {name!r} next to the result",
                             f"no file {name!r} in {folder}")


@app.command()
def reproduce(out: str = typer.Option("ptverify-out", "--out", help="output folder for report.md, result JSON and plots"),
              quick: bool = typer.Option(False, "--quick", help="small instances (a few minutes in all)"),
              only: Optional[str] = typer.Option(None, "--only", help="comma-separated claim ids to run"),
              seed: int = typer.Option(0, "--seed", help="base seed")):
    """Run every registered claim; write OUT/report.md and one result JSON per check.

    Exit 1 if any claim did not reach its expected verdict."""
    from verify.claims.reproduce import run_reproduce
    ids = None
    if only is not None:
        ids = [x.strip() for x in only.split(",")]
        if not all(ids):
            fail_input(InputError("--only", "comma-separated claim ids such as L1,L3", repr(only)))
    try:
        _check_reproduce(ids, seed)
    except InputError as exc:
        fail_input(exc)
    code, rows = run_reproduce(out, quick=quick, only=ids, seed=seed, progress=_claim_started)
    _print_reproduce_table(console(), rows, quick, out)
    raise typer.Exit(code)


def _check_reproduce(ids, seed: int) -> None:
    from verify.claims import all_claims
    from verify.cli.validate import seed as check_seed
    check_seed(seed)
    known = [c.id for c in all_claims()]
    unknown = [i for i in ids or () if i not in known]
    if unknown:
        raise InputError("--only", f"claim ids among {', '.join(known)}", ", ".join(map(repr, unknown))[:80])


def _claim_started(line: str) -> None:
    """``reproduce``'s line per claim ("claim i of n: ID: title ..."): the outer step of the
    progress line on a terminal (a log line with ``-v`` when standard error is not a terminal)."""
    from verify.progress import current
    rep = current()
    if hasattr(rep, "outer"):
        rep.outer(": ".join(line.split(": ")[:2]))
    else:
        rep.log(line)


def _print_reproduce_table(con, rows: list, quick: bool, out: str) -> None:
    import os

    from rich.table import Table
    table = Table(title=f"ptverify reproduce ({'quick' if quick else 'default'})")
    for col in ("claim", "instance", "expected", "verdict", "seconds"):
        table.add_column(col)
    for claim, params, res, secs, _artifact, ok in rows:
        table.add_row(claim.id, " ".join(f"{k}={v}" for k, v in params.items()), claim.expected.value,
                      str(res.status.value if hasattr(res.status, "value") else res.status)
                      + ("" if ok else " (UNEXPECTED)"), f"{secs:.2f}")
    con.print(table)
    con.print(f"wrote {os.path.join(out, 'report.md')} (and one result file per claim in {out})")
    failures = sum(1 for row in rows if not row[5])
    if failures:
        error(f"{failures} claim(s) did not reach the expected verdict")


def _load_command_modules() -> None:
    for name in COMMAND_MODULES:
        mod = importlib.import_module(name)
        reg = getattr(mod, "register", None)
        if reg is not None:
            reg(APPS)
    plumb(APPS)


try:
    _load_command_modules()
except KeyboardInterrupt:
    _interrupted_while_starting()


def _usage_error(exc: Exception) -> int:
    """A usage error (unknown option, missing argument, bad value): one line and exit 2; a command
    group called without a command prints its help."""
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        print(ctx.get_help())
        return 0 if ctx.parent is None else 2
    fmt = getattr(exc, "format_message", None)
    msg = " ".join((fmt() if fmt else str(exc)).split())
    where = ctx.command_path if ctx is not None else "ptverify"
    error(f"{msg} (try '{where} --help')")
    code = getattr(exc, "exit_code", 2)
    return 2 if code == 1 and type(exc).__name__ != "ClickException" else code


def main(argv=None) -> None:
    """Console entry point.  Bad input anywhere is exit 2 with the field named; an internal error
    is exit 3 with one line naming the file that holds the traceback; never a raw traceback."""
    try:        # a file name the terminal's encoding cannot show is escaped, as on standard error
        sys.stdout.reconfigure(errors="backslashreplace")
    except (AttributeError, ValueError, OSError):
        pass
    guard = _StdoutGuard.install()
    try:
        rc = app(args=argv, prog_name="ptverify", standalone_mode=False)
        if rc == 130:           # click turns Ctrl-C inside a command into exit code 130, silently
            error("interrupted")
    except StdoutClosed:
        sys.exit(_stdout_closed())
    except InputError as exc:
        error(str(exc))
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        error("aborted")
        sys.exit(130)
    except typer.TyperException as exc:
        sys.exit(_usage_error(exc))
    except KeyboardInterrupt:
        error("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the one place internal errors are turned into exit 3
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):    # click's own exceptions
            sys.exit(_usage_error(exc))
        sys.exit(_internal_error(exc))
    finally:
        guard.uninstall()
    try:
        sys.stdout.flush()
    except (BrokenPipeError, StdoutClosed):
        sys.exit(_stdout_closed())
    sys.exit(rc if isinstance(rc, int) else 0)


class StdoutClosed(Exception):
    """Standard output was closed by its reader (``ptverify ... | head -1``).  Not an OSError, so
    that click does not turn it into exit 1, the code for an unmet ``--expect``."""


class _StdoutGuard:
    """Wraps ``sys.stdout`` so that a broken pipe raises :class:`StdoutClosed`."""

    def __init__(self, inner):
        self._inner = inner

    @classmethod
    def install(cls) -> "_StdoutGuard":
        guard = cls(sys.stdout)
        sys.stdout = guard
        return guard

    def uninstall(self) -> None:
        if sys.stdout is self:
            sys.stdout = self._inner

    def write(self, text):
        try:
            return self._inner.write(text)
        except BrokenPipeError:
            raise StdoutClosed() from None

    def flush(self):
        try:
            return self._inner.flush()
        except BrokenPipeError:
            raise StdoutClosed() from None

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _stdout_closed() -> int:
    """Exit quietly as a program killed by SIGPIPE would (128 + 13), never 1; stdout goes to
    /dev/null so that the interpreter's final flush does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return 141


def _internal_error(exc: BaseException) -> int:
    import tempfile
    import traceback
    try:
        fd, path = tempfile.mkstemp(prefix="ptverify-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            fh.write(" ".join(sys.argv) + "\n\n" + traceback.format_exc())
        where = f"traceback written to {path}"
    except OSError:
        where = "the traceback could not be written"
    error(f"internal error ({type(exc).__name__}: {' '.join(str(exc)[:200].split())}); {where}. "
          "Please report it with that file.")
    return 3
