"""The CLI's one output module: the console, the one-line verdict summary, ``--json`` writing,
``--expect``, and the bad-input exit."""
from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from constructions.model import InputError

__all__ = ["is_tty", "console", "fail_input", "emit", "check_expect"]


def is_tty() -> bool:
    return sys.stdout.isatty()


def console():
    from rich.console import Console
    return Console(no_color=not is_tty(), highlight=False, soft_wrap=True)


def fail_input(exc: InputError) -> None:
    """Report bad input on stderr and exit 2."""
    print(f"ptverify: error: {exc}", file=sys.stderr)
    raise typer.Exit(2)


def check_expect(expect: Optional[str]) -> None:
    """``--expect`` must name a verdict (exit 2 otherwise)."""
    from verify.result import Status
    if expect is not None and expect not in {s.value for s in Status}:
        fail_input(InputError("--expect", f"one of {', '.join(s.value for s in Status)}", repr(expect)))


def emit(result, json_out: Optional[str], expect: Optional[str] = None, quiet: bool = False) -> None:
    """Print a one-line summary, write ``--json`` atomically, apply ``--expect``."""
    check_expect(expect)
    data = result.to_json() if hasattr(result, "to_json") else result
    if json_out:
        if hasattr(result, "write"):
            result.write(json_out)
        else:
            from constructions.model import atomic_write_text
            atomic_write_text(json_out, json.dumps(data, indent=1))
    if not quiet:
        info = data.get("info") or {}
        secs = sum(float(v) for v in (info.get("seconds") or {}).values())
        print(f"{data['claim']}: {data['status']}  ({info.get('method') or '-'}; {secs:.2f} s)")
        if data.get("statement"):
            print(f"  {data['statement']}")
        if info.get("message"):
            print(f"  {info['message']}")
        checks = info.get("checks") or {}
        if checks:
            print("  checks: " + ", ".join(f"{k}={v}" for k, v in checks.items()))
        if json_out:
            print(f"  result written to {json_out}")
    if expect is not None and data["status"] != expect:
        print(f"ptverify: expected status {expect!r}, got {data['status']!r}", file=sys.stderr)
        raise typer.Exit(1)
