"""Layers whose attention adds nothing: W_o W_v = 0 for every head.

Then the output at an input token x is MLP(x) whatever the prompt, so the dataset is memorized
iff every target is within the tolerance of MLP(x).  A target farther away is proved unreachable
by an ``attention-free`` certificate (no injectivity needed); otherwise every prompt is a witness,
and one whose replay the trusted checker can carry out exactly is looked for.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Optional

import numpy as np

from constructions.model import IntMatrix, Model, as_float, as_fraction
from verify.provers.exact import approx, frac_vec, solve
from verify.provers.limitation.context import Check
from verify.provers.limitation.layer import ExactLayer
from verify.provers.limitation.results import CERT_KIND, vet_proof
from verify.provers.limitation.witness import with_witness, witness_length_ok
from verify.result import Status, certificate

__all__ = ["attention_free", "attention_free_decided"]

_NO_EXACT_REPLAY = (
    "attention adds nothing here (W_o W_v = 0 for every head), so the output at a token x is "
    "MLP(x) for every prompt, and every target is within the tolerance of it: every prompt "
    "memorizes the dataset.  'memorized' is not claimed: the trusted checker replays a softmax "
    "witness exactly only when the scores at each query are equal, which this dataset's tokens "
    "prevent, and the question's tolerance leaves no room for its rigorous enclosures")


def attention_free(model: Model) -> bool:
    """Does every head have W_o W_v = 0 exactly (attention adds nothing to any token)?  A float
    product clearly away from 0 answers no at once; otherwise W_o (W_v e_c) is computed exactly."""
    for h in model.layers[0].heads:
        Wo, Wv = as_float(h.W_o), as_float(h.W_v)
        with np.errstate(all="ignore"):
            P = np.abs(Wo @ Wv)
            scale = float(np.max(np.abs(Wo))) * float(np.max(np.abs(Wv))) * Wv.shape[0]
        if np.all(np.isfinite(P)) and np.isfinite(scale) and float(np.max(P)) > 1e-6 * scale:
            return False
        Mo, Wvq = IntMatrix(h.W_o), as_fraction(h.W_v)
        if any(any(Mo.mv(list(Wvq[:, c]))) for c in range(model.d)):
            return False
    return True


def attention_free_decided(c: Check) -> bool:
    """Decide an attention-free layer: proved (a target is not MLP(x)), memorized (a witness the
    checker replays), or every prompt memorizes but none replays exactly (message only).  Returns
    True when nothing more can be done."""
    worst, far = max((max(abs(a - b) for a, b in zip(c.ex.mlp(g.x), m.y)), (m.example, m.position))
                     for g in c.groups for m in g.members)
    c.log.append(f"attention adds nothing (W_o W_v = 0 for every head): largest |MLP(x) - y| = {approx(worst)}")
    res = c.res
    if worst > c.tol:
        # every prompt gives MLP(x) there: proved, whatever the MLP (no injectivity needed)
        res.certificate = certificate(CERT_KIND, {"form": "attention-free", "example": far[0], "position": far[1]})
        res.method = "attention adds nothing (W_o W_v = 0 for every head): a target is not MLP(x)"
        vet_proof(res)
        return res.status == Status.PROVED
    if not witness_length_ok(c.prompt_length, c.log):
        return False
    K = 1 if c.prompt_length == "any" else c.prompt_length
    cands = [[[Fraction(0)] * c.model.d for _ in range(K)]]
    p = _equal_score_token(c.model, c.ex, c.dataset)
    if p is not None:
        cands.append([p] * K)
    for P in cands:
        if with_witness(res, c.model, c.dataset, P, c.tol):
            res.method = "attention adds nothing (W_o W_v = 0 for every head): every target is MLP(x); any prompt"
            return True
    res.message = _NO_EXACT_REPLAY
    return True


def _equal_score_token(model: Model, ex: ExactLayer, dataset) -> Optional[list[Fraction]]:
    """A token p whose score at every constrained query equals the scores of that query's visible
    input tokens (when those are all equal), for every head: a prompt of copies of p gets exactly
    uniform attention weights, so the checker's replay stays exact.  None if there is none."""
    rows, rhs = [], []
    for e in dataset.examples:
        X = [frac_vec(as_fraction(r)) for r in e.input]
        for a, y in enumerate(e.output):
            if y is None:
                continue
            keys = X[: a + 1] if model.causal else X
            for j, hd in enumerate(ex.heads):
                sc = set(ex.scores(j, X[a], keys))
                if len(sc) != 1:
                    return None
                rows.append(hd["W_k"].vm(hd["W_q"].mv(X[a])))
                rhs.append(sc.pop())
    return solve(rows, rhs) if rows else [Fraction(0)] * model.d
