"""The state of one single-layer check, handed from stage to stage."""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Optional

from constructions.model import Dataset, Model
from verify.provers.limitation.blocks import DirectSum
from verify.provers.limitation.clock import Clock
from verify.provers.limitation.groups import Group
from verify.provers.limitation.layer import ExactLayer
from verify.result import Result

__all__ = ["Check"]


@dataclass
class Check:
    """One check in progress: the question (``prompt_length``, ``tol``), the model in exact form,
    the dataset's groups, the clock, the log, and the result being built."""
    z3: Any                          # the z3 module (imported once per check)
    model: Model
    dataset: Dataset
    prompt_length: Any               # "any" or a positive int
    tol: Fraction
    clock: Clock
    res: Result
    ex: ExactLayer
    groups: list[Group]
    log: list[str]
    artifacts: Optional[str] = None  # folder for the solvers' SMT-LIB files
    k: Fraction = Fraction(1)        # rigorous Lipschitz bound of the MLP's residual branch
    direct_sum: Optional[DirectSum] = None
    refused: list[Fraction] = field(default_factory=list)   # block shifts beyond the checker's exp range
    #: the last relaxation-R solver, kept until the check ends: Z3 reuses the numbers of freed
    #: terms, and its numbering steers which of the many valid Farkas vectors later solvers return
    #: (any would do); keeping it fixes the numbering they see, and so the certificates written
    last_primal: Any = None

    @property
    def heads(self) -> int:
        return len(self.model.layers[0].heads)

    @property
    def softmax(self) -> bool:
        return self.model.layers[0].kind == "softmax"
