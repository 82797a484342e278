"""Builders: random models satisfying the assumptions, the datasets of Theorems L1 and L3, and
planted (memorizable) datasets produced by a known prompt.

All random weights are dyadic rationals (multiples of 2**-bits), so they are exact binary64 values
and exact integer arithmetic on them is cheap.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional

import numpy as np

from .arrays import IntMatrix, dyadic_int64, as_float, as_fraction, as_scaled_int
from .forward import forward_exact, forward_torch, mlp_exact
from .forward import mlp_float  # noqa: F401  (its old home: still importable from here)
from .model import Dataset, Example, Head, Layer, Model

__all__ = ["random_model", "mlp_inverse_float", "l1_dataset", "l3_dataset", "required_examples",
           "planted_dataset", "random_tokens", "head_parts_float", "cheap_norm_bound", "prop_e_dataset",
           "long_prompt_dataset"]


def _dyadic(a: np.ndarray, bits: int) -> np.ndarray:
    return np.round(a * (1 << bits)) / (1 << bits)


def cheap_norm_bound(W: np.ndarray) -> Fraction:
    """A rational upper bound on ||W||_2: sqrt(||W||_1 ||W||_inf) (exact, rounded up)."""
    a = np.asarray(W)
    fast = dyadic_int64(a) if a.dtype == np.float64 else None
    if fast is not None and a.size and int(np.abs(fast[0]).max()) < (1 << 62) // max(a.shape):
        N, D = fast[0], 1 << fast[1]      # int64 sums cannot overflow
    else:
        N, D = as_scaled_int(a)
    A = np.abs(N)
    n1 = max((int(v) for v in A.sum(axis=0)), default=0)
    ninf = max((int(v) for v in A.sum(axis=1)), default=0)
    prod = n1 * ninf  # ||W||_1 ||W||_inf * D^2
    r = math.isqrt(prod)
    if r * r < prod:
        r += 1
    return Fraction(r, D)


def random_model(d: int, heads: int = 1, head_size: Optional[int] = None, mlp_width: Optional[int] = None,
                 seed: int = 0, kind: str = "softmax", layers: int = 1, bits: int = 12,
                 mlp_contraction: float = 0.5, score_scale: float = 1.0, value_scale: float = 1.0,
                 zero_scores: bool = False, causal: bool = False) -> Model:
    """A seeded random model whose MLP residual branches are certified contractions.

    Each MLP is scaled so that the *cheap exact* bound sqrt(||W||_1 ||W||_inf) gives
    ||W_1|| ||W_2|| <= mlp_contraction < 1 (so the assumption holds with margin, provably).
    ``head_size`` defaults to d // heads (at least 1); ``mlp_width`` to 2 d."""
    rng = np.random.default_rng(seed)
    s = head_size if head_size is not None else max(1, d // heads)
    r = mlp_width if mlp_width is not None else 2 * d
    out_layers = []
    for _ in range(layers):
        hs = []
        for _ in range(heads):
            if zero_scores:
                W_q = np.zeros((s, d))
                W_k = np.zeros((s, d))
            else:
                W_q = _dyadic(rng.normal(0, score_scale / math.sqrt(d), (s, d)), bits)
                W_k = _dyadic(rng.normal(0, 1.0 / math.sqrt(s), (s, d)), bits)
            W_v = _dyadic(rng.normal(0, value_scale / math.sqrt(d), (s, d)), bits)
            W_o = _dyadic(rng.normal(0, 1.0 / math.sqrt(s), (d, s)), bits)
            hs.append(Head(W_q, W_k, W_v, W_o))
        W_1 = rng.normal(0, 1.0, (r, d))
        W_2 = rng.normal(0, 1.0, (d, r))
        b_1 = _dyadic(rng.normal(0, 0.5, r), bits)
        b_2 = _dyadic(rng.normal(0, 0.1, d), bits)
        # scale both to the target contraction using the cheap exact bound, then make dyadic and
        # re-check (rounding can only be compensated by shrinking a little more)
        n1 = math.sqrt(np.abs(W_1).sum(0).max() * np.abs(W_1).sum(1).max())
        n2 = math.sqrt(np.abs(W_2).sum(0).max() * np.abs(W_2).sum(1).max())
        c = math.sqrt(mlp_contraction)
        fine = bits + 8 + int(math.log2(max(r, d)))
        W_1 = _dyadic(W_1 * (0.98 * c / n1), fine)
        W_2 = _dyadic(W_2 * (0.98 * c / n2), fine)
        while cheap_norm_bound(W_1) * cheap_norm_bound(W_2) > Fraction(mlp_contraction):
            W_1 = _dyadic(W_1 * 0.99, fine)
        out_layers.append(Layer(kind, hs, W_1, b_1, W_2, b_2))
    return Model(d=d, layers=out_layers, causal=causal,
                 meta={"builder": "random_model", "seed": seed, "heads": heads, "head_size": s,
                       "mlp_width": r, "kind": kind, "zero_scores": zero_scores})


def random_tokens(rng: np.random.Generator, n: int, d: int, bits: int = 8, scale: float = 1.0) -> np.ndarray:
    return _dyadic(rng.normal(0, scale, (n, d)), bits)


# --------------------------------------------------------------------------- MLP helpers

def mlp_inverse_float(layer: Layer, y: np.ndarray, iters: int = 500) -> np.ndarray:
    """Fixed-point iteration z = y - F(z) (converges when the residual branch is a contraction),
    polished by a Newton step on the final activation pattern.  Always finite: where float64
    overflows (huge weights or tokens) the last finite iterate is returned (at worst y itself);
    it is only a proposal, which exact arithmetic then checks."""
    W1, b1, W2, b2 = (as_float(a) for a in (layer.W_1, layer.b_1, layer.W_2, layer.b_2))
    y = np.asarray(y, dtype=np.float64)
    z = y.copy()
    with np.errstate(all="ignore"):
        for _ in range(iters):
            zn = y - W2 @ np.maximum(W1 @ z + b1, 0) - b2
            if not np.all(np.isfinite(zn)):
                break
            if np.max(np.abs(zn - z)) <= 1e-15 * (1 + np.max(np.abs(z))):
                z = zn
                break
            z = zn
        act = (W1 @ z + b1) > 0
        A = np.eye(len(y)) + W2[:, act] @ W1[act]
        rhs = y - b2 - W2[:, act] @ b1[act]
        try:
            z2 = np.linalg.solve(A, rhs)
            if np.all(np.isfinite(z2)) and np.all(((W1 @ z2 + b1) > 0) == act):
                z = z2
        except np.linalg.LinAlgError:
            pass
    return z if np.all(np.isfinite(z)) else np.where(np.isfinite(y), y, 0.0)


def head_parts_float(model: Model, layer_index: int = 0):
    """Per head: (W_q, W_k, W_v, W_o, M = W_o W_v) as float arrays."""
    out = []
    for h in model.layers[layer_index].heads:
        Wq, Wk, Wv, Wo = (as_float(w) for w in (h.W_q, h.W_k, h.W_v, h.W_o))
        out.append((Wq, Wk, Wv, Wo, Wo @ Wv))
    return out


def _head_parts(model: Model, layer_index: int = 0):
    """Per head: (W_q, W_k, W_v, W_o) as float arrays (no product)."""
    return [tuple(as_float(w) for w in (h.W_q, h.W_k, h.W_v, h.W_o)) for h in model.layers[layer_index].heads]


def _rational_vector(v: np.ndarray, den: int) -> np.ndarray:
    return np.array([Fraction(round(float(x) * den), den) for x in v], dtype=object)


# --------------------------------------------------------------------------- datasets

def _l1_head_targets(parts: tuple, xs: np.ndarray, x0: np.ndarray, examples: int, margin: float,
                     rng: np.random.Generator) -> list[np.ndarray]:
    """One head's float targets gamma_i (head coordinates) for the examples [x_i, x_0] of
    :func:`l1_dataset`: the first two pointed apart along the direction between the head outputs
    A_0, A_1 (by ``margin`` each), any further ones random around A_i."""
    Wq, Wk, Wv = parts[:3]
    A = []
    for i in range(examples):
        X = np.stack([xs[i], x0])
        sc = X @ Wk.T @ (Wq @ x0)
        w = np.exp(sc - sc.max())
        w /= w.sum()
        A.append((w @ X) @ Wv.T)  # head output in head coordinates (before W_o)
    s = Wv.shape[0]
    g = []
    if examples >= 2:
        diff = A[1] - A[0]
        nrm = np.linalg.norm(diff)
        if nrm > 1e-9:
            u = diff / nrm
        else:
            u = rng.normal(size=s)
            u /= np.linalg.norm(u)
        g.append(A[0] - margin * u)
        g.append(A[1] + margin * u)
    for i in range(len(g), examples):
        g.append(A[i] + rng.normal(0, max(margin, 0.25), s))
    return g


def l1_dataset(model: Model, seed: int = 0, margin: float = 0.5, examples: Optional[int] = None,
               grid: int = 1 << 10) -> Dataset:
    """The dataset of Theorem L1 for a single-layer model: K examples [x_i, x_0] sharing x_0.

    Targets at x_0 are y_i0 = MLP(x_0 + c_i), exact rationals, with c_i = sum_j W_o^j gamma_i^j.
    For K = 2, in each head the two rays gamma_i + Cone(gamma_i - A_i) (A_i the head output
    without a prompt, in head coordinates) are pointed apart along a unit direction u, separated
    by at least 2 * margin.  For K > 2 (heads whose output spaces overlap) the extra examples get
    random head targets, so K d equations outnumber the sum_j (rank(W_o^j W_v^j) + 1) unknowns.
    The outputs at the x_i positions are null (unconstrained), which only strengthens the claim."""
    if len(model.layers) != 1:
        raise ValueError("l1_dataset needs a single-layer model")
    layer = model.layers[0]
    d = model.d
    rng = np.random.default_rng(10_000 + seed)
    if examples is None:
        examples = required_examples(model)
    toks = random_tokens(rng, examples + 1, d)
    x0, xs = toks[0], toks[1:]
    gqs = [[_rational_vector(gi, grid) for gi in _l1_head_targets(parts, xs, x0, examples, margin, rng)]
           for parts in _head_parts(model)]
    if all(h.W_o.dtype == np.float64 for h in layer.heads):
        # c_i = sum_j W_o^j gamma_i^j = [W_o^1 ... W_o^h] [gamma_i^1; ...; gamma_i^h], exactly
        Wo_all = IntMatrix(np.concatenate([h.W_o for h in layer.heads], axis=1))
        c = [np.array(Wo_all.mv([v for gq in gqs for v in gq[i]]), dtype=object) for i in range(examples)]
    else:
        c = [np.zeros(d, dtype=object) for _ in range(examples)]
        for hj, gq in enumerate(gqs):
            Wo_int = IntMatrix(layer.heads[hj].W_o)  # exact
            for i in range(examples):
                c[i] = c[i] + np.array(Wo_int.mv(list(gq[i])), dtype=object)
    x0q = as_fraction(x0)
    scaled = (IntMatrix(layer.W_1), IntMatrix(layer.W_2))
    exs = [Example(input=np.stack([xs[i], x0]), output=[None, mlp_exact(layer, x0q + c[i], scaled)])
           for i in range(examples)]
    return Dataset(exs, meta={"builder": "l1_dataset", "seed": seed, "margin": margin, "examples": examples})


def required_examples(model: Model) -> int:
    """K for the L1 dataset: 2 when the head output spaces form a direct sum, else the least K
    with K d > sum_j (rank(W_o^j W_v^j) + 1)."""
    parts = _head_parts(model)
    Wo_all = np.concatenate([p[3] for p in parts], axis=1)
    d = model.d
    if Wo_all.shape[1] == d:
        sign, logdet = np.linalg.slogdet(Wo_all)   # |logdet| grows like d log d: no bound on it
        if sign != 0 and np.isfinite(logdet):
            return 2
    if Wo_all.shape[1] < d and np.linalg.matrix_rank(Wo_all) == Wo_all.shape[1]:
        return 2
    unknowns = sum(int(np.linalg.matrix_rank(p[3] @ p[2])) + 1 for p in parts)
    return int(max(2, unknowns // d + 1))


def l3_dataset(model: Model, seed: int = 0, examples: int = 1, margin: float = 0.5,
               grid: int = 1 << 10) -> Dataset:
    """Theorem L3: targets whose attention part leaves V = sum_j col(W_o^j W_v^j) (needs h s < d).

    y = MLP(x + v + margin * n) with v in V and n a unit-ish rational vector with n not in V."""
    layer = model.layers[0]
    d = model.d
    rng = np.random.default_rng(20_000 + seed)
    Ms = np.concatenate([p[4] for p in head_parts_float(model)], axis=1)
    U, S, _ = np.linalg.svd(Ms)
    rank = int((S > 1e-10 * max(1.0, S.max(initial=0))).sum())
    if rank >= d:
        raise ValueError(f"the attention subspace V is all of R^{d} (rank {rank}); no off-subspace target exists")
    n = U[:, rank:] @ rng.normal(size=d - rank)
    n /= np.linalg.norm(n)
    exs = []
    for i in range(examples):
        x = random_tokens(rng, 2, d)
        v = Ms @ rng.normal(0, 0.3, Ms.shape[1])
        z = as_fraction(x[1]) + _rational_vector(v + margin * n, grid)
        exs.append(Example(input=x, output=[None, mlp_exact(layer, z)]))
    return Dataset(exs, meta={"builder": "l3_dataset", "seed": seed, "margin": margin})


def planted_dataset(model: Model, prompt: Optional[np.ndarray] = None, seed: int = 0, examples: int = 2,
                    length: int = 2, prompt_length: int = 1, shared: bool = True, exact: Optional[bool] = None) -> tuple[Dataset, np.ndarray]:
    """A dataset produced by a known prompt, so it is memorizable by construction.

    With ``shared`` the examples share their last token (as in L1).  Outputs are exact rationals
    when the forward pass is exact (hardmax or zero-score heads), else float64 values (then the
    dataset is memorized only up to rounding).  Returns (dataset, prompt)."""
    rng = np.random.default_rng(30_000 + seed)
    d = model.d
    if prompt is None:
        prompt = random_tokens(rng, prompt_length, d)
    shared_tok = random_tokens(rng, 1, d)[0]
    exs = []
    for i in range(examples):
        X = random_tokens(rng, length, d)
        if shared:
            X[-1] = shared_tok
        enc = forward_exact(model, X, prompt)
        if all(v.is_point for v in enc.reshape(-1)) and exact is not False:
            Y = [np.array([v.lo for v in row], dtype=object) for row in enc]
        else:
            Yf = forward_torch(model, X, prompt).numpy()
            Y = [row.copy() for row in Yf]
        exs.append(Example(input=X, output=Y))
    return Dataset(exs, meta={"builder": "planted_dataset", "seed": seed, "prompt_length": len(prompt)}), prompt


def prop_e_dataset(model: Model, alpha: Fraction, seed: int = 0, examples: int = 2) -> Dataset:
    """Proposition E, zero-score case: K examples [x_i, x_0] sharing x_0 whose x_0 targets are what
    a prompt with alpha = Z_P(x_0) = ``alpha`` and prompt sum pi would give.  The model's single head
    must have zero scores (W_k^T W_q = 0), so every prompt of length m_p has alpha = m_p: the dataset
    is memorized (by m_p = alpha tokens) exactly when alpha is a positive integer."""
    layer = model.layers[0]
    if len(layer.heads) != 1:
        raise ValueError("prop_e_dataset needs a single-head layer")
    h = layer.heads[0]
    if np.any(as_float(h.W_k).T @ as_float(h.W_q)):
        raise ValueError("prop_e_dataset needs a zero-score head (W_k^T W_q = 0)")
    rng = np.random.default_rng(40_000 + seed)
    d = model.d
    alpha = Fraction(alpha)
    M = as_fraction(h.W_o).dot(as_fraction(h.W_v))
    toks = random_tokens(rng, examples + 1, d)
    x0 = as_fraction(toks[0])
    pi = as_fraction(random_tokens(rng, 1, d)[0])
    exs = []
    for i in range(examples):
        X = np.stack([toks[i + 1], toks[0]])
        tot = as_fraction(X[0]) + x0
        c = M.dot(tot + pi) / (2 + alpha)
        exs.append(Example(input=X, output=[None, mlp_exact(layer, x0 + c)]))
    return Dataset(exs, meta={"builder": "prop_e_dataset", "alpha": str(alpha), "seed": seed})


def long_prompt_dataset(model: Model, prompt_length: int = 4, seed: int = 0, examples: int = 2,
                        scale: float = 0.3) -> tuple[Dataset, np.ndarray]:
    """Planted at the shared token only: K examples [x_i, x_0] whose x_0 outputs are produced (in
    float64) by a prompt of ``prompt_length`` distinct tokens; the x_i outputs are unconstrained.

    The prompt's softmax weights at x_0 have entropy H > 0, which shorter prompts cannot reproduce
    when R pins (alpha, pi): the fixed-length claims K < H-ish are provable while the any-length
    one is not (proofs/prop_E.md)."""
    rng = np.random.default_rng(50_000 + seed)
    P = random_tokens(rng, prompt_length, model.d, scale=scale)
    ds, _ = planted_dataset(model, prompt=P, seed=seed, examples=examples, exact=False)
    for e in ds.examples:
        e.output = [None] * (len(e.output) - 1) + [e.output[-1]]
    ds.meta = {"builder": "long_prompt_dataset", "seed": seed, "prompt_length": prompt_length}
    return ds, P
