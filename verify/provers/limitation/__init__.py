"""The single-layer prover: relaxation R (Lemma D) in Z3, exact Farkas certificates, Theorems
L1/L2/L3 and Proposition E.

For every query token x that carries constrained outputs (a *group*; several examples sharing x is
the L1/L2 situation) the prover looks for one *block* whose linear system has no solution:

* ``subspace`` (Theorem L3): a functional phi with phi^T W_o^j W_v^j = 0 for every head and
  phi^T (z_i - x) != 0, where z_i = MLP^{-1}(y_i) is the attention input the target needs;
* ``head`` (Theorems L1/L2): for one head j, coordinates in which only head j is seen -- either a
  functional block Phi annihilating every other head's W_o W_v ("annihilator" form), or, when the
  stacked W_o = [W_o^1 ... W_o^h] has full column rank, the exact head coordinates gamma_i with
  W_o gamma_i = z_i - x ("direct-sum" form).  In those coordinates Lemma D gives, for every
  example i of the group, V (sum_t e_it X_i[t] + pi) = (Z_i + alpha) tau_i with unknowns alpha >= 0,
  pi in R^d and every fixed-token exponential e inside a rigorous enclosure: a *linear* system.
  Z3 decides it (LRA); when it is infeasible, Z3 also solves the dual and returns an exact Farkas
  vector, which :mod:`verify.checker.limitation` re-verifies without any solver.

Tolerance EPS (max-norm) and inexact preimages are carried to the attention input through the
inverse-Lipschitz bound ||z - z'|| <= ||MLP(z) - MLP(z')|| / (1 - k), and the Farkas inequality must
hold with that slack (see proofs/tolerance.md).

The package, by stage:

=====================  ====================================================================
``decide``             the decision flow (:func:`check_memorization`, :func:`prove_limitation`)
``clock``              the one deadline (:class:`OutOfTime`) and Z3's answers
``layer``              exact copies of the layer; floats proposing rationals
``groups``             constrained outputs grouped by query token, MLP preimages, radii
``blocks``             subspace, annihilator and direct-sum blocks (coordinate forms)
``relaxation``         relaxation R in Z3, per block and with all heads jointly
``farkas``             the dual LP, exact margins, the :class:`Proof` they make
``prop_e``             Proposition E, zero-score queries (alpha = prompt length)
``entropy``            Proposition E with the entropy relation, piecewise in alpha
``attention_free``     layers with W_o W_v = 0 for every head
``witness``            witness search and vetting by replay
``results``            the envelope, side files, certificate bodies, vetting of proofs
=====================  ====================================================================
"""
from __future__ import annotations

from verify.provers.limitation.clock import Clock, OutOfTime, z3_outcome
from verify.provers.limitation.decide import check_memorization, prove_limitation
from verify.provers.limitation.farkas import farkas_margin
from verify.provers.limitation.layer import ExactLayer
from verify.provers.limitation.results import CERT_KIND, WITNESS_KIND

__all__ = ["check_memorization", "prove_limitation", "ExactLayer", "CERT_KIND", "WITNESS_KIND", "OutOfTime",
           "z3_outcome", "farkas_margin"]

#: numbers (model parameters, dataset entries x 2) up to which inputs are embedded in the result;
#: larger ones are written next to it (read at call time by :mod:`.results`)
_INLINE_LIMIT = 200_000

_Clock = Clock     # the name the robustness tests use
