"""The producers' exact arithmetic: rational formatting, roots, logarithms, exponential
enclosures (:mod:`.rationals`), norm bounds, positive-definiteness and exact linear solves
(:mod:`.linalg`).

One copy for the provers.  The trusted checker keeps its own, deliberately separate copy
(``verify/checker/numbers.py``); where a prover must predict what the checker will accept (the
MLP norm bound, the exponential enclosures of attention scores) the functions here follow the
checker's documented rules, and the prover then submits its result to the checker anyway.

Floats only *propose* (a singular value, a logarithm); every returned bound is proved with
Python integers and :class:`fractions.Fraction`.
"""
from __future__ import annotations

from verify.provers.exact.linalg import left_null_basis, norm_bound, positive_definite, project_onto_span, solve
from verify.provers.exact.rationals import (ARG_BITS, EXP_ARG_LIMIT, MAX_DIGITS, ONE_PAD, ZERO, ExpRangeError, approx,
                                            dot, down_bits, exp_box, exp_enclosure, exp_score, exponent, fmt,
                                            fmt_vec, frac_vec, int_str, log_above, log_below, norm2_up, sqrt_down,
                                            sqrt_up, up_bits, z3_numeral)

__all__ = ["ZERO", "EXP_ARG_LIMIT", "ARG_BITS", "ONE_PAD", "MAX_DIGITS", "ExpRangeError", "fmt", "fmt_vec",
           "frac_vec", "dot", "sqrt_up", "sqrt_down", "norm2_up", "approx", "int_str", "z3_numeral", "exponent",
           "up_bits", "down_bits", "exp_enclosure", "exp_score", "exp_box", "log_below", "log_above",
           "positive_definite", "norm_bound", "solve", "left_null_basis", "project_onto_span"]
