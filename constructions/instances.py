"""Instances with known answers: the generator behind the soundness campaign and its tests.

Every :class:`Instance` is a model, a dataset and a question (prompt length, tolerance) together
with the answer known *by construction*: ``memorizable`` (a prompt is known that memorizes the
dataset, exactly or within the stated tolerance), ``unmemorizable`` (an argument, recorded in
:data:`ARGUMENTS` under the class name, shows that no prompt does), or ``unknown`` (we do not know
the answer: such instances only count towards completeness statistics, never towards wrong
verdicts).  A verdict contradicting a known answer -- ``proved`` on a memorizable instance,
``memorized`` on an unmemorizable one -- is a wrong verdict.

Where the argument needs a property of the random draw (a nonzero vector, a norm bound, a float
enclosure within the tolerance), the builder checks it in exact arithmetic and downgrades the
answer to ``unknown`` when it fails, so a known answer is never assumed.

:func:`generate` draws ``n`` instances over all classes from one seed (deterministic);
:func:`build` builds one instance of a named class.  Sizes: 1 to 3 heads (overlapping or not),
d from 1 to 16 (mostly small), single- and multi-layer, causal and not.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Optional

import numpy as np

from .arrays import as_float, as_fraction
from .datasets import (cheap_norm_bound, l1_dataset, planted_dataset, prop_e_dataset, random_model,
                       random_tokens)
from .forward import forward_exact, forward_rational, mlp_exact
from .model import Dataset, Example, Head, Layer, Model
from .multilayer import collision_dataset, condition1_model

__all__ = ["Instance", "ANSWERS", "ARGUMENTS", "CLASSES", "SOFTMAX_TOLERANCE", "build", "generate", "class_names", "within_tolerance"]

#: the three answers an instance can carry
ANSWERS = ("memorizable", "unmemorizable", "unknown")

#: tolerance of the planted softmax instances (their float64 targets are checked, with rigorous
#: interval enclosures of the planted prompt's outputs, to lie within it)
SOFTMAX_TOLERANCE = Fraction(1, 10 ** 9)


@dataclass
class Instance:
    """One question with its known answer.  ``prompt`` is the known memorizing prompt (when
    ``answer`` is memorizable and one is known); ``params`` records how it was drawn."""
    id: str
    cls: str
    answer: str
    model: Model
    dataset: Dataset
    prompt_length: object = "any"
    tolerance: Fraction = Fraction(0)
    prompt: Optional[np.ndarray] = None
    params: dict = field(default_factory=dict)
    note: str = ""

    @property
    def argument(self) -> str:
        return ARGUMENTS[self.cls]


# --------------------------------------------------------------------------- the arguments

ARGUMENTS = {
    "planted-zero": "memorizable: the targets are the exact (rational) outputs of a known prompt on a "
                    "zero-score model (every score 0, attention a uniform average); tolerance 0.",
    "planted-hardmax": "memorizable: the targets are the exact outputs of a known prompt on a hardmax model "
                       "(rational forward pass); where hardmax ties make the enclosure non-degenerate the float "
                       "targets are checked to lie within the stated tolerance of a rigorous enclosure.",
    "planted-equal": "memorizable: equal-score heads (W_k^T W_q = 0 with W_q, W_k nonzero: every score 0) "
                     "and targets the exact outputs of a known prompt; tolerance 0.",
    "planted-softmax": "memorizable within 1e-9: float64 targets of a known prompt on a softmax model; a "
                       "rigorous interval enclosure of the prompt's exact outputs lies within 1e-9 of every "
                       "target (checked when built, else the answer is unknown).",
    "prop-e-integer": "memorizable: zero-score head, targets of a prompt with alpha = m (integer) and prompt "
                      "sum pi: any m tokens summing to pi give exactly these outputs (Proposition E).",
    "fixed-length-match": "memorizable at prompt length m: the prop-e-integer construction asked at its own "
                          "length K = m.",
    "degenerate-head-trivial": "memorizable: every head has W_v = 0, so attention adds nothing and every prompt "
                               "gives MLP(x); the target is exactly MLP(x).",
    "zero-mlp-planted": "memorizable: zero-score heads, MLP with W_1 = W_2 = 0 (the identity plus b_2), exact "
                        "targets of a known prompt.",
    "boundary-tolerance-at": "memorizable: a planted zero-score instance with one target coordinate moved by "
                             "delta and tolerance exactly delta; the planted prompt's error is exactly delta "
                             "<= tolerance (the tolerance is inclusive: max |y' - y| <= EPS).",
    "multilayer-planted": "memorizable: a causal multi-layer zero-score model, targets the exact outputs of a "
                          "known prompt on two different inputs (Theorem M does not apply: the outputs differ).",
    "l1-rays": "unmemorizable (Theorem L1): head outputs form a direct sum (stacked W_o of full column rank, "
               "checked exactly), the MLP is a certified contraction (injective), so each head's coordinates "
               "gamma_i of the needed attention output are determined; with a prompt they equal "
               "A_i + (beta - A_i) alpha / (Z_i + alpha), the same (alpha, beta) for both examples (shared x_0), "
               "so beta lies on both rays gamma_i + t (gamma_i - A_i), t >= 0.  The rays point apart along u "
               "by margin 1/2 each, rounding moves gamma by at most sqrt(s)/2048 < 1/2, so their projections on "
               "u are disjoint.",
    "l1-overlap": "unknown to us: overlapping heads (h s > d), K d equations outnumber the unknowns only "
                  "generically; counted for completeness only.",
    "l3-off-subspace": "unmemorizable (Theorem L3): every prompt's attention output lies in "
                       "V = sum_j col(W_o^j W_v^j); the needed attention output z - x has a component of norm "
                       ">= 1/2 - sqrt(d)/2048 orthogonal to V (checked exactly), and the MLP is injective.",
    "prop-e-fraction": "unmemorizable (integer prompt mass): zero-score head, so a prompt of length m gives "
                       "x_0 the output M (x_i + x_0 + S) / (m + 2); both targets need m = alpha, which is not an "
                       "integer, because M (x_1 - x_2) != 0 (checked exactly) and the MLP is injective.",
    "fixed-length-mismatch": "unmemorizable at length K: the prop-e-integer construction with alpha = m asked at "
                             "K != m; a prompt of K tokens has alpha = K, and M (x_1 - x_2) != 0 forces K = m.",
    "degenerate-head": "unmemorizable: every head has W_v = 0, so every prompt gives MLP(x) at x; the target "
                       "is MLP(x + c) with c != 0 and the MLP is injective.",
    "zero-mlp-l1": "unmemorizable (Theorem L1 with the identity MLP): the l1-rays argument with W_1 = W_2 = 0.",
    "limit-not-attained": "unmemorizable: zero-score head, both examples (sharing x_0) target the output "
                          "M p reached only in the limit of m copies of p, m -> infinity; equal outputs need "
                          "M (x_1 - x_2) = 0, which fails (checked exactly).",
    "boundary-tolerance-below": "unmemorizable: W_v = 0 (every prompt gives MLP(x)), the target is MLP(x) + "
                                "delta e_1 and the tolerance delta - 2^-30 is just below the error delta.",
    "multilayer-collision": "unmemorizable (Theorem M, condition 1): a causal zero-score model with "
                            "||sum_j W_o^j W_v^j||_2 < 1 and contractive MLPs in every layer (checked with the "
                            "exact bound sqrt(||W||_1 ||W||_inf)) is injective in the input for every prompt; "
                            "two different inputs with the same target are memorized by none.",
}


# --------------------------------------------------------------------------- helpers

def _frac_rank(A) -> int:
    """Exact rank of a matrix (Fractions)."""
    M = [list(row) for row in as_fraction(np.asarray(A))]
    if not M:
        return 0
    rows, cols, r = len(M), len(M[0]), 0
    for c in range(cols):
        piv = next((i for i in range(r, rows) if M[i][c] != 0), None)
        if piv is None:
            continue
        M[r], M[piv] = M[piv], M[r]
        for i in range(rows):
            if i != r and M[i][c] != 0:
                f = M[i][c] / M[r][c]
                M[i] = [a - f * b for a, b in zip(M[i], M[r])]
        r += 1
        if r == rows:
            break
    return r


def _stacked_wo(model: Model) -> np.ndarray:
    return np.concatenate([as_fraction(np.asarray(h.W_o)) for h in model.layers[0].heads], axis=1)


def _head_products(model: Model, li: int = 0) -> np.ndarray:
    """sum_j W_o^j W_v^j (exact)."""
    layer = model.layers[li]
    tot = None
    for h in layer.heads:
        M = as_fraction(np.asarray(h.W_o)).dot(as_fraction(np.asarray(h.W_v)))
        tot = M if tot is None else tot + M
    return tot


def _exact_outputs(model: Model, X: np.ndarray, prompt: np.ndarray) -> Optional[list]:
    """The exact rational outputs when the forward pass is rational, else None."""
    try:
        return [list(row) for row in forward_rational(model, X, prompt)]
    except Exception:  # NotExact: irrational attention
        return None


def within_tolerance(model: Model, ds: Dataset, prompt: np.ndarray, tol: Fraction) -> bool:
    """True when a rigorous enclosure of the prompt's outputs lies within ``tol`` of every
    constrained target (so the prompt memorizes the dataset within ``tol``)."""
    for ex in ds.examples:
        enc = forward_exact(model, ex.input, prompt)
        for row, y in zip(enc, ex.output):
            if y is None:
                continue
            for iv, t in zip(row, as_fraction(np.asarray(y))):
                if max(abs(iv.lo - t), abs(iv.hi - t)) > tol:
                    return False
    return True


def _mv(M: np.ndarray, v) -> list:
    return [sum((M[r][c] * v[c] for c in range(len(v))), Fraction(0)) for r in range(M.shape[0])]


def _zero_values(model: Model) -> Model:
    for layer in model.layers:
        for h in layer.heads:
            h.W_v = np.zeros_like(as_float(h.W_v))
    model.meta = dict(model.meta, degenerate="W_v = 0")
    return model


def _zero_mlp(model: Model) -> Model:
    for layer in model.layers:
        layer.W_1 = np.zeros_like(as_float(layer.W_1))
        layer.W_2 = np.zeros_like(as_float(layer.W_2))
    model.meta = dict(model.meta, degenerate="W_1 = W_2 = 0")
    return model


# --------------------------------------------------------------------------- builders
# Each builder(rng, p) returns (answer, model, dataset, extra) where extra may set prompt_length,
# tolerance, prompt and note.  ``p`` holds the drawn sizes: d, heads, head_size, causal, seed.

def _model(p: dict, **kw) -> Model:
    return random_model(p["d"], heads=p["heads"], head_size=p["head_size"], mlp_width=p.get("mlp_width"),
                        seed=p["seed"], causal=p["causal"], **kw)


def _planted_exact(model: Model, p: dict, examples: int = 2):
    ds, prompt = planted_dataset(model, seed=p["seed"], examples=examples, prompt_length=p.get("plen", 1),
                                 shared=p.get("shared", True))
    exact = all(not isinstance(v, float) and not isinstance(v, np.floating)
                for ex in ds.examples for y in ex.output if y is not None for v in np.asarray(y).reshape(-1))
    return ds, prompt, exact


def _b_planted_zero(rng, p):
    m = _model(p, zero_scores=True)
    ds, prompt, exact = _planted_exact(m, p)
    return ("memorizable" if exact else "unknown"), m, ds, {"prompt": prompt}


#: the planted float instances' rigorous enclosure costs grow fast with d: they stay at d <= 4
_ENCLOSURE_MAX_D = 4


def _small(p: dict) -> dict:
    d = min(p["d"], _ENCLOSURE_MAX_D)
    return dict(p, d=d, head_size=min(p["head_size"], d))


def _b_planted_hardmax(rng, p):
    p = _small(p)
    m = _model(p, kind="hardmax")
    ds, prompt, exact = _planted_exact(m, p)
    if exact:
        return "memorizable", m, ds, {"prompt": prompt}
    ok = within_tolerance(m, ds, prompt, SOFTMAX_TOLERANCE)
    return ("memorizable" if ok else "unknown"), m, ds, {"prompt": prompt, "tolerance": SOFTMAX_TOLERANCE}


def _b_planted_equal(rng, p):
    hs = max(2, p["head_size"])
    m = condition1_model(p["d"], heads=p["heads"], layers=1, seed=p["seed"], head_size=hs, causal=p["causal"])
    ds, prompt, exact = _planted_exact(m, p)
    return ("memorizable" if exact else "unknown"), m, ds, {"prompt": prompt}


def _b_planted_softmax(rng, p):
    p = _small(p)
    m = _model(p)
    ds, prompt = planted_dataset(m, seed=p["seed"], examples=2, prompt_length=p.get("plen", 1), exact=False)
    ok = within_tolerance(m, ds, prompt, SOFTMAX_TOLERANCE)
    return ("memorizable" if ok else "unknown"), m, ds, {"prompt": prompt, "tolerance": SOFTMAX_TOLERANCE}


def _prop_e(p: dict, alpha: Fraction):
    m = random_model(p["d"], heads=1, seed=p["seed"], causal=p["causal"], zero_scores=True)
    ds = prop_e_dataset(m, alpha, seed=p["seed"])
    # M (x_1 - x_2) != 0 exactly (the argument of prop-e-fraction / fixed-length-mismatch)
    h = m.layers[0].heads[0]
    M = as_fraction(np.asarray(h.W_o)).dot(as_fraction(np.asarray(h.W_v)))
    diff = as_fraction(ds.examples[0].input[0]) - as_fraction(ds.examples[1].input[0])
    separated = any(v != 0 for v in _mv(M, diff))
    return m, ds, separated


def _b_prop_e_integer(rng, p):
    alpha = int(rng.integers(1, 4))
    m, ds, _ = _prop_e(p, Fraction(alpha))
    return "memorizable", m, ds, {"note": f"alpha={alpha}"}


def _b_fixed_length_match(rng, p):
    alpha = int(rng.integers(1, 4))
    m, ds, _ = _prop_e(p, Fraction(alpha))
    return "memorizable", m, ds, {"prompt_length": alpha, "note": f"alpha={alpha}"}


def _b_prop_e_fraction(rng, p):
    den = int(rng.integers(2, 5))
    num = int(rng.integers(1, 4 * den))
    if num % den == 0:
        num += 1
    alpha = Fraction(num, den)
    m, ds, sep = _prop_e(p, alpha)
    return ("unmemorizable" if sep else "unknown"), m, ds, {"note": f"alpha={alpha}"}


def _b_fixed_length_mismatch(rng, p):
    alpha = int(rng.integers(1, 4))
    K = int(rng.integers(1, 5))
    if K == alpha:
        K += 1
    m, ds, sep = _prop_e(p, Fraction(alpha))
    return ("unmemorizable" if sep else "unknown"), m, ds, {"prompt_length": K, "note": f"alpha={alpha} K={K}"}


def _direct_sum(m: Model) -> bool:
    Wo = _stacked_wo(m)
    return Wo.shape[1] <= m.d and _frac_rank(Wo) == Wo.shape[1]


def _b_l1_rays(rng, p):
    heads = min(p["heads"], p["d"])
    m = random_model(p["d"], heads=heads, head_size=max(1, p["d"] // heads), seed=p["seed"], causal=p["causal"])
    if not _direct_sum(m):
        ds = l1_dataset(m, seed=p["seed"])
        return "unknown", m, ds, {"note": "stacked W_o not of full column rank"}
    ds = l1_dataset(m, seed=p["seed"], examples=2)
    return "unmemorizable", m, ds, {}


def _b_l1_overlap(rng, p):
    d = max(2, p["d"])
    heads = max(2, p["heads"])
    s = d // heads + 1
    m = random_model(d, heads=heads, head_size=s, seed=p["seed"], causal=p["causal"])
    ds = l1_dataset(m, seed=p["seed"])
    return "unknown", m, ds, {}


def _b_l3(rng, p):
    """The construction of :func:`constructions.datasets.l3_dataset`, done here so that the needed
    attention output c = z - x is at hand and its leaving V is checked exactly."""
    d = max(2, p["d"])
    heads = min(p["heads"], d - 1)
    s = max(1, (d - 1) // heads)
    kind = "hardmax" if rng.random() < 0.3 else "softmax"
    m = random_model(d, heads=heads, head_size=s, seed=p["seed"], causal=p["causal"], kind=kind)
    V = np.concatenate([as_fraction(np.asarray(h.W_o)).dot(as_fraction(np.asarray(h.W_v)))
                        for h in m.layers[0].heads], axis=1)
    Vf = as_float(V).astype(np.float64)
    U, S, _ = np.linalg.svd(Vf)
    rank = int((S > 1e-10 * max(1.0, S.max(initial=0))).sum())
    if rank >= d:
        return "unknown", m, l1_dataset(m, seed=p["seed"]), {"note": "V is everything"}
    n = U[:, rank:] @ rng.normal(size=d - rank)
    n /= np.linalg.norm(n)
    X = random_tokens(rng, 2, d)
    v = Vf @ rng.normal(0, 0.3, Vf.shape[1])
    c = np.array([Fraction(round(float(t) * 1024), 1024) for t in v + 0.5 * n], dtype=object)
    y = mlp_exact(m.layers[0], as_fraction(X[1]) + c)
    off = _frac_rank(np.concatenate([V, c.reshape(-1, 1)], axis=1)) > _frac_rank(V)
    ds = Dataset([Example(input=X, output=[None, y])])
    return ("unmemorizable" if off else "unknown"), m, ds, {}


def _b_degenerate_head(rng, p):
    m = _zero_values(_model(p))
    X = random_tokens(rng, 2, p["d"])
    c = np.array([Fraction(int(rng.integers(1, 64)), 64) * (1 if rng.random() < 0.5 else -1)
                  for _ in range(p["d"])], dtype=object)
    y = mlp_exact(m.layers[0], as_fraction(X[-1]) + c)
    return "unmemorizable", m, Dataset([Example(input=X, output=[None, y])]), {}


def _b_degenerate_trivial(rng, p):
    m = _zero_values(_model(p))
    X = random_tokens(rng, 2, p["d"])
    ys = [mlp_exact(m.layers[0], as_fraction(x)) for x in X]
    out = [None, ys[1]] if m.causal or rng.random() < 0.5 else ys
    return "memorizable", m, Dataset([Example(input=X, output=out)]), {}


def _b_zero_mlp_planted(rng, p):
    m = _zero_mlp(_model(p, zero_scores=True))
    ds, prompt, exact = _planted_exact(m, p)
    return ("memorizable" if exact else "unknown"), m, ds, {"prompt": prompt}


def _b_zero_mlp_l1(rng, p):
    heads = min(p["heads"], p["d"])
    m = _zero_mlp(random_model(p["d"], heads=heads, head_size=max(1, p["d"] // heads), seed=p["seed"],
                               causal=p["causal"]))
    ds = l1_dataset(m, seed=p["seed"], examples=2)
    return ("unmemorizable" if _direct_sum(m) else "unknown"), m, ds, {}


def _b_limit(rng, p):
    m = random_model(p["d"], heads=1, seed=p["seed"], causal=p["causal"], zero_scores=True)
    h = m.layers[0].heads[0]
    M = as_fraction(np.asarray(h.W_o)).dot(as_fraction(np.asarray(h.W_v)))
    toks = random_tokens(rng, 4, p["d"])
    x0, x1, x2, pt = (as_fraction(t) for t in toks)
    c = np.array(_mv(M, pt), dtype=object)
    y = mlp_exact(m.layers[0], x0 + c)
    ds = Dataset([Example(input=np.stack([toks[1], toks[0]]), output=[None, y]),
                  Example(input=np.stack([toks[2], toks[0]]), output=[None, y.copy()])])
    sep = any(v != 0 for v in _mv(M, x1 - x2))
    return ("unmemorizable" if sep else "unknown"), m, ds, {}


def _b_boundary_at(rng, p):
    m = _model(p, zero_scores=True)
    ds, prompt, exact = _planted_exact(m, p)
    delta = Fraction(1, 1 << int(rng.integers(4, 20)))
    ex = ds.examples[0]
    j = max(i for i, y in enumerate(ex.output) if y is not None)
    y = as_fraction(np.asarray(ex.output[j])).copy()
    k = int(rng.integers(0, p["d"]))
    y[k] = y[k] + (delta if rng.random() < 0.5 else -delta)
    ex.output[j] = y
    return ("memorizable" if exact else "unknown"), m, ds, {"prompt": prompt, "tolerance": delta}


def _b_boundary_below(rng, p):
    m = _zero_values(_model(p))
    X = random_tokens(rng, 2, p["d"])
    delta = Fraction(1, 1 << int(rng.integers(4, 20)))
    y = mlp_exact(m.layers[0], as_fraction(X[-1])).copy()
    y[0] = y[0] + delta
    return "unmemorizable", m, Dataset([Example(input=X, output=[None, y])]), {"tolerance": delta - Fraction(1, 1 << 30)}


def _cheap_below_one(M) -> bool:
    """sqrt(||M||_1 ||M||_inf) < 1 in exact arithmetic (an upper bound on ||M||_2)."""
    A = np.vectorize(abs, otypes=[object])(as_fraction(np.asarray(M)))
    n1 = max(sum(A[:, j]) for j in range(A.shape[1]))
    ninf = max(sum(A[i, :]) for i in range(A.shape[0]))
    return n1 * ninf < 1


def _condition1_certified(m: Model) -> bool:
    for li, layer in enumerate(m.layers):
        if not _cheap_below_one(_head_products(m, li)):
            return False
        if cheap_norm_bound(as_float(layer.W_1)) * cheap_norm_bound(as_float(layer.W_2)) >= 1:
            return False
        for h in layer.heads:
            if np.any(as_fraction(np.asarray(h.W_k)).T.dot(as_fraction(np.asarray(h.W_q))) != 0):
                return False
    return True


def _ml_model(p: dict) -> Model:
    return condition1_model(p["d"], heads=p["heads"], layers=p["layers"], seed=p["seed"],
                            head_size=max(1, p["head_size"]), causal=True)


def _b_ml_collision(rng, p):
    m = _ml_model(p)
    ds, _ = collision_dataset(m, seed=p["seed"], prompt_length=p.get("plen", 1))
    x1, x2 = ds.examples[0].input[0], ds.examples[1].input[0]
    ok = _condition1_certified(m) and np.any(x1 != x2)
    return ("unmemorizable" if ok else "unknown"), m, ds, {}


def _b_ml_planted(rng, p):
    m = _ml_model(p)
    ds, prompt, exact = _planted_exact(m, dict(p, shared=False))
    return ("memorizable" if exact else "unknown"), m, ds, {"prompt": prompt}


#: class name -> (builder, sampling weight, multi-layer?)
CLASSES: dict[str, tuple[Callable, int, bool]] = {
    "planted-zero": (_b_planted_zero, 3, False),
    "planted-hardmax": (_b_planted_hardmax, 3, False),
    "planted-equal": (_b_planted_equal, 2, False),
    "planted-softmax": (_b_planted_softmax, 3, False),
    "prop-e-integer": (_b_prop_e_integer, 2, False),
    "fixed-length-match": (_b_fixed_length_match, 1, False),
    "degenerate-head-trivial": (_b_degenerate_trivial, 1, False),
    "zero-mlp-planted": (_b_zero_mlp_planted, 1, False),
    "boundary-tolerance-at": (_b_boundary_at, 2, False),
    "multilayer-planted": (_b_ml_planted, 1, True),
    "l1-rays": (_b_l1_rays, 4, False),
    "l1-overlap": (_b_l1_overlap, 1, False),
    "l3-off-subspace": (_b_l3, 3, False),
    "prop-e-fraction": (_b_prop_e_fraction, 2, False),
    "fixed-length-mismatch": (_b_fixed_length_mismatch, 2, False),
    "degenerate-head": (_b_degenerate_head, 1, False),
    "zero-mlp-l1": (_b_zero_mlp_l1, 1, False),
    "limit-not-attained": (_b_limit, 2, False),
    "boundary-tolerance-below": (_b_boundary_below, 1, False),
    "multilayer-collision": (_b_ml_collision, 2, True),
}


def class_names() -> list[str]:
    return list(CLASSES)


_D_CHOICES = [1, 2, 2, 3, 3, 3, 4, 4, 5, 6, 8, 12, 16]


def _draw(rng: np.random.Generator, multilayer: bool, max_d: int) -> dict:
    ds_ = [d for d in _D_CHOICES if d <= max_d] or [1]
    d = int(rng.choice(ds_))
    heads = int(rng.integers(1, 4))
    overlap = rng.random() < 0.3
    s = max(1, d // heads + (1 if overlap else 0))
    p = {"d": d, "heads": heads, "head_size": s, "causal": bool(rng.random() < 0.5),
         "seed": int(rng.integers(0, 2 ** 31 - 1)), "plen": int(rng.integers(1, 3))}
    if multilayer:
        p.update(layers=int(rng.integers(2, 4)), causal=True, d=min(d, 4), head_size=max(1, min(d, 4) // heads))
    return p


def build(cls: str, seed: int, iid: Optional[str] = None, max_d: int = 16) -> Instance:
    """One instance of class ``cls`` drawn from ``seed``."""
    fn, _, multilayer = CLASSES[cls]
    rng = np.random.default_rng([seed, sorted(CLASSES).index(cls)])
    p = _draw(rng, multilayer, max_d)
    answer, model, ds, extra = fn(rng, p)
    if answer not in ANSWERS:  # pragma: no cover - a builder bug
        raise AssertionError(answer)
    return Instance(id=iid or f"{cls}-{seed}", cls=cls, answer=answer, model=model, dataset=ds,
                    prompt_length=extra.get("prompt_length", "any"),
                    tolerance=Fraction(extra.get("tolerance", 0)), prompt=extra.get("prompt"),
                    params=p, note=extra.get("note", ""))


def generate(n: int, seed: int = 0, classes: Optional[list] = None, max_d: int = 16, start: int = 0):
    """Yield instances ``start .. start + n - 1`` of the sequence fixed by ``seed`` (deterministic):
    every class once, then the classes in a cycle weighted by :data:`CLASSES`."""
    names = list(classes) if classes else class_names()
    cycle = [c for c in names for _ in range(CLASSES[c][1])]
    for i in range(start, start + n):
        cls = names[i] if i < len(names) else cycle[(i - len(names)) % len(cycle)]
        yield build(cls, seed * 1_000_003 + i, iid=f"{i:05d}-{cls}", max_d=max_d)
