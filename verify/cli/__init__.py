"""The ``ptverify`` command line (INTERFACE.md).

Exit codes: 0 a verdict was produced, 1 an ``--expect`` was not met or a replay failed, 2 bad
input or usage (message on stderr naming the field).  Feature modules add their commands through
``register(apps)``; see :data:`COMMAND_MODULES`.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Optional

import typer

from constructions.model import InputError

from .output import console, emit, fail_input, is_tty

__all__ = ["app", "main", "emit", "fail_input"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="ptverify: solver checks, certificates and measurements for the theory of prompt tuning.")
prove_app = typer.Typer(no_args_is_help=True, help="Prove a limitation of prompt tuning on a constructed instance.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (timings are reported, never asserted).")
experiment_app = typer.Typer(no_args_is_help=True, help="Empirical corroboration in torch.")
app.add_typer(prove_app, name="prove")
app.add_typer(bench_app, name="bench")
app.add_typer(experiment_app, name="experiment")

APPS = {"root": app, "prove": prove_app, "bench": bench_app, "experiment": experiment_app}

#: modules whose ``register(apps)`` adds commands
COMMAND_MODULES = ["verify.cli.core", "verify.cli.bench", "verify.cli.universality", "verify.cli.bounds", "verify.cli.experiment", "verify.cli.multilayer"]


@app.command()
def replay(result_file: str = typer.Argument(..., metavar="RESULT.json", help="a ptverify-result/2 file")):
    """Re-verify the certificate or witness in a result file with exact arithmetic (no solver).

    Exit 0 only if it holds."""
    from verify.checker import check_file
    from verify.result import load_result
    try:
        load_result(result_file)
    except InputError as exc:
        fail_input(exc)
    ok, msg = check_file(result_file)
    print(("replay: OK  " if ok else "replay: FAILED  ") + msg)
    raise typer.Exit(0 if ok else 1)


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
    con = console()
    code, rows = run_reproduce(out, quick=quick, only=ids, seed=seed,
                               progress=(lambda msg: con.print(msg)) if is_tty() else None)
    _print_reproduce_table(con, rows, quick, out)
    raise typer.Exit(code)


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
    con.print(f"report: {os.path.join(out, 'report.md')}")
    failures = sum(1 for row in rows if not row[5])
    if failures:
        con.print(f"{failures} claim(s) did not reach the expected verdict")


def _load_command_modules() -> None:
    for name in COMMAND_MODULES:
        mod = importlib.import_module(name)
        reg = getattr(mod, "register", None)
        if reg is not None:
            reg(APPS)


_load_command_modules()


def main(argv=None) -> None:
    """Console entry point.  Bad input anywhere is exit 2 with the field named; an internal error
    is exit 3 with one line naming the file that holds the traceback; never a raw traceback."""
    try:
        rc = app(args=argv, prog_name="ptverify", standalone_mode=False)
    except InputError as exc:
        print(f"ptverify: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("ptverify: aborted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            print(f"ptverify: error: {exc}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        print("ptverify: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the one place internal errors are turned into exit 3
        sys.exit(_internal_error(exc))
    sys.exit(rc if isinstance(rc, int) else 0)


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
    print(f"ptverify: internal error ({type(exc).__name__}: {str(exc)[:200]}); {where}. "
          "Please report it with that file.", file=sys.stderr)
    return 3
