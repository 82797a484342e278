"""A float64 forward pass up to the attention block of one real (``ptverify-model/2``) layer.

Used to find certificates and to build test instances, never as evidence: the trusted checker
re-derives every quantity a verdict rests on.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from constructions.model import INV_SQRT_HEAD_SIZE, Layer, as_float

__all__ = ["FloatLayer", "layer_norm", "attention_site", "pre_norm_sum"]


class FloatLayer:
    """The float64 arrays of a layer's attention block (missing biases as zeros)."""

    def __init__(self, layer: Layer, d: int):
        self.kind, self.norm = layer.kind, layer.norm
        self.heads = []
        for h in layer.heads:
            s = h.W_q.shape[0]
            z = np.zeros(s)
            self.heads.append({"W_q": as_float(h.W_q), "W_k": as_float(h.W_k), "W_v": as_float(h.W_v),
                               "W_o": as_float(h.W_o),
                               "b_q": z if h.b_q is None else as_float(np.asarray(h.b_q)),
                               "b_k": z if h.b_k is None else as_float(np.asarray(h.b_k)),
                               "b_v": z if h.b_v is None else as_float(np.asarray(h.b_v))})
        self.b_o = np.zeros(d) if layer.b_o is None else as_float(np.asarray(layer.b_o))
        s = self.heads[0]["W_q"].shape[0]
        self.scale = 1.0 / math.sqrt(s) if isinstance(layer.scale, str) and layer.scale == INV_SQRT_HEAD_SIZE \
            else float(layer.scale)
        self.ln1: Optional[tuple] = None
        if layer.norm is not None:
            ln = layer.ln1
            self.ln1 = (as_float(np.asarray(ln.gamma)), as_float(np.asarray(ln.beta)), float(ln.eps))

    def reads(self, S: np.ndarray) -> np.ndarray:
        """What the attention reads of the rows S: LN1(S) with a pre-LayerNorm, else S."""
        return layer_norm(S, *self.ln1) if self.norm == "pre" else S


def layer_norm(S: np.ndarray, gamma, beta, eps) -> np.ndarray:
    mu = S.mean(axis=-1, keepdims=True)
    var = ((S - mu) ** 2).mean(axis=-1, keepdims=True)
    return gamma * (S - mu) / np.sqrt(var + eps) + beta


def attention_site(fl: FloatLayer, X: np.ndarray, prompt: Optional[np.ndarray], causal: bool = False) -> np.ndarray:
    """The "at": "attention" outputs of the input rows X (m, d) with ``prompt`` (m_p, d) prepended:
    post-LN ``LN1(x + Att)``, otherwise the residual ``x + Att`` (Att reads LN1 with pre-LN)."""
    U = pre_norm_sum(fl, X, prompt, causal)
    return layer_norm(U, *fl.ln1) if fl.norm == "post" else U


def pre_norm_sum(fl: FloatLayer, X: np.ndarray, prompt: Optional[np.ndarray], causal: bool = False) -> np.ndarray:
    """``u = x + b_o + sum_j W_o^j head_j`` at every input row of X with ``prompt`` prepended: the
    input of LN1 post-LN, the residual (the attention site) otherwise."""
    X = np.asarray(X, dtype=np.float64)
    P = np.zeros((0, X.shape[1])) if prompt is None else np.asarray(prompt, dtype=np.float64)
    S = np.vstack([P, X])
    R = fl.reads(S)
    n, mp = S.shape[0], P.shape[0]
    att = np.tile(fl.b_o, (X.shape[0], 1))
    for h in fl.heads:
        Q = R @ h["W_q"].T + h["b_q"]
        K = R @ h["W_k"].T + h["b_k"]
        V = R @ h["W_v"].T + h["b_v"]
        sc = fl.scale * (Q[mp:] @ K.T)
        if causal:
            mask = np.arange(n)[None, :] > np.arange(mp, n)[:, None]
            sc = np.where(mask, -np.inf, sc)
        if fl.kind == "hardmax":
            top = sc >= sc.max(axis=1, keepdims=True)
            w = top / top.sum(axis=1, keepdims=True)
        else:
            w = np.exp(sc - sc.max(axis=1, keepdims=True))
            w /= w.sum(axis=1, keepdims=True)
        att += (w @ V) @ h["W_o"].T
    return X + att
