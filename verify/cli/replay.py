"""``ptverify replay``: dispatch a result file to the checker of its certificate or witness kind.

Every checker module exposes ``REPLAYERS = {kind: function(result_dict, base_dir) -> (ok, msg)}``.
"""
from __future__ import annotations

import importlib
import os

from verify.result import load_result

__all__ = ["replay_file", "replay_dict", "REPLAY_MODULES"]

REPLAY_MODULES = ["verify.checker.limitation", "verify.provers.universality", "verify.provers.bounds", "verify.provers.multilayer"]


def _replayers() -> dict:
    out = {}
    for name in REPLAY_MODULES:
        out.update(getattr(importlib.import_module(name), "REPLAYERS", {}))
    return out


def replay_dict(res: dict, base_dir: str = ".") -> tuple[bool, str]:
    """Re-verify a result's certificate (status proved/verified) or witness (memorized)."""
    status = res.get("status")
    obj = res.get("certificate") if status in ("proved", "verified", "refuted") else res.get("witness")
    if status in ("unknown", "error"):
        return False, f"status {status!r} claims nothing; there is nothing to replay"
    if not isinstance(obj, dict) or "kind" not in obj:
        return False, f"status {status!r} without a certificate or witness: not replayable"
    fn = _replayers().get(obj["kind"])
    if fn is None:
        return False, f"unknown certificate kind {obj['kind']!r}"
    try:
        return fn(res, base_dir)
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, AssertionError) as exc:
        return False, f"malformed certificate: {type(exc).__name__}: {exc}"


def replay_file(path: str) -> tuple[bool, str]:
    res = load_result(path)
    return replay_dict(res, os.path.dirname(os.path.abspath(path)))
