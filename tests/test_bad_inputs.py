"""Every kind of bad input to every command: exit 2, one line naming the field, nothing written.

One table, run in-process through ``verify.cli.main`` in a fresh folder per case.  Each row is
(name, files to create, command line, a substring the message must contain, normally the field).
Asserted for every row: exit code 2 (never 1 or 3), standard error is exactly one line starting
``ptverify: error:`` and naming the field, no traceback, and no file or folder appears in the
folder beyond the ones the case created (so a ``--json``, ``--out`` or side-file target never
appears).  The options' limits are those of docs/formats.md ("Limits").
"""
from __future__ import annotations

import io
import json
import os
import struct
import zipfile

import numpy as np
import pytest

from verify.cli import main

# --------------------------------------------------------------------------- good files

I2 = [[1, 0], [0, 1]]
HEAD = {"W_q": I2, "W_k": I2, "W_v": I2, "W_o": I2}
MLP = {"W_1": [[0.25, 0], [0, 0.25]], "b_1": [0, 0], "W_2": [[0.5, 0], [0, 0.5]], "b_2": [0, 0]}


def model(**over) -> dict:
    """A valid d = 2 single-layer model, with top-level fields replaced by ``over``."""
    m = {"format": "ptverify-model/1", "d": 2,
         "layers": [{"attention": {"kind": "softmax", "heads": [dict(HEAD)]}, "mlp": dict(MLP)}]}
    m.update(over)
    return m


def head(**over) -> dict:
    """A model whose only head has the arrays in ``over`` (None deletes one)."""
    h = dict(HEAD, **over)
    h = {k: v for k, v in h.items() if v is not None}
    return model(layers=[{"attention": {"kind": "softmax", "heads": [h]}, "mlp": dict(MLP)}])


def mlp(**over) -> dict:
    m = dict(MLP, **over)
    m = {k: v for k, v in m.items() if v is not None}
    return model(layers=[{"attention": {"kind": "softmax", "heads": [dict(HEAD)]}, "mlp": m}])


def layer(att=None, mlp_=None) -> dict:
    return model(layers=[{"attention": att if att is not None else {"kind": "softmax", "heads": [dict(HEAD)]},
                          "mlp": mlp_ if mlp_ is not None else dict(MLP)}])


LN = {"gamma": [1, 1], "beta": [0, 0], "eps": "1e-5"}


def v2(head_=None, att=None, mlp_=None, norm=None, fmt="ptverify-model/2") -> dict:
    """A valid d = 2 ``ptverify-model/2`` layer with the given fields added to its head, attention,
    MLP, and its ``norm`` (None: absent)."""
    lo = {"attention": {"kind": "softmax", "heads": [dict(HEAD, **(head_ or {}))], **(att or {})},
          "mlp": dict(MLP, **(mlp_ or {}))}
    if norm is not None:
        lo["norm"] = norm
    return model(format=fmt, layers=[lo])


def ln_norm(placement="post", **over) -> dict:
    """A ``norm`` object; ``ln1=`` / ``ln2=`` replace a LayerNorm (None deletes it)."""
    n = {"placement": placement, "ln1": dict(LN), "ln2": dict(LN), **over}
    return {k: v for k, v in n.items() if v is not None}


def data(*examples) -> dict:
    """A dataset; by default one example of two tokens of size 2."""
    exs = examples or ({"input": [[1, 0], [0, 1]], "output": [None, [3, 1]]},)
    return {"format": "ptverify-dataset/1", "examples": list(exs)}


TWO_LAYERS = model(causal=True, layers=model()["layers"] * 2)


def text_of(obj) -> str:
    return json.dumps(obj)


def npz(arrays: dict, header=None):
    """Writer of an .npz file; ``header`` (a JSON value) becomes the __header__ entry."""
    def write(path):
        a = dict(arrays)
        if header is not None:
            a["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        with open(path, "wb") as fh:
            np.savez(fh, **a)
    return write


NPZ_HEADER = {"format": "ptverify-model/1", "d": 2, "causal": False, "kinds": ["softmax"], "heads": [1]}
NPZ_HEADER_2 = dict(NPZ_HEADER, format="ptverify-model/2")


def npz_arrays(**over) -> dict:
    a = {f"layers.0.attention.heads.0.{k}": np.array(v, dtype=np.float64) for k, v in HEAD.items()}
    a.update({f"layers.0.mlp.{k}": np.array(v, dtype=np.float64) for k, v in MLP.items()})
    a.update({f"layers.0.attention.heads.0.{k}": v for k, v in over.items()})
    return a


def pickled_npz(path):
    a = npz_arrays()
    a["layers.0.attention.heads.0.W_q"] = np.array([[1, 0], [0, 1]], dtype=object)
    a["__header__"] = np.frombuffer(json.dumps(NPZ_HEADER).encode(), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **a)


def plain_zip(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "not an npz")


def result_with_side_file(path):
    """A result whose model lives in a side file that is not there."""
    obj = {"format": "ptverify-result/2", "claim": "check",
           "question": {"kind": "memorization", "prompt_length": "any", "tolerance": "0"},
           "status": "proved", "statement": "", "certificate": None, "info": {},
           "inputs": {"model": {"sha256": "0" * 64, "file": "gone.model.npz"},
                      "dataset": {"sha256": "0" * 64, "embedded": data()}}}
    with open(path, "w") as fh:
        json.dump(obj, fh)


def fifo(path):
    os.mkfifo(path)


def link_to(target):
    """Writer of a symbolic link to ``target`` (a name in the same folder)."""
    return lambda path: os.symlink(target, path)


def truncated_npz(path):
    buf = io.BytesIO()
    np.savez(buf, **npz_arrays(), __header__=np.frombuffer(json.dumps(NPZ_HEADER).encode(), dtype=np.uint8))
    with open(path, "wb") as fh:
        fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])


def manifest(*jobs) -> str:
    return "".join(json.dumps(j) + "\n" for j in jobs)


JOB = {"id": "a", "command": "check", "model": "M.json", "dataset": "D.json"}
DIR = object()        # a file entry that is a directory
DEEP = "[" * 100_000 + "]" * 100_000


def check(**files) -> list:
    return ["check", "--model", files.get("model", "M.json"), "--dataset", files.get("dataset", "D.json")]


GOOD = {"M.json": model(), "D.json": data()}
CHECK = ["check", "--model", "M.json", "--dataset", "D.json", "--json", "r.json"]
PROVE = ["prove", "limitation", "--json", "r.json"]
UNIV = ["universality", "--json", "r.json"]
BOUNDS = ["bounds", "--json", "r.json"]
ML = ["prove", "multilayer", "--layers", "2", "--d", "4", "--json", "r.json"]
EXP = ["experiment", "prompt-vs-lora", "--quick", "--out", "exp", "--json", "r.json"]
REPRO = ["reproduce", "--quick", "--out", "rep"]
BENCH = ["bench", "limitation", "--json", "r.json"]


def bad_model(obj_or_bytes, name="M.json") -> dict:
    return {name: obj_or_bytes, "D.json": data()}


def bad_data(obj_or_bytes) -> dict:
    return {"M.json": model(), "D.json": obj_or_bytes}


# (name, files, argv, what the message must contain)
CASES = [
    # ---- unreadable model files
    ("model-binary", bad_model(bytes(range(256)) * 4), CHECK, "--model"),
    ("model-non-utf8", bad_model(b'{"format": "ptverify-model/1", "d": 2, "x": "\xff\xfe\xe9"}'), CHECK, "--model"),
    ("model-utf16-bom", bad_model(text_of(model()).encode("utf-16")), CHECK, "--model"),
    ("model-empty", bad_model(b""), CHECK, "--model"),
    ("model-whitespace-only", bad_model(b"  \n\t "), CHECK, "--model"),
    ("model-is-a-directory", bad_model(DIR), CHECK, "--model"),
    ("model-missing", {"D.json": data()}, CHECK, "--model"),
    ("model-truncated-json", bad_model(text_of(model())[:-7]), CHECK, "--model"),
    ("model-deeply-nested", bad_model(DEEP), CHECK, "--model"),
    ("model-trailing-garbage", bad_model(text_of(model()) + " {}"), CHECK, "--model"),
    ("model-yaml-extension", {"M.yaml": model(), "D.json": data()},
     ["check", "--model", "M.yaml", "--dataset", "D.json"], "--model"),
    # ---- numbers
    ("d-400-digit-integer", bad_model(text_of(model()).replace('"d": 2', '"d": 1' + "0" * 399)), CHECK, "d"),
    ("weight-400-digit-integer", bad_model(text_of(model()).replace('"W_q": [[1, 0]', '"W_q": [[1' + "0" * 399 + ", 0]")),
     CHECK, "W_q[0][0]"),
    ("weight-1e400", bad_model(text_of(model()).replace('"W_q": [[1, 0]', '"W_q": [[1e400, 0]')), CHECK, "W_q[0][0]"),
    ("weight-NaN-literal", bad_model(text_of(model()).replace('"W_k": [[1, 0]', '"W_k": [[NaN, 0]')), CHECK, "W_k[0][0]"),
    ("weight-Infinity-literal", bad_model(text_of(model()).replace('"W_v": [[1, 0]', '"W_v": [[-Infinity, 0]')),
     CHECK, "W_v[0][0]"),
    ("weight-bool", head(W_q=[[True, 0], [0, 1]]), CHECK, "W_q[0][0]"),
    ("weight-null", head(W_q=[[None, 0], [0, 1]]), CHECK, "W_q[0][0]"),
    ("weight-bad-rational-string", head(W_o=[["1/0", 0], [0, 1]]), CHECK, "W_o[0][0]"),
    ("weight-huge-exponent-string", head(W_o=[["1e999999", 0], [0, 1]]), CHECK, "W_o[0][0]"),
    ("weight-object", head(W_k=[[{"v": 1}, 0], [0, 1]]), CHECK, "W_k[0][0]"),
    ("weight-string-underscore", head(W_o=[["1_0", 0], [0, 1]]), CHECK, "W_o[0][0]"),
    ("weight-string-non-ascii-digit", head(W_o=[["\u0663", 0], [0, 1]]), CHECK, "W_o[0][0]"),
    ("model-unknown-field", model(foo=1), CHECK, "foo"),
    ("model-misspelt-causal", model(casual=True), CHECK, "casual"),
    ("head-unknown-field", head(bias=[0, 0]), CHECK, "heads[0].bias"),
    ("mlp-unknown-field", mlp(b_3=[0, 0]), CHECK, "mlp.b_3"),
    ("model-meta-not-object", model(meta=5), CHECK, "meta"),
    # ---- model structure
    ("duplicate-key", bad_model('{"format": "ptverify-model/1", "d": 2, "d": 3, "layers": []}'), CHECK, "d"),
    ("wrong-format-string", model(format="ptverify-model/3"), CHECK, "format"),
    ("missing-format", {k: v for k, v in model().items() if k != "format"}, CHECK, "format"),
    ("missing-d", {k: v for k, v in model().items() if k != "d"}, CHECK, "d"),
    ("missing-layers", {k: v for k, v in model().items() if k != "layers"}, CHECK, "layers"),
    ("model-is-a-list", [model()], CHECK, "model"),
    ("d-bool", model(d=True), CHECK, "d"),
    ("d-string", model(d="2"), CHECK, "d"),
    ("d-negative", model(d=-2), CHECK, "d"),
    ("d-zero", model(d=0), CHECK, "d"),
    ("d-float", model(d=2.0), CHECK, "d"),
    ("d-beyond-limit", model(d=1 << 21), CHECK, "d"),
    ("causal-string", model(causal="yes"), CHECK, "causal"),
    ("zero-layers", model(layers=[]), CHECK, "layers"),
    ("layer-not-object", model(layers=[3]), CHECK, "layers[0]"),
    ("zero-heads", layer(att={"kind": "softmax", "heads": []}), CHECK, "layers[0].attention.heads"),
    ("attention-kind-foo", layer(att={"kind": "linear", "heads": [dict(HEAD)]}), CHECK, "layers[0].attention.kind"),
    ("head-not-object", layer(att={"kind": "softmax", "heads": [[1, 2]]}), CHECK, "layers[0].attention.heads[0]"),
    ("missing-W_q", head(W_q=None), CHECK, "layers[0].attention.heads[0].W_q"),
    ("W_q-string", head(W_q="identity"), CHECK, "layers[0].attention.heads[0].W_q"),
    ("W_q-vector", head(W_q=[1, 0]), CHECK, "layers[0].attention.heads[0].W_q"),
    ("W_q-ragged", head(W_q=[[1, 0], [1]]), CHECK, "layers[0].attention.heads[0].W_q"),
    ("W_q-not-s-by-d", head(W_q=[[1, 0, 0], [0, 1, 0]]), CHECK, "layers[0].attention.heads[0].W_q"),
    ("W_q-no-rows", head(W_q=[]), CHECK, "layers[0].attention.heads[0].W_q"),
    ("W_k-rows-differ", head(W_k=[[1, 0]]), CHECK, "layers[0].attention.heads[0].W_k"),
    ("W_o-output-width-not-d", head(W_o=[[1, 0], [0, 1], [0, 0]]), CHECK, "layers[0].attention.heads[0].W_o"),
    ("W_o-3d", head(W_o=[[[1], [0]], [[0], [1]]]), CHECK, "layers[0].attention.heads[0].W_o"),
    ("mlp-missing", layer(mlp_={}), CHECK, "layers[0].mlp"),
    ("mlp-width-0", mlp(W_1=[], W_2=[[], []], b_1=[]), CHECK, "layers[0].mlp.W_1"),
    ("mlp-b_1-length", mlp(b_1=[0, 0, 0]), CHECK, "layers[0].mlp.b_1"),
    ("mlp-W_2-shape", mlp(W_2=[[0.5, 0]]), CHECK, "layers[0].mlp.W_2"),
    ("mlp-b_2-matrix", mlp(b_2=[[0], [0]]), CHECK, "layers[0].mlp.b_2"),
    ("mlp-is-list", layer(mlp_=[1, 2]), CHECK, "layers[0].mlp"),
    # ---- ptverify-model/2 fields (real layers)
    ("v2-b_q-wrong-length", v2(head_={"b_q": [0, 0, 0]}), CHECK, "heads[0].b_q"),
    ("v2-b_k-bad-string", v2(head_={"b_k": ["x", 0]}), CHECK, "heads[0].b_k[0]"),
    ("v2-b_v-bool", v2(head_={"b_v": [True, 0]}), CHECK, "heads[0].b_v[0]"),
    ("v2-b_v-matrix", v2(head_={"b_v": [[0, 0]]}), CHECK, "heads[0].b_v"),
    ("v2-b_o-wrong-length", v2(att={"b_o": [0]}), CHECK, "attention.b_o"),
    ("v2-b_o-not-a-list", v2(att={"b_o": 0}), CHECK, "attention.b_o"),
    ("v2-scale-zero", v2(att={"scale": 0}), CHECK, "attention.scale"),
    ("v2-scale-negative", v2(att={"scale": "-1/2"}), CHECK, "attention.scale"),
    ("v2-scale-unknown-string", v2(att={"scale": "1/sqrt(d)"}), CHECK, "attention.scale"),
    ("v2-scale-bool", v2(att={"scale": True}), CHECK, "attention.scale"),
    ("v2-scale-null", v2(att={"scale": None}), CHECK, "attention.scale"),
    ("v2-attention-unknown-field", v2(att={"bias": [0, 0]}), CHECK, "attention.bias"),
    ("v2-activation-unknown", v2(mlp_={"activation": "tanh"}), CHECK, "mlp.activation"),
    ("v2-activation-number", v2(mlp_={"activation": 1}), CHECK, "mlp.activation"),
    ("v2-activation-wrong-case", v2(mlp_={"activation": "GELU"}), CHECK, "mlp.activation"),
    ("v2-norm-not-an-object", v2(norm="post"), CHECK, "layers[0].norm"),
    ("v2-norm-placement-unknown", v2(norm=ln_norm("middle")), CHECK, "norm.placement"),
    ("v2-norm-placement-missing", v2(norm=ln_norm(placement=None)), CHECK, "norm.placement"),
    ("v2-norm-ln2-missing", v2(norm=ln_norm(ln2=None)), CHECK, "norm.ln2"),
    ("v2-norm-unknown-field", v2(norm=ln_norm(ln3=dict(LN))), CHECK, "norm.ln3"),
    ("v2-ln-gamma-wrong-length", v2(norm=ln_norm(ln1=dict(LN, gamma=[1, 1, 1]))), CHECK, "norm.ln1.gamma"),
    ("v2-ln-beta-missing", v2(norm=ln_norm(ln2={"gamma": [1, 1], "eps": 1e-5})), CHECK, "norm.ln2.beta"),
    ("v2-ln-eps-zero", v2(norm=ln_norm(ln1=dict(LN, eps=0))), CHECK, "norm.ln1.eps"),
    ("v2-ln-eps-negative", v2(norm=ln_norm("pre", ln2=dict(LN, eps=-1e-5))), CHECK, "norm.ln2.eps"),
    ("v2-ln-eps-missing", v2(norm=ln_norm(ln2={"gamma": [1, 1], "beta": [0, 0]})), CHECK, "norm.ln2.eps"),
    ("v2-ln-eps-string", v2(norm=ln_norm(ln1=dict(LN, eps="tiny"))), CHECK, "norm.ln1.eps"),
    ("v2-ln-unknown-field", v2(norm=ln_norm(ln1=dict(LN, bias=[0, 0]))), CHECK, "norm.ln1.bias"),
    ("v1-with-head-bias", v2(head_={"b_q": [0, 0]}, fmt="ptverify-model/1"), CHECK, "heads[0].b_q"),
    ("v1-with-b_o", v2(att={"b_o": [0, 0]}, fmt="ptverify-model/1"), CHECK, "attention.b_o"),
    ("v1-with-scale", v2(att={"scale": 2}, fmt="ptverify-model/1"), CHECK, "attention.scale"),
    ("v1-with-activation", v2(mlp_={"activation": "gelu"}, fmt="ptverify-model/1"), CHECK, "mlp.activation"),
    ("v1-with-norm", v2(norm=ln_norm(), fmt="ptverify-model/1"), CHECK, "layers[0].norm"),
    ("dataset-at-unknown", bad_data(dict(data(), at="middle")), CHECK, "at"),
    ("dataset-at-number", bad_data(dict(data(), at=1)), CHECK, "at"),
    ("dataset-at-null", bad_data(dict(data(), at=None)), CHECK, "at"),
    ("npz-v2-member-under-v1-header",
     {"M.npz": npz(dict(npz_arrays(), **{"layers.0.attention.b_o": np.zeros(2)}), NPZ_HEADER), "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "layers.0.attention.b_o"),
    ("npz-v1-header-with-layers", {"M.npz": npz(npz_arrays(), dict(NPZ_HEADER, layers=[{}])), "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "__header__.layers"),
    ("npz-v2-header-layers-wrong-length", {"M.npz": npz(npz_arrays(), dict(NPZ_HEADER_2, layers=[{}, {}])),
                                           "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "__header__.layers"),
    ("npz-v2-header-unknown-layer-field", {"M.npz": npz(npz_arrays(), dict(NPZ_HEADER_2, layers=[{"gelu": 1}])),
                                           "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "__header__.layers[0].gelu"),
    ("npz-v2-bad-scale", {"M.npz": npz(npz_arrays(), dict(NPZ_HEADER_2, layers=[{"scale": -1}])), "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "attention.scale"),
    ("npz-v2-bad-activation", {"M.npz": npz(npz_arrays(), dict(NPZ_HEADER_2, layers=[{"activation": "elu"}])),
                               "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "mlp.activation"),
    ("npz-v2-norm-arrays-without-norm",
     {"M.npz": npz(dict(npz_arrays(), **{"layers.0.norm.ln1.gamma": np.ones(2), "layers.0.norm.ln1.beta": np.zeros(2)}),
                   NPZ_HEADER_2), "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "__header__.layers[0].norm"),
    ("npz-v2-norm-missing-gamma",
     {"M.npz": npz(dict(npz_arrays(), **{f"layers.0.norm.{ln}.beta": np.zeros(2) for ln in ("ln1", "ln2")},
                        **{"layers.0.norm.ln2.gamma": np.ones(2)}),
                   dict(NPZ_HEADER_2, layers=[{"norm": {"placement": "post", "ln1": {"eps": 1e-5},
                                                        "ln2": {"eps": 1e-5}}}])), "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "norm.ln1.gamma"),
    ("npz-v2-bias-wrong-shape",
     {"M.npz": npz(dict(npz_arrays(), **{"layers.0.attention.heads.0.b_k": np.zeros((2, 2))}), NPZ_HEADER_2),
      "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "heads[0].b_k"),
    ("npz-v2-eps-zero",
     {"M.npz": npz(dict(npz_arrays(), **{f"layers.0.norm.{ln}.{n}": np.ones(2) for ln in ("ln1", "ln2")
                                         for n in ("gamma", "beta")}),
                   dict(NPZ_HEADER_2, layers=[{"norm": {"placement": "pre", "ln1": {"eps": 1e-5},
                                                        "ln2": {"eps": 0}}}])), "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "norm.ln2.eps"),
    # ---- npz models
    ("npz-pickled-object-array", {"M.npz": pickled_npz, "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json", "--json", "r.json"], "W_q"),
    ("npz-list-header", {"M.npz": npz(npz_arrays(), header=[NPZ_HEADER]), "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "__header__"),
    ("npz-non-npz-zip", {"M.npz": plain_zip, "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "__header__"),
    ("npz-text-file", {"M.npz": b"hello", "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "--model"),
    ("npz-complex-dtype", {"M.npz": npz(npz_arrays(W_q=np.eye(2, dtype=np.complex128)), NPZ_HEADER), "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "W_q"),
    ("npz-string-dtype", {"M.npz": npz(npz_arrays(W_v=np.array([["1", "0"], ["0", "1"]])), NPZ_HEADER),
                          "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "W_v"),
    ("npz-float128", {"M.npz": npz(npz_arrays(W_k=np.eye(2, dtype=np.longdouble) / 3), NPZ_HEADER), "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "W_k"),
    ("npz-missing-array", {"M.npz": npz({k: v for k, v in npz_arrays().items() if not k.endswith("W_o")}, NPZ_HEADER),
                           "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "W_o"),
    ("npz-header-billion-heads", {"M.npz": npz(npz_arrays(), dict(NPZ_HEADER, heads=[10 ** 9])), "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "__header__"),
    ("npz-no-header", {"M.npz": npz(npz_arrays()), "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "__header__"),
    ("npz-extra-array", {"M.npz": npz(dict(npz_arrays(), **{"layers.0.mlp.b_3": np.zeros(2)}), NPZ_HEADER),
                         "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "layers.0.mlp.b_3"),
    ("npz-header-unknown-field", {"M.npz": npz(npz_arrays(), dict(NPZ_HEADER, casual=True)), "D.json": data()},
     ["check", "--model", "M.npz", "--dataset", "D.json"], "__header__.casual"),
    # ---- datasets
    ("dataset-binary", bad_data(b"\x00\x01\x02\x89PNG\r\n"), CHECK, "--dataset"),
    ("dataset-missing", {"M.json": model()}, CHECK, "--dataset"),
    ("dataset-is-a-directory", bad_data(DIR), CHECK, "--dataset"),
    ("dataset-duplicate-key", bad_data('{"format": "ptverify-dataset/1", "examples": [], "examples": []}'),
     CHECK, "examples"),
    ("dataset-wrong-format", bad_data(dict(data(), format="csv")), CHECK, "format"),
    ("dataset-unknown-field", bad_data(data() | {"exmaples": []}), CHECK, "exmaples"),
    ("dataset-meta-list", bad_data(data() | {"meta": []}), CHECK, "meta"),
    ("example-unknown-field", bad_data(data({"input": [[1, 0]], "output": [None], "weight": 2})), CHECK,
     "examples[0].weight"),
    ("dataset-empty", bad_data(data() | {"examples": []}), CHECK, "examples"),
    ("dataset-examples-object", bad_data(data() | {"examples": {"input": []}}), CHECK, "examples"),
    ("example-empty-input", bad_data(data({"input": [], "output": []})), CHECK, "examples[0].input"),
    ("example-not-object", bad_data(data([[1, 0]])), CHECK, "examples[0]"),
    ("output-longer-than-input", bad_data(data({"input": [[1, 0]], "output": [None, [1, 1]]})), CHECK,
     "examples[0].output"),
    ("output-missing", bad_data(data({"input": [[1, 0]]})), CHECK, "examples[0].output"),
    ("output-token-width", bad_data(data({"input": [[1, 0]], "output": [[1, 1, 1]]})), CHECK, "examples[0].output[0]"),
    ("input-width-not-model-d", bad_data(data({"input": [[1, 0, 0]], "output": [[1, 1, 1]]})), CHECK,
     "examples[0].input"),
    ("input-ragged", bad_data(data({"input": [[1, 0], [1]], "output": [None, None]})), CHECK, "examples[0].input"),
    ("input-width-differs-between-examples", bad_data(data({"input": [[1, 0]], "output": [[1, 1]]},
                                                          {"input": [[1, 0, 0]], "output": [[1, 1, 1]]})),
     CHECK, "examples[1].input"),
    ("multilayer-dataset-shape-mismatch", {"M.json": TWO_LAYERS, "D.json": data({"input": [[1, 0, 0]], "output": [[1, 1, 1]]})},
     CHECK, "examples[0].input"),
    # ---- check options
    ("tolerance-1e300", GOOD, CHECK + ["--tolerance", "1e300"], "--tolerance"),
    ("tolerance-negative", GOOD, CHECK + ["--tolerance", "-1"], "--tolerance"),
    ("tolerance-abc", GOOD, CHECK + ["--tolerance", "abc"], "--tolerance"),
    ("tolerance-nan", GOOD, CHECK + ["--tolerance", "nan"], "--tolerance"),
    ("tolerance-inf", GOOD, CHECK + ["--tolerance", "inf"], "--tolerance"),
    ("prompt-length-0", GOOD, CHECK + ["--prompt-length", "0"], "--prompt-length"),
    ("prompt-length-1e14", GOOD, CHECK + ["--prompt-length", "100000000000000"], "--prompt-length"),
    ("prompt-length-negative", GOOD, CHECK + ["--prompt-length", "-3"], "--prompt-length"),
    ("prompt-length-float", GOOD, CHECK + ["--prompt-length", "1.5"], "--prompt-length"),
    ("prompt-length-non-ascii-digit", GOOD, CHECK + ["--prompt-length", "\u0663"], "--prompt-length"),
    ("prompt-length-underscore", GOOD, CHECK + ["--prompt-length", "1_0"], "--prompt-length"),
    ("bench-heads-non-ascii-digit", {}, BENCH + ["--heads", "\u0663"], "--heads"),
    ("check-timeout-negative", GOOD, CHECK + ["--timeout", "-1"], "--timeout"),
    ("check-timeout-0", GOOD, CHECK + ["--timeout", "0"], "--timeout"),
    ("check-timeout-nan", GOOD, CHECK + ["--timeout", "nan"], "--timeout"),
    ("check-timeout-inf", GOOD, CHECK + ["--timeout", "inf"], "--timeout"),
    ("check-timeout-1e300", GOOD, CHECK + ["--timeout", "1e300"], "--timeout"),
    ("check-expect-provd", GOOD, CHECK + ["--expect", "provd"], "--expect"),
    ("prompt-norm-single-layer", GOOD, CHECK + ["--prompt-norm", "1"], "--prompt-norm"),
    ("prompt-norm-negative", {"M.json": TWO_LAYERS, "D.json": data()}, CHECK + ["--prompt-norm", "-1"], "--prompt-norm"),
    # ---- prove limitation
    ("prove-seed-negative", {}, PROVE + ["--seed", "-1"], "--seed"),
    ("prove-seed-huge", {}, PROVE + ["--seed", str(10 ** 30)], "--seed"),
    ("prove-d-0", {}, PROVE + ["--d", "0"], "--d"),
    ("prove-d-negative", {}, PROVE + ["--d", "-4"], "--d"),
    ("prove-d-100000", {}, PROVE + ["--d", "100000"], "--d"),
    ("prove-heads-0", {}, PROVE + ["--heads", "0"], "--heads"),
    ("prove-heads-huge", {}, PROVE + ["--heads", "100000"], "--heads"),
    ("prove-head-size-above-d", {}, PROVE + ["--d", "3", "--head-size", "4"], "--head-size"),
    ("prove-mlp-width-0", {}, PROVE + ["--mlp-width", "0"], "--mlp-width"),
    ("prove-mlp-width-huge", {}, PROVE + ["--mlp-width", str(10 ** 9)], "--mlp-width"),
    ("prove-too-many-weights", {}, PROVE + ["--d", "4096", "--heads", "256", "--head-size", "4096"], "2**28 weights"),
    ("prove-margin-negative", {}, PROVE + ["--margin", "-1"], "--margin"),
    ("prove-margin-nan", {}, PROVE + ["--margin", "nan"], "--margin"),
    ("prove-margin-inf", {}, PROVE + ["--margin", "inf"], "--margin"),
    ("prove-kind-foo", {}, PROVE + ["--kind", "foo"], "--kind"),
    ("prove-expect-provd", {}, PROVE + ["--expect", "provd"], "--expect"),
    ("prove-timeout-negative", {}, PROVE + ["--timeout", "-1"], "--timeout"),
    ("prove-timeout-0", {}, PROVE + ["--timeout", "0"], "--timeout"),
    ("prove-timeout-nan", {}, PROVE + ["--timeout", "nan"], "--timeout"),
    ("prove-timeout-inf", {}, PROVE + ["--timeout", "inf"], "--timeout"),
    ("prove-timeout-1e7", {}, PROVE + ["--timeout", "1e7"], "--timeout"),
    ("prove-save-model-yaml", {}, PROVE + ["--save-model", "m.yaml"], "--save-model"),
    ("prove-quiet-and-verbose", {}, PROVE + ["-q", "-v"], "-q/-v"),
    ("prove-self-contained-without-json", {}, ["prove", "limitation", "--self-contained"], "--self-contained"),
    # a folder that even root cannot write in (os.access says yes there)
    ("prove-json-under-proc", {}, ["prove", "limitation", "--json", "/proc/ptverify-x/r.json"], "--json"),
    ("reproduce-out-under-proc", {}, ["reproduce", "--quick", "--only", "L4L5", "--out", "/proc/ptverify-x"], "--out"),
    # ---- reproduce
    ("reproduce-only-empty", {}, REPRO + ["--only", ""], "--only"),
    ("reproduce-only-commas", {}, REPRO + ["--only", " , "], "--only"),
    ("reproduce-only-unknown", {}, REPRO + ["--only", "NOPE"], "--only"),
    ("reproduce-out-under-a-file", {"f": "x"}, ["reproduce", "--quick", "--only", "L4L5", "--out", "f/sub"], "--out"),
    ("reproduce-out-is-a-file", {"f": "x"}, ["reproduce", "--quick", "--only", "L4L5", "--out", "f"], "--out"),
    ("reproduce-seed-negative", {}, REPRO + ["--only", "L4L5", "--seed", "-1"], "--seed"),
    # ---- replay
    ("replay-missing", {}, ["replay", "nothing.json"], "RESULT"),
    ("replay-directory", {"r": DIR}, ["replay", "r"], "RESULT"),
    ("replay-binary", {"r.json": bytes(range(256))}, ["replay", "r.json"], "RESULT"),
    ("replay-not-a-result", {"r.json": {"hello": 1}}, ["replay", "r.json"], "format"),
    ("replay-a-model", {"r.json": model()}, ["replay", "r.json"], "format"),
    ("replay-json-list", {"r.json": [1, 2]}, ["replay", "r.json"], "format"),
    ("replay-deeply-nested", {"r.json": DEEP}, ["replay", "r.json"], "RESULT"),
    ("replay-side-file-missing", {"r.json": result_with_side_file}, ["replay", "r.json"], "gone.model.npz"),
    # ---- universality
    ("univ-eps-0", {}, UNIV + ["--eps", "0"], "--eps"),
    ("univ-eps-negative", {}, UNIV + ["--eps", "-0.25"], "--eps"),
    ("univ-eps-abc", {}, UNIV + ["--eps", "abc"], "--eps"),
    ("univ-eps-nan", {}, UNIV + ["--eps", "nan"], "--eps"),
    ("univ-eps-tiny", {}, UNIV + ["--eps", "1e-300"], "--eps"),
    ("univ-p-below-1", {}, UNIV + ["--p", "0.5"], "--p"),
    ("univ-p-inf", {}, UNIV + ["--p", "inf"], "--p"),
    ("univ-d-2-n-3", {}, UNIV + ["--d", "2", "--n", "3"], "--n"),
    ("univ-n-0", {}, UNIV + ["--n", "0"], "--n"),
    ("univ-d-0", {}, UNIV + ["--d", "0"], "--d"),
    ("univ-d-huge", {}, UNIV + ["--d", str(10 ** 9)], "--d"),
    ("univ-target-nope", {}, UNIV + ["--target", "nope"], "--target"),
    ("univ-temperature-0", {}, UNIV + ["--softmax-temperature", "0"], "--softmax-temperature"),
    ("univ-temperature-negative", {}, UNIV + ["--softmax-temperature", "-1/64"], "--softmax-temperature"),
    ("univ-temperature-abc", {}, UNIV + ["--softmax-temperature", "warm"], "--softmax-temperature"),
    ("univ-lipschitz-negative", {}, UNIV + ["--lipschitz", "-1"], "--lipschitz"),
    ("univ-delta-1", {}, UNIV + ["--delta", "1/1"], "--delta"),
    ("univ-delta-2", {}, UNIV + ["--delta", "2"], "--delta"),
    ("univ-samples-negative", {}, UNIV + ["--samples", "-1"], "--samples"),
    ("univ-samples-huge", {}, UNIV + ["--samples", str(10 ** 12)], "--samples"),
    ("univ-seed-negative", {}, UNIV + ["--seed", "-1"], "--seed"),
    ("univ-expect-provd", {}, UNIV + ["--expect", "provd"], "--expect"),
    ("univ-sweep-out-under-a-file", {"f": "x"}, ["universality", "--sweep", "--out", "f/sub"], "--out"),
    ("univ-sweep-with-json", {}, ["universality", "--sweep", "--out", "o", "--json", "r.json"], "--json"),
    ("univ-sweep-with-expect", {}, ["universality", "--sweep", "--out", "o", "--expect", "verified"], "--expect"),
    # ---- bounds
    ("bounds-d-0", {}, BOUNDS + ["--d", "0"], "--d"),
    ("bounds-m-0", {}, BOUNDS + ["--m", "0"], "--m"),
    ("bounds-examples-negative", {}, BOUNDS + ["--examples", "-2"], "--examples"),
    ("bounds-heads-0", {}, BOUNDS + ["--heads", "0"], "--heads"),
    ("bounds-head-size-0", {}, BOUNDS + ["--head-size", "0"], "--head-size"),
    ("bounds-mlp-width-0", {}, BOUNDS + ["--mlp-width", "0"], "--mlp-width"),
    ("bounds-d-huge", {}, BOUNDS + ["--d", str(10 ** 40)], "--d"),
    ("bounds-verify-d-huge", {}, BOUNDS + ["--verify", "--d", "100000"], "--d"),
    ("bounds-timeout-nan", {}, BOUNDS + ["--verify", "--timeout", "nan"], "--timeout"),
    ("bounds-seed-negative", {}, BOUNDS + ["--verify", "--seed", "-1"], "--seed"),
    ("bounds-model-missing", {}, BOUNDS + ["--model", "M.json"], "--model"),
    ("bounds-model-two-layers", {"M.json": TWO_LAYERS}, BOUNDS + ["--model", "M.json"], "--model"),
    ("bounds-model-bad-field", {"M.json": head(W_q="x")}, BOUNDS + ["--model", "M.json"], "W_q"),
    ("bounds-expect-provd", {}, BOUNDS + ["--expect", "provd"], "--expect"),
    ("bounds-model-and-d", {"M.json": model()}, BOUNDS + ["--model", "M.json", "--d", "5"], "--d"),
    ("bounds-model-and-mlp-width", {"M.json": model()}, BOUNDS + ["--mlp-width", "4", "--model", "M.json"],
     "--mlp-width"),
    # ---- experiment
    ("experiment-seed-negative", {}, EXP + ["--seed", "-1"], "--seed"),
    ("experiment-out-under-a-file", {"f": "x"}, ["experiment", "prompt-vs-lora", "--quick", "--out", "f/sub"], "--out"),
    ("experiment-expect-provd", {}, EXP + ["--expect", "provd"], "--expect"),
    # ---- prove multilayer
    ("multilayer-layers-0", {}, ML + ["--layers", "0"], "--layers"),
    ("multilayer-layers-huge", {}, ML + ["--layers", "1000000"], "--layers"),
    ("multilayer-condition-3", {}, ML + ["--condition", "3"], "--condition"),
    ("multilayer-prompt-norm-negative", {}, ML + ["--condition", "2", "--prompt-norm", "-1"], "--prompt-norm"),
    ("multilayer-prompt-norm-abc", {}, ML + ["--condition", "2", "--prompt-norm", "abc"], "--prompt-norm"),
    ("multilayer-prompt-norm-0", {}, ML + ["--condition", "2", "--prompt-norm", "0"], "--prompt-norm"),
    ("multilayer-d-0", {}, ML + ["--d", "0"], "--d"),
    ("multilayer-heads-0", {}, ML + ["--heads", "0"], "--heads"),
    ("multilayer-seed-negative", {}, ML + ["--seed", "-1"], "--seed"),
    ("multilayer-expect-provd", {}, ML + ["--expect", "provd"], "--expect"),
    # ---- bench
    ("bench-dims-0", {}, BENCH + ["--dims", "0"], "--dims"),
    ("bench-dims-abc", {}, BENCH + ["--dims", "a,b"], "--dims"),
    ("bench-dims-huge", {}, BENCH + ["--dims", "100000"], "--dims"),
    ("bench-heads-0", {}, BENCH + ["--heads", "0"], "--heads"),
    ("bench-naive-timeout-nan", {}, BENCH + ["--naive-timeout", "nan"], "--naive-timeout"),
    ("bench-naive-form-unknown", {}, BENCH + ["--naive-form", "SMTLIB2"], "--naive-form"),
    ("bench-prompt-length-0", {}, BENCH + ["--prompt-length", "0"], "--prompt-length"),
    ("bench-mlp-ratio-0", {}, BENCH + ["--mlp-ratio", "0"], "--mlp-ratio"),
    ("bench-seed-negative", {}, BENCH + ["--seed", "-1"], "--seed"),
    # ---- batch
    ("batch-manifest-empty", {"m.jsonl": b""}, ["batch", "m.jsonl", "--out", "o"], "MANIFEST"),
    ("batch-manifest-comments-only", {"m.jsonl": b"# nothing\n\n"}, ["batch", "m.jsonl", "--out", "o"], "MANIFEST"),
    ("batch-manifest-binary", {"m.jsonl": b"\xff\xfe\x00\x89PNG"}, ["batch", "m.jsonl", "--out", "o"], "MANIFEST"),
    ("batch-manifest-not-an-object", {"m.jsonl": b"[1, 2]\n"}, ["batch", "m.jsonl", "--out", "o"], "MANIFEST line 1"),
    ("batch-job-option-misspelt", dict(GOOD, **{"m.jsonl": manifest(dict(JOB, tolerence="1e-9"))}),
     ["batch", "m.jsonl", "--out", "o"], "line 1: tolerence"),
    # ---- control characters in a message stay on one line (escaped)
    ("error-key-with-newline", model(**{"a\nb": 1}), CHECK, "a\\nb"),
    ("error-path-with-terminal-escape", GOOD, ["check", "--model", "\x1b[31mM.json", "--dataset", "D.json"], "\\x1b"),
    # ---- JSON number literals that have no binary64 value (read as 0 before)
    ("weight-literal-1e-400", bad_model(text_of(model()).replace('"W_q": [[1, 0]', '"W_q": [[1e-400, 0]')),
     CHECK, "W_q[0][0]"),
    ("target-literal-1e-400", bad_data(text_of(data()).replace("[3, 1]", "[3, -2.5e-400]")), CHECK,
     "examples[0].output[1][1]"),
    ("weight-string-5000-digit-denominator", head(W_o=[["1/" + "7" * 5000, 0], [0, 1]]), CHECK, "4300 digits"),
    # ---- output paths that are not regular files: written by rename, they would be replaced
    ("json-is-a-fifo", dict(GOOD, **{"p.json": fifo}), CHECK[:-1] + ["p.json"], "--json"),
    ("json-is-a-symlink", dict(GOOD, **{"o.json": "{}", "l.json": link_to("o.json")}), CHECK[:-1] + ["l.json"],
     "--json"),
    ("witness-out-is-a-symlink", dict(GOOD, **{"o.json": "{}", "l.json": link_to("o.json")}),
     CHECK + ["--witness-out", "l.json"], "--witness-out"),
    ("prove-save-model-is-a-fifo", {"p.json": fifo}, PROVE + ["--save-model", "p.json"], "--save-model"),
    ("json-is-the-artifacts-folder", GOOD, CHECK[:-1] + ["a/r.json", "--artifacts", "a/r.json"], "--artifacts"),
    ("batch-scheduler-not-an-address", dict(GOOD, **{"m.jsonl": manifest(JOB)}),
     ["batch", "m.jsonl", "--out", "o", "--scheduler", "not an address"], "--scheduler"),
    # ---- bench
    ("bench-dims-empty-item", {}, BENCH + ["--dims", "1,,2"], "--dims"),
    ("bench-dims-trailing-comma", {}, BENCH + ["--dims", "1,2,"], "--dims"),
    ("bench-dims-underscore", {}, BENCH + ["--dims", "1_0"], "--dims"),
    # ---- import
    ("import-safetensors-without-tensors", {"w.safetensors": struct.pack("<Q", 2) + b"{}"},
     ["import", "--safetensors", "w.safetensors", "--heads", "1", "--out", "m.npz"], "--safetensors"),
    # ---- audit: the file is the MODEL argument (there is no --model option)
    ("audit-npz-truncated", {"M.npz": truncated_npz}, ["audit", "M.npz"], "MODEL"),
    # ---- campaign
    ("campaign-generate-n-above-limit", {}, ["campaign", "generate", "--out", "c", "--n", "100001"], "--n"),
    ("campaign-generate-seed-negative", {}, ["campaign", "generate", "--out", "c", "--n", "1", "--seed", "-1"],
     "--seed"),
    ("campaign-score-answers-not-json", {"c.d": DIR, "c.d/answers.jsonl": b"{bad\n"},
     ["campaign", "score", "c.d", "--no-cross"], "answers.jsonl line 1"),
    ("campaign-score-answers-no-id", {"c.d": DIR, "c.d/answers.jsonl": b'{"class": "x", "answer": "proved"}\n'},
     ["campaign", "score", "c.d", "--no-cross"], "answers.jsonl line 1"),
    ("campaign-score-batch-out-a-file", {"c.d": DIR, "c.d/answers.jsonl": b"", "b.txt": "x"},
     ["campaign", "score", "c.d", "--batch-out", "b.txt", "--no-cross"], "--batch-out"),
    ("campaign-score-batch-out-missing", {"c.d": DIR, "c.d/answers.jsonl": b""},
     ["campaign", "score", "c.d", "--batch-out", "nope", "--no-cross"], "--batch-out"),
]


def _files(files) -> dict:
    """A case's files: a bare model object (or list) stands for M.json beside a good D.json."""
    if isinstance(files, dict) and all("." in k or k in ("f", "r") for k in files):
        return files
    return bad_model(files)


def _create(root, files: dict) -> None:
    for name, content in files.items():
        path = os.path.join(root, name)
        if content is DIR:
            os.mkdir(path)
        elif callable(content):
            content(path)
        else:
            raw = content if isinstance(content, bytes) else (
                content if isinstance(content, str) else json.dumps(content)).encode("utf-8")
            with open(path, "wb") as fh:
                fh.write(raw)


def _tree(root) -> set:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


def test_the_table_is_large_and_its_names_unique():
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 60


@pytest.mark.parametrize("name, files, argv, field", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_naming_the_field_and_writes_nothing(name, files, argv, field, tmp_path, capsys,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    _create(str(tmp_path), _files(files))
    before = _tree(str(tmp_path))
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert "Traceback" not in cap.err + cap.out
    assert info.value.code == 2, f"exit {info.value.code}: {cap.err[-600:]}"
    assert len(err.splitlines()) == 1, f"not one line: {cap.err!r}"
    assert err.startswith("ptverify: error: "), err
    assert field in err, err
    assert _tree(str(tmp_path)) == before, "a file was written on bad input"


def test_an_all_null_dataset_is_accepted_not_rejected(tmp_path, capsys, monkeypatch):
    """Null outputs are allowed (the position is unconstrained); a dataset of nulls only is a
    vacuous question, answered (memorized), never refused as bad input."""
    monkeypatch.chdir(tmp_path)
    _create(str(tmp_path), {"M.json": model(), "D.json": data({"input": [[1, 0], [0, 1]], "output": [None, None]})})
    with pytest.raises(SystemExit) as info:
        main(CHECK)
    cap = capsys.readouterr()
    assert info.value.code == 0, cap.err
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "memorized"


def test_an_unreadable_runs_json_is_refused_not_replaced(tmp_path, capsys, monkeypatch):
    """experiment real resumes OUT/runs.json; a file there that is not one (unparseable, another
    format) is someone's data: exit 2 naming --out and runs.json, the file untouched."""
    import verify.experiments.real_peft as real_peft
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(real_peft, "require_extra", lambda: None)
    (tmp_path / "o").mkdir()
    for text in ("{bad", json.dumps({"format": "something-else/1"})):
        (tmp_path / "o" / "runs.json").write_text(text)
        with pytest.raises(SystemExit) as info:
            main(["experiment", "real", "--quick", "--out", "o", "--tasks", "cls"])
        err = capsys.readouterr().err.strip()
        assert info.value.code == 2 and err.startswith("ptverify: error: --out:") and "runs.json" in err, err
        assert (tmp_path / "o" / "runs.json").read_text() == text
        assert sorted(os.listdir(tmp_path / "o")) == ["runs.json"]


def test_a_file_name_the_terminal_cannot_encode_is_escaped_not_a_crash(tmp_path):
    """With an ASCII-only standard output, "wrote é.json" is printed escaped (exit 0), not an
    internal error."""
    import subprocess
    import sys
    env = dict(os.environ, PYTHONIOENCODING="ascii")
    p = subprocess.run([sys.executable, "-m", "verify", "prove", "limitation", "--d", "2", "--json", "\u00e9.json"],
                       cwd=tmp_path, env=env, capture_output=True, timeout=300)
    out, err = p.stdout.decode("ascii", "replace"), p.stderr.decode("ascii", "replace")
    assert p.returncode == 0, err
    assert "Traceback" not in out + err and "wrote \\xe9.json" in out
    assert (tmp_path / "\u00e9.json").is_file()


def test_ctrl_c_inside_a_command_is_exit_130_with_one_line(tmp_path, capsys, monkeypatch):
    import verify.claims.reproduce as reproduce

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(reproduce, "run_reproduce", interrupted)
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "--quick", "--only", "L3", "--out", "o"])
    cap = capsys.readouterr()
    assert info.value.code == 130 and cap.err == "ptverify: error: interrupted\n" and "Traceback" not in cap.out
