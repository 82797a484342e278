"""The ``ptverify`` command line (INTERFACE.md).

Exit codes: 0 a verdict was produced, 1 an ``--expect`` was not met or a replay failed, 2 bad
input or usage (message on stderr naming the field).  Feature modules add their commands through
``register(apps)``; see :data:`COMMAND_MODULES`.
"""
from __future__ import annotations

import importlib
import json
import sys
from typing import Optional

import typer

from constructions.model import InputError

__all__ = ["app", "main", "emit", "fail_input"]

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="ptverify: solver checks, certificates and measurements for the theory of prompt tuning.")
prove_app = typer.Typer(no_args_is_help=True, help="Prove a limitation of prompt tuning on a constructed instance.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (timings are reported, never asserted).")
experiment_app = typer.Typer(no_args_is_help=True, help="Empirical corroboration in torch.")
app.add_typer(prove_app, name="prove")
app.add_typer(bench_app, name="bench")
app.add_typer(experiment_app, name="experiment")

APPS = {"root": app, "prove": prove_app, "bench": bench_app, "experiment": experiment_app}

#: modules whose ``register(apps)`` adds commands
COMMAND_MODULES = ["verify.cli.core", "verify.experiments.bench", "verify.provers.universality", "verify.provers.bounds", "verify.provers.multilayer"]


def is_tty() -> bool:
    return sys.stdout.isatty()


def console():
    from rich.console import Console
    return Console(no_color=not is_tty(), highlight=False, soft_wrap=True)


def fail_input(exc: InputError) -> None:
    """Report bad input on stderr and exit 2."""
    print(f"ptverify: error: {exc}", file=sys.stderr)
    raise typer.Exit(2)


def emit(result, json_out: Optional[str], expect: Optional[str] = None, quiet: bool = False) -> None:
    """Print a one-line summary, write ``--json`` atomically, apply ``--expect``."""
    data = result.to_json() if hasattr(result, "to_json") else result
    if json_out:
        if hasattr(result, "write"):
            result.write(json_out)
        else:
            from constructions.model import atomic_write_text
            atomic_write_text(json_out, json.dumps(data, indent=1))
    if not quiet:
        secs = sum(float(v) for v in data.get("seconds", {}).values())
        print(f"{data['claim']}: {data['status']}  ({data.get('method', '')}; {secs:.2f} s)")
        if data.get("message"):
            print(f"  {data['message']}")
        checks = data.get("checks") or {}
        if checks:
            print("  checks: " + ", ".join(f"{k}={v}" for k, v in checks.items()))
        if json_out:
            print(f"  result written to {json_out}")
    if expect is not None and data["status"] != expect:
        print(f"ptverify: expected status {expect!r}, got {data['status']!r}", file=sys.stderr)
        raise typer.Exit(1)


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
    code = run_reproduce(out, quick=quick, only=only.split(",") if only else None, seed=seed)
    raise typer.Exit(code)


def _load_command_modules() -> None:
    for name in COMMAND_MODULES:
        mod = importlib.import_module(name)
        reg = getattr(mod, "register", None)
        if reg is not None:
            reg(APPS)


_load_command_modules()


def main(argv=None) -> None:
    """Console entry point; bad input anywhere maps to exit code 2."""
    try:
        app(args=argv, prog_name="ptverify", standalone_mode=True)
    except InputError as exc:
        print(f"ptverify: error: {exc}", file=sys.stderr)
        sys.exit(2)
