"""The questions a result can answer, declared as data: their fields, their inputs, and the one
statement each (question, status) pair makes.  The checker derives the statement from these and
never reads prose; producers call :func:`statement` to write the same text.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

from .numbers import Reject, fmt, integer, nonneg, positive, rat

__all__ = ["Question", "QUESTIONS", "parse_question", "statement", "STATUSES", "DECIDED_STATUSES"]

STATUSES = ("proved", "memorized", "verified", "refuted", "unknown", "timeout", "error")
DECIDED_STATUSES = frozenset({"proved", "memorized", "verified", "refuted"})


# --------------------------------------------------------------------------- field parsers

def prompt_length(v: Any, where: str):
    if v == "any":
        return "any"
    return integer(v, where, 1, 1 << 40)


def optional_positive(v: Any, where: str):
    return None if v is None else positive(v, where)


def optional_rational(v: Any, where: str):
    return None if v is None else rat(v, where)


def text(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v or len(v) > 200:
        raise Reject(f"{where}: expected a short non-empty string")
    return v


def count(v: Any, where: str) -> int:
    return integer(v, where, 1, 1 << 30)


def seed(v: Any, where: str) -> int:
    return integer(v, where, 0, (1 << 63) - 1)


@dataclass(frozen=True)
class Question:
    """``fields``: name -> (parser, required); ``inputs``: the input names it reads;
    ``statement(q, status)``: the text a result with this status asserts."""
    fields: dict
    inputs: frozenset
    statement: Callable[[dict, str], str]


def _tol_text(t: Fraction) -> str:
    return "exactly" if t == 0 else f"within {fmt(t)} in every output entry"


def _length_text(L) -> str:
    return "any length" if L == "any" else f"length {L}"


def _memorization_statement(q: dict, status: str) -> str:
    norm = "" if q.get("prompt_norm") is None else f" whose tokens have 2-norm at most {fmt(q['prompt_norm'])}"
    body = f"a prompt of {_length_text(q['prompt_length'])}{norm} memorizes the dataset {_tol_text(q['tolerance'])}"
    if status == "proved":
        return "no " + body[2:]
    if status == "memorized":
        return body
    return f"undecided ({status}): whether {body}"


def _universality_statement(q: dict, status: str) -> str:
    att = "hardmax" if q.get("temperature") is None else f"softmax at temperature {fmt(q['temperature'])}"
    what = (f"d_{fmt(q['p'])}(g([P_f, .]), f) {{}} {fmt(q['eps'])} for the given {att} network g and lookup "
            f"prompt P_f of the {q['target']} target f (L = {fmt(q['lipschitz'])}, d = {q['d']}, n = {q['n']})")
    if status == "verified":
        return what.format("<=")
    if status == "refuted":
        return what.format(">")
    return f"undecided ({status}): whether " + what.format("<=")


def _generic(what: str) -> Callable[[dict, str], str]:
    def st(q: dict, status: str) -> str:
        if status in DECIDED_STATUSES:
            return f"{what} ({status})"
        return f"undecided ({status}): {what}"
    return st


QUESTIONS: dict[str, Question] = {
    # does some prompt make the model produce the dataset's targets?
    "memorization": Question(
        fields={"prompt_length": (prompt_length, True), "tolerance": (nonneg, True),
                "prompt_norm": (optional_positive, False)},
        inputs=frozenset({"model", "dataset"}),
        statement=_memorization_statement),
    # Theorem U: is d_p(g([P_f, .]), f) <= eps for the built network and the named target?
    # (temperature: softmax with scores divided by T, absent for hardmax; seed: relu-net only;
    #  delta: 1/K overriding the grid of the formula)
    "universality": Question(
        fields={"d": (count, True), "n": (count, True), "lipschitz": (positive, True), "p": (positive, True),
                "eps": (positive, True), "target": (text, True), "temperature": (optional_positive, False),
                "seed": (seed, False), "delta": (optional_positive, False)},
        inputs=frozenset({"network", "prompt"}),
        statement=_universality_statement),
    # the L4/L5 parameter table on instances of these sizes
    "bounds": Question(
        fields={"d": (count, True), "m": (count, True), "N": (count, True), "heads": (count, True),
                "head_size": (count, True), "mlp_width": (count, True)},   # no seed: the checker cannot tie one
        inputs=frozenset(),
        statement=lambda q, st: _generic(
            f"every row of the prompt-vs-LoRA parameter table for d={q['d']}, m={q['m']}, N={q['N']}, "
            f"h={q['heads']}, s={q['head_size']}, r={q['mlp_width']} holds on its instance")(q, st)),
    # does a LoRA update of the named weight memorize the dataset?
    "lora-memorization": Question(
        fields={"target": (text, True), "tolerance": (nonneg, True)},
        inputs=frozenset({"model", "dataset"}),
        statement=lambda q, st: _generic(f"a LoRA update of {q['target']} memorizes the dataset "
                                         f"{_tol_text(q['tolerance'])}")(q, st)),
    # a certified lower bound > 0 on the loss (sum of squared errors at the constrained outputs)
    "loss-bound": Question(
        fields={"prompt_length": (prompt_length, True)},
        inputs=frozenset({"model", "dataset"}),
        statement=lambda q, st: _generic(f"every prompt of {_length_text(q['prompt_length'])} has loss at least "
                                         "the certified bound, which is > 0")(q, st)),
    # the recorded prompt-tuning runs (in the certificate) against the certified bound for every prompt
    "experiment": Question(
        fields={},
        inputs=frozenset({"model", "dataset"}),
        statement=_generic("every recorded prompt-tuning run's prompt has loss at least the certified bound "
                           "for prompts of any length, which is > 0")),
    # the certified range of each attention-block coordinate over every admissible prompt
    "reach": Question(
        fields={"prompt_norm": (optional_positive, False)},
        inputs=frozenset({"model", "dataset"}),
        statement=lambda q, st: _generic(
            "every prompt of any length" + ("" if q.get("prompt_norm") is None else
                                            f" whose tokens have 2-norm at most {fmt(q['prompt_norm'])}")
            + " keeps each coordinate of the attention block's pre-norm sum (and, post-LayerNorm, of LN1 of it) "
              "at every constrained position within the certificate's ranges")(q, st)),
}


def parse_question(obj: Any) -> tuple[str, dict]:
    """(kind, parsed fields) from a result's ``question`` object; unknown fields are rejected."""
    if not isinstance(obj, dict):
        raise Reject("question: expected an object")
    kind = obj.get("kind")
    if kind not in QUESTIONS:
        raise Reject(f"question.kind: expected one of {sorted(QUESTIONS)}, found {kind!r}"[:200])
    spec = QUESTIONS[kind]
    unknown = set(obj) - set(spec.fields) - {"kind"}
    if unknown:
        raise Reject(f"question: unknown field(s) {sorted(unknown)[:5]}")
    out = {}
    for name, (parser, required) in spec.fields.items():
        if name not in obj:
            if required:
                raise Reject(f"question.{name}: missing")
            out[name] = None
            continue
        out[name] = parser(obj[name], f"question.{name}")
    return kind, out


def statement(question: dict, status: str) -> str:
    """The statement a result with this question and status makes (``question`` as written in
    the result file: the same text the checker derives)."""
    kind, q = parse_question(question)
    return QUESTIONS[kind].statement(q, status)
