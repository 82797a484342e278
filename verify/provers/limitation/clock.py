"""The one deadline of a check, and the one map from Z3's answers to the prover's outcomes.

Every stage asks the :class:`Clock` before it starts and gives a solver what is left; when nothing
is left, :class:`OutOfTime` names the stage and the result's status becomes "timeout".
"""
from __future__ import annotations

import time
from fractions import Fraction
from typing import Optional

from verify.provers.exact import z3_numeral
from verify.result import Result

__all__ = ["OutOfTime", "Clock", "z3_outcome", "solve", "z3q", "model_value"]


class OutOfTime(Exception):
    """The check's time ran out during ``stage`` (reported as status "timeout", ``info.stage``)."""

    def __init__(self, stage: str):
        super().__init__(stage)
        self.stage = stage


class Clock:
    """The one deadline of a check, honoured by every stage: ``ms(stage)`` is a solver's time
    limit (what is left) and raises :class:`OutOfTime` when nothing is left."""

    def __init__(self, seconds: float, progress=None):
        from verify.progress import ensure
        self.start = time.perf_counter()
        self.end = self.start + seconds
        self.res: Optional[Result] = None    # the result being built (status "timeout" on OutOfTime)
        self.progress = ensure(progress)     # told each stage as it starts (verify/progress.py)
        self.stage = ""

    def left(self) -> float:
        return self.end - time.perf_counter()

    def check(self, stage: str) -> None:
        if stage != self.stage:
            self.stage = stage
            self.progress.stage(stage)
        if self.left() <= 0:
            raise OutOfTime(stage)

    def ms(self, stage: str) -> int:
        self.check(stage)
        return max(1, int(min(self.left(), 1e6) * 1000))   # Z3 takes an unsigned 32-bit count


def z3_outcome(solver, answer) -> str:
    """The one map from a Z3 answer to the prover's outcomes: "sat", "unsat", "timeout" (unknown
    because the time limit struck: reason "timeout" or "canceled"), else "unknown" (incomplete
    theory, resource limit, ...)."""
    a = str(answer)
    if a in ("sat", "unsat"):
        return a
    return "timeout" if solver.reason_unknown() in ("timeout", "canceled") else "unknown"


def solve(solver, clock: Clock, stage: str) -> str:
    """solver.check() within the clock: "sat", "unsat" or "unknown"; OutOfTime on a timeout."""
    solver.set("timeout", clock.ms(stage))
    ans = z3_outcome(solver, solver.check())
    if ans == "timeout":
        raise OutOfTime(stage)
    return ans


def z3q(z3, q: Fraction):
    """The exact rational q as a Z3 real constant."""
    return z3.RealVal(z3_numeral(q))


def model_value(mdl, v) -> Fraction:
    """The exact rational value of the real term ``v`` in the Z3 model ``mdl``."""
    r = mdl.eval(v, model_completion=True)
    return Fraction(r.numerator_as_long(), r.denominator_as_long())
