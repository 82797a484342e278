"""The one result type every checker returns, serialised as ``ptverify-result/1``."""
from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from constructions.model import atomic_write_text

__all__ = ["Status", "Result", "RESULT_FORMAT", "DECIDED", "NEGATIVE", "load_result", "solver_info"]

RESULT_FORMAT = "ptverify-result/1"


class Status(str, enum.Enum):
    """Closed vocabulary of verdicts (THEORY.md section 5)."""

    PROVED = "proved"          # no prompt memorizes; certificate re-verified
    MEMORIZED = "memorized"    # a witness that replays
    UNKNOWN = "unknown"        # relaxation feasible and no witness, timeout, or limit reached
    VERIFIED = "verified"      # a numeric claim (bound, error) checked rigorously
    REFUTED = "refuted"        # a numeric claim checked and found false
    ERROR = "error"            # bad input or a violated assumption, named in ``message``

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


#: statuses that settle a question one way or the other
DECIDED = frozenset({Status.PROVED, Status.MEMORIZED, Status.VERIFIED, Status.REFUTED})
#: statuses that never claim anything
NEGATIVE = frozenset({Status.UNKNOWN, Status.ERROR})


@dataclass
class Result:
    claim: str
    status: Status
    statement: str = ""
    method: str = ""
    prompt_length: Any = "any"
    certificate: Optional[dict] = None
    witness: Optional[dict] = None
    checks: dict = field(default_factory=dict)
    solver: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    message: str = ""
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {
            "format": RESULT_FORMAT, "claim": self.claim, "status": Status(self.status).value,
            "statement": self.statement, "method": self.method, "prompt_length": self.prompt_length,
            "certificate": self.certificate, "witness": self.witness, "checks": self.checks,
            "solver": self.solver, "inputs": self.inputs,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()}, "message": self.message,
        }
        out.update(self.extra)
        return out

    def write(self, path: str) -> None:
        """Write atomically (never half-written)."""
        atomic_write_text(path, json.dumps(self.to_json(), indent=1))

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))


def load_result(path: str) -> dict:
    from constructions.model import InputError
    if not os.path.exists(path):
        raise InputError("RESULT", "an existing result file", f"no file {path!r}")
    try:
        with open(path) as fh:
            obj = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError("RESULT", "a ptverify-result/1 JSON file", f"unparseable JSON ({exc})") from None
    if not isinstance(obj, dict) or obj.get("format") != RESULT_FORMAT:
        raise InputError("format", f"\"{RESULT_FORMAT}\"", repr(obj.get("format") if isinstance(obj, dict) else obj)[:60])
    return obj


def solver_info() -> dict:
    import z3
    return {"name": "z3", "version": z3.get_version_string()}
