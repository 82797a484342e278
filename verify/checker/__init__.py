"""The trusted base: re-checks result files on its own.

It imports only the standard library and numpy, never a solver, torch, sympy or any other part
of ptverify (a test reads its imports), and concludes only from exact rational arithmetic and
rigorous enclosures.  ``python -m verify.checker RESULT.json ...`` exits 0 only if every file
holds.  What it trusts and what each certificate kind establishes: ``proofs/checker.md``.
"""
from .envelope import (CERTIFICATE_FORMAT, RESULT_FORMAT, STATUS_KINDS, Context, Outcome, check_file,
                       check_result)
from .inputs import canonical_sha256
from .numbers import Reject
from .questions import DECIDED_STATUSES, QUESTIONS, STATUSES, statement

__all__ = ["check_file", "check_result", "statement", "canonical_sha256", "Reject", "Context", "Outcome",
           "RESULT_FORMAT", "CERTIFICATE_FORMAT", "STATUS_KINDS", "STATUSES", "DECIDED_STATUSES", "QUESTIONS"]
