"""Datasets for imported real layers (docs/real_models.md): token vectors taken from the model's
own embedding tables, and the L1-shaped pair whose targets are reached by real prompts.

* Token vectors: BERT family ``LN_emb(word[id] + position[p] + token_type[t])`` (the embedding
  LayerNorm of the checkpoint), GPT-2 family ``wte[id] + wpe[p]``, computed in float64 from the
  stored (exact) weights.  Input tokens take positions ``0, 1, ...``; prompt rows are prepended at
  the layer input as vectors, so a prompt made of vocabulary tokens takes positions ``0, 1, ...``
  of its own.
* The pair (:func:`l1_pair`): two sequences ``[a, q]`` and ``[b, q]`` sharing the query token
  ``q`` at the same position (so the same vector there), with ``"at": "attention"`` targets at
  ``q`` only.  Example 1's target is what prompt ``P_1`` produces on it, example 2's what a
  different prompt ``P_2`` produces: each target alone is reached by a prompt of vocabulary-token
  vectors (its *witness prompt*, kept in the dataset's ``meta.pair.witness_prompts``), while the
  question is whether ONE prompt reaches both.

The attention site (:func:`attention_site`) is ``LN1(x + Att(X))`` for a post-LN layer and the
residual ``x + Att(LN1(X))`` (pre-LN) or ``x + Att(X)`` (no norm), in float64; the targets hold
those float64 values (a witness replays them within a small tolerance, never exactly).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .forward import forward_float, layer_norm_float
from .hf_import import FAMILIES, StateDict, detect_family, find_prefix, open_state_dict, read_config
from .model import Dataset, Example, InputError, Layer, LayerNorm, Model

__all__ = ["Embeddings", "embeddings_from_state_dict", "load_embeddings", "layer_norm", "attention_site",
           "l1_pair", "witness_prompts", "DEFAULT_PAIR_TOKENS", "DEFAULT_PROMPT_TOKENS", "parse_pair_tokens",
           "parse_prompt_tokens", "replay_witnesses", "record_replay"]

#: defaults of :func:`l1_pair` per family: ``(a, b, q)`` and the two prompts (bert-base-uncased /
#: MiniLM vocabulary: "good", "bad", "movie"; prompts "great" and "terrible"; the GPT-2 ids are meant
#: as the same words with a leading space in GPT-2's BPE vocabulary, not read from a tokenizer)
DEFAULT_PAIR_TOKENS = {"bert": (2204, 2919, 3185), "gpt2": (922, 2089, 3807)}
DEFAULT_PROMPT_TOKENS = {"bert": ((2307,), (6659,)), "gpt2": ((1049,), (7818,))}


# --------------------------------------------------------------------------- embeddings

@dataclass
class Embeddings:
    """A checkpoint's token embedding tables (float64, exact copies of the stored weights)."""
    family: str
    word: np.ndarray                        # (V, d)
    position: np.ndarray                    # (P, d)
    token_type: Optional[np.ndarray] = None  # (T, d), BERT family
    ln: Optional[LayerNorm] = None           # the embedding LayerNorm, BERT family

    @property
    def d(self) -> int:
        return self.word.shape[1]

    @property
    def vocab_size(self) -> int:
        return self.word.shape[0]

    def vectors(self, ids: Sequence[int], first_position: int = 0, token_type: int = 0,
                fld: str = "tokens") -> np.ndarray:
        """The rows (m, d) of the tokens ``ids`` at positions ``first_position, ...``."""
        ids = list(ids)
        bad = [t for t in ids if not isinstance(t, (int, np.integer)) or not 0 <= t < self.vocab_size]
        if not ids or bad:
            raise InputError(fld, f"token ids in 0..{self.vocab_size - 1}", repr(bad[:3] if bad else ids)[:60])
        pos = np.arange(first_position, first_position + len(ids))
        if pos[-1] >= self.position.shape[0]:
            raise InputError(fld, f"at most {self.position.shape[0]} positions", f"{pos[-1] + 1}")
        X = self.word[ids] + self.position[pos]
        if self.token_type is not None:
            if not 0 <= token_type < self.token_type.shape[0]:
                raise InputError("token_type", f"0..{self.token_type.shape[0] - 1}", repr(token_type))
            X = X + self.token_type[token_type]
        if self.ln is not None:
            X = layer_norm(X, self.ln)
        return np.ascontiguousarray(X, dtype=np.float64)


def embeddings_from_state_dict(sd: StateDict, family: Optional[str] = None, config: Optional[dict] = None) -> Embeddings:
    keys = sd.keys()
    family = family or detect_family(keys)
    if family not in FAMILIES:
        raise InputError("--family", " or ".join(FAMILIES), repr(family)[:40])
    prefix = find_prefix(keys, family)
    config = config or {}
    if family == "bert":
        p = f"{prefix}embeddings."
        word = sd.get(f"{p}word_embeddings.weight")
        if word.ndim != 2:
            raise InputError(f"{p}word_embeddings.weight", "a (V, d) matrix", f"shape {tuple(word.shape)}")
        d = word.shape[1]
        pos = sd.get(f"{p}position_embeddings.weight")
        if pos.ndim != 2 or pos.shape[1] != d:
            raise InputError(f"{p}position_embeddings.weight", f"a (P, {d}) matrix", f"shape {tuple(pos.shape)}")
        tt = sd.get(f"{p}token_type_embeddings.weight") if f"{p}token_type_embeddings.weight" in sd else None
        if tt is not None and (tt.ndim != 2 or tt.shape[1] != d):
            raise InputError(f"{p}token_type_embeddings.weight", f"a (T, {d}) matrix", f"shape {tuple(tt.shape)}")
        w, b = ((f"{p}LayerNorm.weight", f"{p}LayerNorm.bias") if f"{p}LayerNorm.weight" in sd
                else (f"{p}LayerNorm.gamma", f"{p}LayerNorm.beta"))
        eps = float(config.get("layer_norm_eps", 1e-12))
        return Embeddings("bert", word, pos, tt, LayerNorm(sd.get(w, (d,)), sd.get(b, (d,)), eps))
    word = sd.get(f"{prefix}wte.weight")
    if word.ndim != 2:
        raise InputError(f"{prefix}wte.weight", "a (V, d) matrix", f"shape {tuple(word.shape)}")
    pos = sd.get(f"{prefix}wpe.weight")
    if pos.ndim != 2 or pos.shape[1] != word.shape[1]:
        raise InputError(f"{prefix}wpe.weight", f"a (P, {word.shape[1]}) matrix", f"shape {tuple(pos.shape)}")
    return Embeddings("gpt2", word, pos)


def load_embeddings(weights: str, family: Optional[str] = None, config_path: Optional[str] = None) -> Embeddings:
    return embeddings_from_state_dict(open_state_dict(weights), family, read_config(weights, config_path))


# --------------------------------------------------------------------------- float64 attention site

def layer_norm(U: np.ndarray, ln: LayerNorm) -> np.ndarray:
    """Row-wise ``gamma * (u - mean u) / sqrt(var u + eps) + beta`` (biased variance), float64."""
    return layer_norm_float(ln, U)


def attention_site(layer: Layer, X: np.ndarray, prompt: Optional[np.ndarray] = None, causal: bool = False) -> np.ndarray:
    """The ``"at": "attention"`` values (float64) at the rows of ``X`` when ``prompt`` is prepended:
    ``LN1(x + Att)`` (post-LN), ``x + Att(LN1(.))`` (pre-LN) or ``x + Att`` (no norm)
    (:func:`constructions.forward.forward_float` of the one layer)."""
    X = np.asarray(X, dtype=np.float64)
    P = None if prompt is None else np.asarray(prompt, dtype=np.float64).reshape(-1, X.shape[1])
    return forward_float(Model(X.shape[1], [layer], causal=causal), X, P, at="attention")


# --------------------------------------------------------------------------- the L1-shaped pair

def parse_pair_tokens(text: str) -> tuple[int, int, int]:
    """``"A,B,Q"``: the leading tokens of the two examples and their shared query token."""
    try:
        ids = tuple(int(t) for t in str(text).split(","))
    except ValueError:
        ids = ()
    if len(ids) != 3 or min(ids) < 0:
        raise InputError("--pair-tokens", "three token ids A,B,Q (examples [A, Q] and [B, Q])", repr(text)[:60])
    return ids


def parse_prompt_tokens(text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``"P1:P2"``, each a comma-separated list of token ids (the two witness prompts)."""
    try:
        parts = str(text).split(":")
        prompts = tuple(tuple(int(t) for t in p.split(",")) for p in parts)
    except ValueError:
        prompts = ()
    if len(prompts) != 2 or any(not p or min(p) < 0 for p in prompts):
        raise InputError("--prompt-tokens", "two prompts P1:P2 of comma-separated token ids (e.g. 2307:6659,2003)",
                         repr(text)[:60])
    return prompts


def l1_pair(model: Model, emb: Embeddings, pair_tokens: Optional[Sequence[int]] = None,
            prompt_tokens: Optional[Sequence[Sequence[int]]] = None) -> Dataset:
    """The pair ``{([a, q], h_1), ([b, q], h_2)}`` on a one-layer model, ``"at": "attention"``,
    targets at ``q`` only: ``h_i`` = the attention site of ``q`` under prompt ``P_i`` (vocabulary
    token vectors), ``P_1 != P_2``.  ``meta.pair`` records the token ids and the witness prompts."""
    if len(model.layers) != 1:
        raise InputError("--layers", "one layer for a real-layer dataset (its targets are at that layer's attention "
                         "block)", f"{len(model.layers)} layers")
    if emb.d != model.d:
        raise InputError("embeddings", f"vectors of size d = {model.d}", f"size {emb.d}")
    a, b, q = tuple(pair_tokens if pair_tokens is not None else DEFAULT_PAIR_TOKENS[emb.family])
    if a == b:
        raise InputError("--pair-tokens", "two different leading tokens A != B (else the examples coincide)",
                         f"{a},{b},{q}")
    p1, p2 = (tuple(p) for p in (prompt_tokens if prompt_tokens is not None else DEFAULT_PROMPT_TOKENS[emb.family]))
    if p1 == p2:
        raise InputError("--prompt-tokens", "two different prompts", f"{list(p1)} twice")
    inputs = [emb.vectors([a, q], fld="--pair-tokens"), emb.vectors([b, q], fld="--pair-tokens")]
    prompts = [emb.vectors(p1, fld="--prompt-tokens"), emb.vectors(p2, fld="--prompt-tokens")]
    layer = model.layers[0]
    examples = [Example(X, [None, attention_site(layer, X, P, model.causal)[1]]) for X, P in zip(inputs, prompts)]
    meta = {"pair": {"family": emb.family, "tokens": [[a, q], [b, q]], "query_position": 1,
                     "witness_tokens": [list(p1), list(p2)],
                     "witness_prompts": [P.tolist() for P in prompts],
                     "note": "target i is the float64 attention site of example i under witness prompt i"}}
    if isinstance(model.meta.get("import"), dict):
        meta["pair"]["model"] = dict(model.meta["import"])
    return Dataset(examples, meta=meta, at="attention")


def witness_prompts(ds: Dataset) -> list[np.ndarray]:
    """The witness prompt of each example of a :func:`l1_pair` dataset, as float64 arrays."""
    pair = ds.meta.get("pair") if isinstance(ds.meta, dict) else None
    prompts = pair.get("witness_prompts") if isinstance(pair, dict) else None
    if not isinstance(prompts, list) or len(prompts) != len(ds.examples):
        raise InputError("meta.pair.witness_prompts", "one prompt per example", repr(prompts)[:60])
    return [np.asarray(p, dtype=np.float64).reshape(-1, ds.d) for p in prompts]


def replay_witnesses(model: Model, ds: Dataset, backend: str = "auto") -> list:
    """For each example, a rigorous upper bound (a Fraction) on ``max |site - target|`` when its
    own witness prompt is prepended (:func:`constructions.realforward.replay_bound`, Arb balls
    when python-flint is installed, exact rationals otherwise)."""
    from .realforward import replay_bound
    return [replay_bound(model, ex.input, P, ex.output, at=ds.at, backend=backend)
            for ex, P in zip(ds.examples, witness_prompts(ds))]


def record_replay(ds: Dataset, bounds: Sequence) -> None:
    """Keep the replay bounds in ``meta.pair.witness_replay_bounds`` (floats rounded up)."""
    import math
    ds.meta["pair"]["witness_replay_bounds"] = [math.nextafter(float(b), math.inf) for b in bounds]
