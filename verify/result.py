"""The one result type every producer returns, serialised as ``ptverify-result/2``.

The envelope (question, inputs, status, one certificate ``{format, kind, body}``) is defined by
the trusted checker (``verify/checker/envelope.py``); this module only writes it.  The statement is
never written by hand: it is derived from the question and the status by the checker's own
function, so the two cannot disagree.
"""
from __future__ import annotations

import enum
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from constructions.model import InputError, atomic_write_text
from verify.checker import CERTIFICATE_FORMAT, RESULT_FORMAT, canonical_sha256, statement

__all__ = ["Status", "Result", "RESULT_FORMAT", "DECIDED", "UNDECIDED", "NEGATIVE", "load_result",
           "solver_info", "embed", "side_file", "certificate", "memorization_question"]


class Status(str, enum.Enum):
    """Closed vocabulary of verdicts."""

    PROVED = "proved"          # no prompt memorizes; certificate re-verified
    MEMORIZED = "memorized"    # a witness that replays exactly or within a rigorous bound
    VERIFIED = "verified"      # a numeric claim (bound, error) checked rigorously
    REFUTED = "refuted"        # a numeric claim checked and found false
    UNKNOWN = "unknown"        # a feasible relaxation and no witness, or a limit reached
    TIMEOUT = "timeout"        # ran out of time; ``info.stage`` names the stage
    ERROR = "error"            # bad input or a violated assumption, named in ``message``

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


#: statuses that settle a question one way or the other (each needs a certificate)
DECIDED = frozenset({Status.PROVED, Status.MEMORIZED, Status.VERIFIED, Status.REFUTED})
#: statuses that never claim anything
UNDECIDED = frozenset({Status.UNKNOWN, Status.TIMEOUT, Status.ERROR})
NEGATIVE = UNDECIDED


def embed(obj: Any) -> dict:
    """An input reference that embeds a JSON object, with its canonical sha256."""
    return {"sha256": canonical_sha256(obj), "embedded": obj}


def side_file(path: str) -> dict:
    """An input reference to a file that will sit next to the result (by its base name)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return {"sha256": h.hexdigest(), "file": os.path.basename(path)}


def certificate(kind: str, body: Any) -> dict:
    return {"format": CERTIFICATE_FORMAT, "kind": kind, "body": body}


def memorization_question(prompt_length="any", tolerance="0", prompt_norm=None) -> dict:
    q = {"kind": "memorization", "prompt_length": prompt_length, "tolerance": str(tolerance)}
    if prompt_norm is not None:
        q["prompt_norm"] = str(prompt_norm)
    return q


@dataclass
class Result:
    claim: str
    status: Status
    question: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    certificate: Optional[dict] = None
    reported: dict = field(default_factory=dict)
    method: str = ""
    message: str = ""
    checks: dict = field(default_factory=dict)
    solver: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)      # written under ``info``; never read by the checker

    @property
    def statement(self) -> str:
        if not self.question:
            return ""
        return statement(self.question, Status(self.status).value)

    def to_json(self) -> dict:
        info = {"method": self.method, "message": self.message, "checks": self.checks, "solver": self.solver,
                "seconds": {k: round(float(v), 4) for k, v in self.seconds.items()}}
        info.update(self.extra)
        out = {"format": RESULT_FORMAT, "claim": self.claim, "question": self.question,
               "status": Status(self.status).value, "statement": self.statement, "inputs": self.inputs,
               "certificate": self.certificate if Status(self.status) in DECIDED else None}
        if self.reported and Status(self.status) in DECIDED:
            out["reported"] = self.reported
        out["info"] = info
        return out

    def write(self, path: str) -> None:
        """Write atomically (never half-written)."""
        atomic_write_text(path, json.dumps(self.to_json(), indent=1, allow_nan=False))

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))


def load_result(path: str) -> dict:
    if not os.path.exists(path):
        raise InputError("RESULT", "an existing result file", f"no file {path!r}")
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise InputError("RESULT", f"a {RESULT_FORMAT} JSON file", f"unparseable JSON ({str(exc)[:100]})") from None
    if not isinstance(obj, dict) or obj.get("format") != RESULT_FORMAT:
        raise InputError("format", f"\"{RESULT_FORMAT}\"",
                         repr(obj.get("format") if isinstance(obj, dict) else type(obj).__name__)[:60])
    return obj


def solver_info() -> dict:
    import z3
    return {"name": "z3", "version": z3.get_version_string()}
