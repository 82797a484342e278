"""The registry of claims: one place that ``reproduce``, the README's table and the tests read.

Each feature module defines ``CLAIMS: list[Claim]``; :func:`all_claims` collects them in the order
of :data:`CLAIM_MODULES`.  A claim's ``run(params, outdir)`` returns a :class:`Result`; ``quick``
and ``default`` are the parameter sets ``reproduce --quick`` and ``reproduce`` use.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from verify.result import Result, Status

__all__ = ["Claim", "all_claims", "get_claim", "CLAIM_MODULES"]

#: modules that contribute claims, in report order
CLAIM_MODULES = [
    "verify.claims.core",
    "verify.claims.universality",
    "verify.claims.bounds",
    "verify.claims.experiment",
    "verify.claims.multilayer",
]


@dataclass
class Claim:
    id: str
    title: str
    statement: str
    expected: Status
    run: Callable[[dict, str], Result]
    default: dict = field(default_factory=dict)
    quick: dict = field(default_factory=dict)
    command: str = ""        # the CLI command a user runs to check it
    proof: str = ""          # proofs/*.md
    test: str = ""           # tests/...::test_name

    def instance(self, quick: bool) -> str:
        p = self.quick if quick else self.default
        return " ".join(f"{k}={v}" for k, v in p.items())


def all_claims() -> list[Claim]:
    out: list[Claim] = []
    for name in CLAIM_MODULES:
        mod = importlib.import_module(name)
        out.extend(getattr(mod, "CLAIMS", []))
    ids = [c.id for c in out]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise RuntimeError(f"duplicate claim ids in the registry: {sorted(dup)}")
    return out


def get_claim(claim_id: str) -> Claim:
    for c in all_claims():
        if c.id == claim_id:
            return c
    raise KeyError(claim_id)
