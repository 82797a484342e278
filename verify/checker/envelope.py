"""Checking one ``ptverify-result/2`` file: the envelope, the status-kind table, the inputs, then
the certificate kind's own check, then every reported number re-derived.

The envelope::

    {"format": "ptverify-result/2",
     "claim": "L1",                                   # a label, not checked
     "question": {"kind": "memorization", ...},       # what is asked (questions.py)
     "status": "proved",
     "statement": "...",                              # must equal the derived statement
     "inputs": {"model": {"sha256": ..., "embedded": {...}} | {"sha256": ..., "file": NAME}, ...},
     "certificate": {"format": "ptverify-certificate/1", "kind": ..., "body": {...}} | null,
     "reported": {...},                               # optional: numbers the checker re-derives
     "info": {...}}                                   # optional: method, timings, log (never read)
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from .inputs import load_input, load_json_strict
from .numbers import Reject, fields, one_blas_thread, rat
from .questions import DECIDED_STATUSES, QUESTIONS, STATUSES, parse_question

__all__ = ["RESULT_FORMAT", "CERTIFICATE_FORMAT", "STATUS_KINDS", "Context", "Outcome", "check_result",
           "check_file", "load_result_json"]

RESULT_FORMAT = "ptverify-result/2"
CERTIFICATE_FORMAT = "ptverify-certificate/1"

#: the one table: certificate kind -> (question kind it answers, statuses it can establish, checker)
STATUS_KINDS: dict[str, tuple[str, frozenset, str]] = {
    "limitation-farkas":      ("memorization", frozenset({"proved"}), "limitation:check"),
    "prompt-witness":         ("memorization", frozenset({"memorized"}), "witness:check"),
    "multilayer-injectivity": ("memorization", frozenset({"proved"}), "multilayer:check"),
    "universality-dp-bound":  ("universality", frozenset({"verified", "refuted"}), "universality:check"),
    "bounds-table":           ("bounds", frozenset({"verified"}), "bounds:check_table"),
    "lora-witness":           ("lora-memorization", frozenset({"memorized"}), "bounds:check_lora"),
    "loss-bound":             ("loss-bound", frozenset({"verified"}), "loss:check_bound"),
    "experiment-consistency": ("experiment", frozenset({"verified"}), "loss:check_experiment"),
    "limitation-real-pair":   ("memorization", frozenset({"proved"}), "real:check"),
    "real-prompt-witness":    ("memorization", frozenset({"memorized"}), "real_witness:check"),
    "reach-support":          ("reach", frozenset({"verified"}), "reach:check"),
    "limitation-real-reach":  ("memorization", frozenset({"proved"}), "real_reach:check"),
}

TOP_REQUIRED = frozenset({"format", "claim", "question", "status", "statement", "inputs", "certificate"})
TOP_OPTIONAL = frozenset({"reported", "info"})
MAX_RESULT_BYTES = 1 << 30


@dataclass
class Context:
    """What a kind's check receives: the parsed question, the status, the loaded inputs (read
    only from the result's ``inputs``), the certificate body and the result's folder."""
    question: dict
    status: str
    inputs: dict
    body: Any
    base_dir: str


@dataclass
class Outcome:
    """A passed check: a one-line account, and the numbers it derived (what ``reported`` may say)."""
    message: str
    derived: dict = field(default_factory=dict)


def _checker(spec: str) -> Callable[[Context], Outcome]:
    mod, fn = spec.split(":")
    return getattr(importlib.import_module(f"{__package__}.{mod}"), fn)


def _same(reported: Any, derived: Any) -> bool:
    """Exact equality of a reported value with the derived one: numbers by their exact value,
    lists and objects entry by entry; a boolean never stands for a number (True == 1 in Python)."""
    if isinstance(reported, bool) or isinstance(derived, bool):
        return type(reported) is type(derived) and reported == derived
    if isinstance(derived, (list, tuple)):
        return (isinstance(reported, list) and len(reported) == len(derived)
                and all(_same(a, b) for a, b in zip(reported, derived)))
    if isinstance(derived, dict):
        return (isinstance(reported, dict) and set(reported) == set(derived)
                and all(_same(reported[k], derived[k]) for k in derived))
    if isinstance(derived, (int, float, str)):
        try:
            return rat(reported, "reported") == rat(derived, "derived")
        except Reject:
            return reported == derived
    return reported == derived


def _check(res: Any, base_dir: str) -> tuple[bool, str]:
    fields(res, "result", TOP_REQUIRED, TOP_OPTIONAL)
    if res["format"] != RESULT_FORMAT:
        raise Reject(f"format: expected {RESULT_FORMAT!r}, found {res['format']!r}"[:200])
    if not isinstance(res["claim"], str):
        raise Reject("claim: expected a string")
    status = res["status"]
    if status not in STATUSES:
        raise Reject(f"status: expected one of {list(STATUSES)}, found {status!r}"[:200])
    qkind, q = parse_question(res["question"])
    derived_statement = QUESTIONS[qkind].statement(q, status)
    if res["statement"] != derived_statement:
        raise Reject(f"statement: does not match the question and status (expected {derived_statement!r})")
    if not isinstance(res["inputs"], dict):
        raise Reject("inputs: expected an object")
    want = QUESTIONS[qkind].inputs
    if set(res["inputs"]) != set(want):
        raise Reject(f"inputs: expected exactly {sorted(want)}, found {sorted(res['inputs'])}")
    if "info" in res and not isinstance(res["info"], dict):
        raise Reject("info: expected an object")
    reported = res.get("reported", {})
    if not isinstance(reported, dict):
        raise Reject("reported: expected an object")
    cert = res["certificate"]
    if status not in DECIDED_STATUSES:
        if cert is not None or reported:
            raise Reject(f"status {status!r} carries no certificate and reports nothing")
        return False, f"status {status!r} claims nothing; there is nothing to check"
    fields(cert, "certificate", {"format", "kind", "body"})
    if cert["format"] != CERTIFICATE_FORMAT:
        raise Reject(f"certificate.format: expected {CERTIFICATE_FORMAT!r}")
    kind = cert["kind"]
    if kind not in STATUS_KINDS:
        raise Reject(f"certificate.kind: unknown kind {kind!r}"[:200])
    answers, statuses, spec = STATUS_KINDS[kind]
    if answers != qkind:
        raise Reject(f"certificate.kind: {kind!r} answers {answers!r} questions, not {qkind!r}")
    if status not in statuses:
        raise Reject(f"certificate.kind: {kind!r} cannot establish status {status!r} (only {sorted(statuses)})")
    loaded: dict = {}
    if "model" in want:
        loaded["model"] = load_input("model", res["inputs"]["model"], base_dir)
    for name in sorted(want - {"model"}):
        d = loaded["model"].d if name == "dataset" and "model" in loaded else None
        loaded[name] = load_input(name, res["inputs"][name], base_dir, d)
    out = _checker(spec)(Context(q, status, loaded, cert["body"], base_dir))
    for key, val in reported.items():
        if key not in out.derived:
            raise Reject(f"reported.{key}: the checker does not derive this number for {kind!r}")
        if not _same(val, out.derived[key]):
            raise Reject(f"reported.{key}: {str(val)[:60]} differs from the derived {str(out.derived[key])[:60]}")
    return True, out.message


def check_result(res: Any, base_dir: str = ".") -> tuple[bool, str]:
    """Re-check a parsed result.  Returns (holds, one-line message); never raises."""
    try:
        with one_blas_thread():
            return _check(res, base_dir)
    except Reject as exc:
        return False, str(exc)
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, AttributeError, ArithmeticError,
            RecursionError, MemoryError, AssertionError) as exc:
        return False, f"malformed result ({type(exc).__name__}: {str(exc)[:200]})"
    except Exception as exc:  # noqa: BLE001 - e.g. an unreadable side file: never a traceback, never a pass
        return False, f"not checkable ({type(exc).__name__}: {str(exc)[:200]})"


def load_result_json(path: str) -> Any:
    """Parse a result file strictly (no NaN/Infinity, no number beyond binary64's range, no repeated
    key); raises Reject when unreadable."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        raise Reject(f"{path}: not a regular file (a pipe or a device would never end)")
    try:
        if os.path.getsize(path) > MAX_RESULT_BYTES:
            raise Reject(f"{path}: larger than {MAX_RESULT_BYTES} bytes")
        with open(path, encoding="utf-8") as fh:
            return load_json_strict(fh)
    except Reject:
        raise
    except FileNotFoundError:
        raise Reject(f"{path}: no such file") from None
    except IsADirectoryError:
        raise Reject(f"{path}: is a directory") from None
    except OSError as exc:
        raise Reject(f"{path}: unreadable ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise Reject(f"{path}: not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise Reject(f"{path}: not a JSON result ({str(exc)[:120]})") from None


def check_file(path: str) -> tuple[bool, str]:
    """Re-check a result file; side files are looked up next to it."""
    try:
        res = load_result_json(path)
    except Reject as exc:
        return False, str(exc)
    return check_result(res, os.path.dirname(os.path.abspath(path)))
