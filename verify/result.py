"""The one result type every producer returns, serialised as ``ptverify-result/2``.

The envelope (question, inputs, status, one certificate ``{format, kind, body}``) is defined by
the trusted checker (``verify/checker/envelope.py``); this module only writes it.  The statement is
never written by hand: it is derived from the question and the status by the checker's own
function, so the two cannot disagree.
"""
from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from constructions.model import InputError, atomic_write, atomic_write_text, sha256_file
from verify.checker import CERTIFICATE_FORMAT, RESULT_FORMAT, canonical_sha256, statement

__all__ = ["Status", "Result", "RESULT_FORMAT", "DECIDED", "UNDECIDED", "NEGATIVE", "load_result",
           "solver_info", "embed", "side_file", "side_refs", "certificate", "memorization_question",
           "vacuity_warning", "MOVE_HINT"]

#: what to do when a side file is missing (the CLI's and the report's wording)
MOVE_HINT = "move the side files along or write with --self-contained"


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
    return {"sha256": sha256_file(path), "file": os.path.basename(path)}


def _map_refs(obj: Any, fn, under_inputs: bool = False) -> Any:
    """A copy of a result object in which each side-file reference ``{"sha256", "file"}`` of an
    ``inputs`` block (the result's own, or a nested result's in a certificate body) is replaced by
    ``fn(input name, ref)``."""
    if isinstance(obj, dict):
        if under_inputs:
            return {k: fn(k, v) if _is_side_ref(v) else _map_refs(v, fn) for k, v in obj.items()}
        return {k: _map_refs(v, fn, k == "inputs" and isinstance(v, dict)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_map_refs(v, fn) for v in obj]
    return obj


def _is_side_ref(v: Any) -> bool:
    return isinstance(v, dict) and set(v) == {"sha256", "file"} and isinstance(v["file"], str)


def side_refs(obj: Any) -> list[tuple[str, dict]]:
    """Every side-file reference ``(input name, ref)`` in a result object, nested results included."""
    found: list = []
    _map_refs(obj, lambda name, ref: found.append((name, ref)) or ref)
    return found


def _side_source(ref: dict, src: str, dest: str) -> str:
    """Where a side file is now: the producer's folder, else the result's; its hash is checked."""
    name = os.path.basename(ref["file"])
    for folder in (src, dest):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and sha256_file(path) == ref["sha256"]:
            return path
    raise FileNotFoundError(f"side file {name!r} with sha256 {ref['sha256'][:16]}... is in neither {src} nor {dest}")


def _copy_side(source: str, target: str, sha: str) -> None:
    """Copy a side file to ``target`` atomically, unless the same content is already there."""
    import shutil
    if os.path.abspath(source) == os.path.abspath(target):
        return
    if os.path.isfile(target) and not os.path.islink(target) and sha256_file(target) == sha:
        return
    atomic_write(target, os.path.splitext(target)[1], lambda tmp: shutil.copyfile(source, tmp))


def _embedded(name: str, path: str) -> dict:
    """A side file's content as an embedded input (a ``.npz`` model becomes its exact JSON object:
    binary64 weights are JSON numbers that read back to the same values)."""
    if path.endswith(".npz"):
        if name != "model":
            raise ValueError(f"inputs.{name}: only a model .npz side file can be embedded")
        from constructions.model import load_model, model_to_json
        return embed(model_to_json(load_model(path)))
    with open(path, encoding="utf-8") as fh:
        return embed(json.load(fh))


def vacuity_warning(inputs: dict, base_dir: Optional[str] = None) -> str:
    """A warning when the dataset constrains nothing (every output null): any prompt then
    "memorizes" it and no prompt can be ruled out, so the check is vacuous.  Empty otherwise."""
    ref = inputs.get("dataset") if isinstance(inputs, dict) else None
    obj = None
    if isinstance(ref, dict) and isinstance(ref.get("embedded"), dict):
        obj = ref["embedded"]
    elif _is_side_ref(ref) and ref["file"].endswith(".json"):
        path = os.path.join(base_dir or ".", os.path.basename(ref["file"]))
        try:
            with open(path, encoding="utf-8") as fh:
                obj = json.load(fh)
        except (OSError, ValueError):
            return ""
    exs = obj.get("examples") if isinstance(obj, dict) else None
    if not isinstance(exs, list) or not exs:
        return ""
    outs = [y for ex in exs if isinstance(ex, dict) for y in (ex.get("output") or [])]
    if any(y is not None for y in outs):
        return ""
    return ("vacuous check: every output of the dataset is null, so the dataset constrains nothing "
            "(every prompt memorizes it)")


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
    #: the folder holding the side files the inputs name (None: the folder the result is written to)
    _base_dir: Optional[str] = field(default=None, repr=False, compare=False)

    @property
    def statement(self) -> str:
        if not self.question:
            return ""
        return statement(self.question, Status(self.status).value)

    def to_json(self) -> dict:
        info = {"method": self.method, "message": self.message, "checks": self.checks, "solver": self.solver,
                "seconds": {k: round(float(v), 4) for k, v in self.seconds.items()}}
        info.update(self.extra)
        warning = vacuity_warning(self.inputs, self._base_dir)
        if warning and warning not in info.get("warnings", []):
            info["warnings"] = list(info.get("warnings", [])) + [warning]
        out = {"format": RESULT_FORMAT, "claim": self.claim, "question": self.question,
               "status": Status(self.status).value, "statement": self.statement, "inputs": self.inputs,
               "certificate": self.certificate if Status(self.status) in DECIDED else None}
        if self.reported and Status(self.status) in DECIDED:
            out["reported"] = self.reported
        out["info"] = info
        return out

    def write(self, path: str, self_contained: bool = False) -> list[str]:
        """Write the result to ``path`` and return every file written: the result, then each side
        file its inputs name.

        Side files sit next to the result, named by their sha256 (``<first 16 hex digits>.npz`` or
        ``.json``), each written atomically before the result that names it (a file already there
        with the same content is kept).  With ``self_contained`` every input is embedded in the
        result (whatever its size) and no side file is written: the one file moves alone.  Nothing
        is half-written: each file is moved into place only once complete."""
        dest = os.path.dirname(os.path.abspath(path))
        src = os.path.abspath(self._base_dir) if self._base_dir else dest
        sides: list[str] = []

        def place(name: str, ref: dict) -> dict:
            source = _side_source(ref, src, dest)
            if self_contained:
                return _embedded(name, source)
            target = os.path.join(dest, ref["sha256"][:16] + os.path.splitext(ref["file"])[1])
            os.makedirs(dest, exist_ok=True)
            _copy_side(source, target, ref["sha256"])
            if target not in sides:
                sides.append(target)
            return {"sha256": ref["sha256"], "file": os.path.basename(target)}

        obj = _map_refs(self.to_json(), place)
        atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=False))
        return [path] + sides

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))


def load_result(path: str) -> dict:
    if not os.path.exists(path):
        raise InputError("RESULT", "an existing result file", f"no file {path!r}")
    if not os.path.isfile(path):
        raise InputError("RESULT", "a result file", f"{path!r}, which is not a regular file (a folder?)")
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except OSError as exc:
        raise InputError("RESULT", "a readable result file", f"{path!r} ({exc.strerror or type(exc).__name__})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise InputError("RESULT", f"a {RESULT_FORMAT} JSON file", f"unparseable JSON ({str(exc)[:100]})") from None
    if not isinstance(obj, dict) or obj.get("format") != RESULT_FORMAT:
        raise InputError("format", f"\"{RESULT_FORMAT}\"",
                         repr(obj.get("format") if isinstance(obj, dict) else type(obj).__name__)[:60])
    folder = os.path.dirname(os.path.abspath(path))
    try:
        refs = side_refs(obj)
    except RecursionError:
        raise InputError("RESULT", f"a {RESULT_FORMAT} JSON file", "JSON nested too deeply") from None
    for name, ref in refs:
        side = ref["file"]
        if not os.path.isfile(os.path.join(folder, os.path.basename(side))):
            raise InputError(f"inputs.{name}.file", f"the side file {side!r} next to the result",
                             f"no such file in {folder}", hint=MOVE_HINT[0].upper() + MOVE_HINT[1:])
    return obj


def solver_info() -> dict:
    import z3
    return {"name": "z3", "version": z3.get_version_string()}
