"""The ``ptverify-model/2`` format (real layers) and the dataset field ``at``: both readers.

Round trips through JSON and ``.npz``; plain models still written as ``/1`` byte for byte; the
trusted checker's own reader (``verify/checker/inputs.py``) agrees with the producers' reader on
random ``/2`` models and refuses the same bad fields; and every certificate kind written for the
textbook layer rejects a result whose model has a ``/2`` layer or whose dataset's targets are not
at the layer output, whatever its certificate says.
"""
from __future__ import annotations

import copy
import json
import os
import re
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions.model import (INV_SQRT_HEAD_SIZE, MODEL_FORMAT, MODEL_FORMAT_2, Dataset, Example, Head,
                                 InputError, Layer, LayerNorm, Model, as_fraction, dataset_from_json,
                                 dataset_to_json, load_dataset, load_model, model_from_json, model_to_json,
                                 save_dataset, save_model)
from verify.checker import canonical_sha256, check_result, statement
from verify.checker.inputs import dataset_from_obj, model_from_npz, model_from_obj
from verify.checker.numbers import Reject

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs", "formats.md")


# --------------------------------------------------------------------------- random models

def _vec(rng, n, exact):
    if exact:
        out = np.empty(n, dtype=object)
        out[:] = [Fraction(int(rng.integers(-9, 10)), int(rng.integers(1, 7))) for _ in range(n)]
        return out
    return rng.normal(size=n)


def _mat(rng, r, c, exact):
    return _vec(rng, r * c, exact).reshape(r, c)


def random_v2_model(seed: int, exact: bool = False, plain: bool = False) -> Model:
    """A random model whose layers use a random subset of the ``/2`` fields (none when ``plain``);
    ``exact``: weights are rationals that are not all binary64 values (JSON only)."""
    rng = np.random.default_rng(seed)
    d = int(rng.integers(2, 5))
    layers = []
    for _ in range(int(rng.integers(1, 3))):
        heads = []
        for _ in range(int(rng.integers(1, 3))):
            s = int(rng.integers(1, 4))
            h = Head(_mat(rng, s, d, exact), _mat(rng, s, d, exact), _mat(rng, s, d, exact), _mat(rng, d, s, exact))
            if not plain:
                for b in ("b_q", "b_k", "b_v"):
                    if rng.random() < 0.5:
                        setattr(h, b, _vec(rng, s, exact))
            heads.append(h)
        r = int(rng.integers(1, 5))
        la = Layer(str(rng.choice(["softmax", "hardmax"])), heads, _mat(rng, r, d, exact), _vec(rng, r, exact),
                   _mat(rng, d, r, exact), _vec(rng, d, exact))
        if not plain:
            if rng.random() < 0.5:
                la.b_o = _vec(rng, d, exact)
            la.scale = [1, INV_SQRT_HEAD_SIZE, 0.125, Fraction(1, 3)][int(rng.integers(0, 4))]
            la.activation = str(rng.choice(["relu", "gelu", "gelu_tanh"]))
            la.norm = [None, "pre", "post"][int(rng.integers(0, 3))]
            if la.norm is not None:
                la.ln1 = LayerNorm(_vec(rng, d, exact), _vec(rng, d, exact), [1e-12, 1e-5, Fraction(1, 7)][int(rng.integers(0, 3))])
                la.ln2 = LayerNorm(_vec(rng, d, exact), _vec(rng, d, exact), 1e-5)
        layers.append(la)
    return Model(d, layers, causal=bool(rng.random() < 0.5))


def _q(x):
    return x if isinstance(x, str) else Fraction(x)


def _summary(model: Model) -> list:
    """Everything a model says, exactly: per layer its kind, scalars and every array as Fractions."""
    out = []
    for la in model.layers:
        heads = [{n: None if getattr(h, n) is None else as_fraction(np.asarray(getattr(h, n))).tolist()
                  for n in ("W_q", "W_k", "W_v", "W_o", "b_q", "b_k", "b_v")} for h in la.heads]
        lns = [None if ln is None else (as_fraction(ln.gamma).tolist(), as_fraction(ln.beta).tolist(), Fraction(ln.eps))
               for ln in (la.ln1, la.ln2)]
        out.append((la.kind, heads, [as_fraction(getattr(la, n)).tolist() for n in ("W_1", "b_1", "W_2", "b_2")],
                    None if la.b_o is None else as_fraction(la.b_o).tolist(), _q(la.scale), la.activation, la.norm,
                    lns))
    return [model.d, model.causal, out]


def _checker_summary(cm) -> list:
    """The same summary of the checker's CModel."""
    def vec(v):
        return None if v is None else list(v)
    out = []
    for la in cm.layers:
        heads = [{**{n: h[n].rows() for n in ("W_q", "W_k", "W_v", "W_o")},
                  **{b: vec(h.get(b)) for b in ("b_q", "b_k", "b_v")}} for h in la.heads]
        lns = [None if ln is None else (list(ln.gamma), list(ln.beta), ln.eps) for ln in (la.ln1, la.ln2)]
        out.append((la.kind, heads, [la.W_1.rows(), list(la.b_1), la.W_2.rows(), list(la.b_2)], vec(la.b_o),
                    la.scale, la.activation, la.norm, lns))
    return [cm.d, cm.causal, out]


# --------------------------------------------------------------------------- round trips

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), exact=st.booleans())
def test_json_round_trip_keeps_every_field(tmp_path_factory, seed, exact):
    m = random_v2_model(seed, exact)
    path = str(tmp_path_factory.mktemp("rt") / "m.json")
    save_model(m, path)
    back = load_model(path)
    assert _summary(back) == _summary(m)
    assert back.is_plain == m.is_plain
    with open(path) as fh:
        assert json.load(fh)["format"] == (MODEL_FORMAT if m.is_plain else MODEL_FORMAT_2)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_npz_round_trip_keeps_every_field(tmp_path_factory, seed):
    m = random_v2_model(seed)
    path = str(tmp_path_factory.mktemp("rt") / "m.npz")
    save_model(m, path)
    back = load_model(path)
    assert _summary(back) == _summary(m)
    assert sorted(np.load(path).files) == sorted(["__header__"] + [k for k, _ in m.arrays()])


def test_every_field_survives_both_forms(tmp_path):
    """One model using every /2 field at once, including exact eps and scale."""
    m = random_v2_model(0)
    la = m.layers[0]
    for h in la.heads:
        h.b_q, h.b_k, h.b_v = (np.full(h.s, 0.5), np.zeros(h.s), np.full(h.s, -2.0))
    la.b_o, la.scale, la.activation, la.norm = np.ones(m.d), Fraction(1, 3), "gelu_tanh", "pre"
    la.ln1 = LayerNorm(np.ones(m.d), np.zeros(m.d), Fraction(1, 10 ** 5))
    la.ln2 = LayerNorm(np.full(m.d, 2.0), np.ones(m.d), 1e-12)
    for name in ("m.json", "m.npz"):
        save_model(m, str(tmp_path / name))
        back = load_model(str(tmp_path / name))
        assert _summary(back) == _summary(m), name
        b = back.layers[0]
        assert (b.scale, b.activation, b.norm, b.ln1.eps, b.ln2.eps) == (Fraction(1, 3), "gelu_tanh", "pre",
                                                                          Fraction(1, 10 ** 5), 1e-12)


def test_arrays_and_n_parameters_count_the_new_arrays():
    m = random_v2_model(3, plain=True)
    plain_count = m.n_parameters()
    la = m.layers[0]
    d, s = m.d, la.heads[0].s
    la.heads[0].b_q, la.b_o = np.zeros(s), np.zeros(d)
    la.norm, la.ln1, la.ln2 = "post", LayerNorm(np.ones(d), np.zeros(d), 1e-5), LayerNorm(np.ones(d), np.zeros(d), 1e-5)
    names = [k for k, _ in m.arrays()]
    assert "layers.0.attention.heads.0.b_q" in names and "layers.0.attention.b_o" in names
    assert {f"layers.0.norm.{ln}.{n}" for ln in ("ln1", "ln2") for n in ("gamma", "beta")} <= set(names)
    assert m.n_parameters() == plain_count + s + d + 4 * d


# --------------------------------------------------------------------------- /1 unchanged

def _tiny_plain() -> Model:
    h = Head(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), np.array([[0.5, 0.0]]),
             np.array([[Fraction(1, 2)], [Fraction(0)]], dtype=object))
    return Model(2, [Layer("softmax", [h], np.array([[0.25, 0.0]]), np.array([0.0]), np.array([[0.5], [0.0]]),
                           np.array([0.0, 0.125]))], causal=True)


#: the bytes ptverify-model/1 files have always had for _tiny_plain()
TINY_V1 = ('{"format": "ptverify-model/1", "d": 2, "causal": true, "layers": [{"attention": {"kind": "softmax", '
           '"heads": [{"W_q": [[1.0, 0.0]], "W_k": [[0.0, 1.0]], "W_v": [[0.5, 0.0]], "W_o": [[0.5], ["0"]]}]}, '
           '"mlp": {"W_1": [[0.25, 0.0]], "b_1": [0.0], "W_2": [[0.5], [0.0]], "b_2": [0.0, 0.125]}}]}')


def test_plain_models_are_written_as_v1_byte_for_byte(tmp_path):
    save_model(_tiny_plain(), str(tmp_path / "m.json"))
    assert (tmp_path / "m.json").read_text() == TINY_V1
    m = _tiny_plain()
    m.layers[0].heads[0].W_o = np.array([[0.5], [0.0]])
    save_model(m, str(tmp_path / "m.npz"))
    z = np.load(str(tmp_path / "m.npz"))
    assert bytes(z["__header__"]).decode() == ('{"format": "ptverify-model/1", "d": 2, "causal": true, '
                                               '"kinds": ["softmax"], "heads": [1]}')
    assert len(z.files) == 9


def test_a_non_plain_layer_makes_the_file_v2_with_only_its_fields():
    m = _tiny_plain()
    m.layers[0].activation = "gelu"
    obj = model_to_json(m)
    assert obj["format"] == MODEL_FORMAT_2
    assert obj["layers"][0]["mlp"]["activation"] == "gelu"
    assert set(obj["layers"][0]) == {"attention", "mlp"} and set(obj["layers"][0]["attention"]) == {"kind", "heads"}


def test_v1_example_files_load_in_both_readers():
    root = os.path.join(os.path.dirname(__file__), "..", "examples")
    seen = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f == "model.json":
                p = os.path.join(dirpath, f)
                m = load_model(p)
                with open(p) as fh:
                    obj = json.load(fh)
                if obj.get("format") != MODEL_FORMAT:
                    continue
                assert m.is_plain and model_from_obj(obj).is_plain
                assert model_to_json(m)["format"] == MODEL_FORMAT
                seen += 1
    assert seen >= 1


def test_the_docs_example_is_a_valid_v2_model():
    text = open(DOCS, encoding="utf-8").read()
    blocks = [b for b in re.findall(r"```json\n(.*?)```", text, re.S) if '"ptverify-model/2"' in b]
    assert blocks, "docs/formats.md has no ptverify-model/2 example"
    obj = json.loads(blocks[0])
    m = model_from_json(obj)
    cm = model_from_obj(obj)
    assert not m.is_plain and not cm.is_plain
    assert _checker_summary(cm) == _summary(m)


# --------------------------------------------------------------------------- datasets: "at"

def test_dataset_at_round_trip_and_default(tmp_path):
    ex = Example(np.array([[1.0, 0.0], [0.0, 1.0]]), [None, np.array([0.5, 0.25])])
    save_dataset(Dataset([ex]), str(tmp_path / "d.json"))
    assert "at" not in json.loads((tmp_path / "d.json").read_text())
    assert load_dataset(str(tmp_path / "d.json")).at == "output"
    save_dataset(Dataset([ex], at="attention"), str(tmp_path / "a.json"))
    obj = json.loads((tmp_path / "a.json").read_text())
    assert obj["at"] == "attention"
    assert load_dataset(str(tmp_path / "a.json")).at == "attention"
    assert dataset_from_obj(obj).at == "attention"
    assert dataset_from_obj(dataset_to_json(Dataset([ex]))).at == "output"
    for bad in ("middle", None, 1, "Output"):
        with pytest.raises(InputError) as info:
            dataset_from_json(dict(obj, at=bad))
        assert info.value.field == "at"
        with pytest.raises(Reject, match="dataset.at"):
            dataset_from_obj(dict(obj, at=bad))


# --------------------------------------------------------------------------- the checker's own reader

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), exact=st.booleans())
def test_checker_reader_agrees_on_json(seed, exact):
    m = random_v2_model(seed, exact)
    obj = json.loads(json.dumps(model_to_json(m)))
    cm = model_from_obj(obj)
    assert _checker_summary(cm) == _summary(model_from_json(obj)) == _summary(m)
    assert cm.is_plain == m.is_plain


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_checker_reader_agrees_on_npz(tmp_path_factory, seed):
    m = random_v2_model(seed)
    path = str(tmp_path_factory.mktemp("ck") / "m.npz")
    save_model(m, path)
    assert _checker_summary(model_from_npz(path)) == _summary(load_model(path)) == _summary(m)


def _layer0(obj):
    return obj["layers"][0]


#: (name, change to a valid /2 JSON model, the field both readers must name)
BAD_V2 = [
    ("b_q length", lambda o: _layer0(o)["attention"]["heads"][0].update(b_q=[0] * 9), "heads[0].b_q"),
    ("b_v not a number", lambda o: _layer0(o)["attention"]["heads"][0].update(b_v=["x"] * 9), "heads[0].b_v"),
    ("b_o length", lambda o: _layer0(o)["attention"].update(b_o=[0]), "attention.b_o"),
    ("scale zero", lambda o: _layer0(o)["attention"].update(scale=0), "attention.scale"),
    ("scale negative", lambda o: _layer0(o)["attention"].update(scale="-3"), "attention.scale"),
    ("scale other string", lambda o: _layer0(o)["attention"].update(scale="1/sqrt(d)"), "attention.scale"),
    ("activation", lambda o: _layer0(o)["mlp"].update(activation="swish"), "mlp.activation"),
    ("placement", lambda o: _layer0(o)["norm"].update(placement="both"), "norm.placement"),
    ("gamma length", lambda o: _layer0(o)["norm"]["ln1"].update(gamma=[1]), "norm.ln1.gamma"),
    ("beta missing", lambda o: _layer0(o)["norm"]["ln2"].pop("beta"), "norm.ln2"),
    ("eps zero", lambda o: _layer0(o)["norm"]["ln2"].update(eps=0), "norm.ln2.eps"),
    ("eps negative", lambda o: _layer0(o)["norm"]["ln1"].update(eps="-1e-5"), "norm.ln1.eps"),
    ("ln unknown field", lambda o: _layer0(o)["norm"]["ln1"].update(bias=[0]), "norm.ln1"),
    ("norm unknown field", lambda o: _layer0(o)["norm"].update(ln3={}), "norm"),
    ("v2 field in a /1 file", lambda o: o.update(format=MODEL_FORMAT), "layers[0]"),
]


def _full_v2_obj() -> dict:
    m = random_v2_model(1)
    la = m.layers[0]
    la.heads[0].b_q, la.b_o, la.scale, la.activation = np.zeros(la.heads[0].s), np.zeros(m.d), 2.0, "gelu"
    la.norm = "post"
    la.ln1 = LayerNorm(np.ones(m.d), np.zeros(m.d), 1e-5)
    la.ln2 = LayerNorm(np.ones(m.d), np.zeros(m.d), 1e-5)
    return json.loads(json.dumps(model_to_json(m)))


@pytest.mark.parametrize("name, change, field", BAD_V2, ids=[b[0] for b in BAD_V2])
def test_both_readers_refuse_a_bad_v2_field_naming_it(name, change, field):
    obj = _full_v2_obj()
    model_from_json(obj)
    model_from_obj(obj)
    change(obj)
    with pytest.raises(InputError) as info:
        model_from_json(obj)
    assert field in info.value.field, (name, str(info.value))
    with pytest.raises(Reject) as rej:
        model_from_obj(obj)
    assert field in str(rej.value), (name, str(rej.value))


# --------------------------------------------------------------------------- every textbook kind refuses /2

def _json(res) -> dict:
    return json.loads(json.dumps(res.to_json(), allow_nan=False))


def _embedded(res: dict, name: str) -> dict:
    return res["inputs"][name]["embedded"]


def _rehash(res: dict, name: str) -> None:
    res["inputs"][name]["sha256"] = canonical_sha256(_embedded(res, name))


#: ways to make a plain model's first layer a real one (each a single /2 field)
def _b_o(la, d):
    la["attention"]["b_o"] = [0] * d


def _bias(la, d):
    h = la["attention"]["heads"][0]
    h["b_k"] = [0] * len(h["W_k"])


def _scale(la, d):
    la["attention"]["scale"] = INV_SQRT_HEAD_SIZE


def _gelu(la, d):
    la["mlp"]["activation"] = "gelu"


def _post_ln(la, d):
    la["norm"] = {"placement": "post", "ln1": {"gamma": [1] * d, "beta": [0] * d, "eps": "1e-5"},
                  "ln2": {"gamma": [1] * d, "beta": [0] * d, "eps": "1e-5"}}


MAKE_REAL = {"b_o": _b_o, "head bias": _bias, "scale": _scale, "gelu": _gelu, "post-LN": _post_ln}


def _realify(model_obj: dict, how: str) -> dict:
    o = copy.deepcopy(model_obj)
    o["format"] = MODEL_FORMAT_2
    MAKE_REAL[how](o["layers"][0], o["d"])
    return o


def _forged(kind: str, qkind_question: dict, status: str, model_obj: dict, data_obj: dict, body) -> dict:
    from verify.result import certificate, embed
    return {"format": "ptverify-result/2", "claim": "forged", "question": qkind_question, "status": status,
            "statement": statement(qkind_question, status),
            "inputs": {"model": embed(model_obj), "dataset": embed(data_obj)},
            "certificate": certificate(kind, body)}


@pytest.fixture(scope="module")
def genuine() -> dict:
    """kind -> a result the checker accepts (real certificates where quick to make), or, for the two
    kinds whose producers are slow, a result with the right envelope and a placeholder body."""
    from constructions.datasets import l1_dataset, l3_dataset, planted_dataset, random_model
    from constructions.model import dataset_to_json as d2j
    from verify.provers.bounds import lora_result
    from verify.provers.limitation.decide import prove_limitation
    from verify.provers.loss_bound import loss_bound_result
    from verify.provers.multilayer import prove_multilayer
    from verify.provers.universality import run_universality
    from verify.result import certificate, embed, memorization_question

    out = {}
    r, _, _ = prove_limitation(d=3, heads=1, mlp_width=6, seed=0, nonlinear=False)
    out["limitation-farkas"] = _json(r)
    out["multilayer-injectivity"] = _json(prove_multilayer(layers=2, d=3, heads=2, condition=1, seed=2))
    out["universality-dp-bound"] = _json(run_universality(1, 1, "4", "2", "1/20", "token-mix", K=2, samples=0))
    m = random_model(4, heads=1, head_size=4, mlp_width=8, seed=0)
    out["loss-bound"] = _json(loss_bound_result(m, l1_dataset(m, 0)))
    m = random_model(4, heads=1, head_size=2, mlp_width=8, seed=1, zero_scores=True)
    out["lora-witness"] = _json(lora_result(m, l3_dataset(m, 1), "x"))
    m = random_model(3, heads=1, seed=1, kind="hardmax")
    ds, prompt = planted_dataset(m, seed=1, examples=2)
    q = memorization_question(len(prompt), "0")
    out["prompt-witness"] = {
        "format": "ptverify-result/2", "claim": "planted", "question": q, "status": "memorized",
        "statement": statement(q, "memorized"), "inputs": {"model": embed(model_to_json(m)), "dataset": embed(d2j(ds))},
        "certificate": certificate("prompt-witness", {"prompt": [[str(Fraction(v)) for v in row] for row in prompt]})}
    for kind, res in out.items():
        ok, msg = check_result(res)
        assert ok, (kind, msg)
    lb = out["loss-bound"]
    out["experiment-consistency"] = _forged("experiment-consistency", {"kind": "experiment"}, "verified",
                                            _embedded(lb, "model"), _embedded(lb, "dataset"), {"bound": {}, "runs": []})
    # a bounds table whose first row is a nested result about a plain model (placeholder certificate)
    nested = _forged("prompt-witness", memorization_question(4, "1/1000"), "memorized",
                     _embedded(out["prompt-witness"], "model"), _embedded(out["prompt-witness"], "dataset"), {})
    nested["claim"] = "L4L5/L4-fit"
    bq = {"kind": "bounds", "d": 3, "m": 2, "N": 2, "heads": 1, "head_size": 3, "mlp_width": 8}
    out["bounds-table"] = {"format": "ptverify-result/2", "claim": "L4L5", "question": bq, "status": "verified",
                           "statement": statement(bq, "verified"), "inputs": {},
                           "certificate": certificate("bounds-table", {"L4": {"fit": nested}, "L5": None,
                                                                       "L1": None, "L3": None})}
    return out


def _with_model(res: dict, how: str) -> dict:
    res = copy.deepcopy(res)
    if res["certificate"]["kind"] == "universality-dp-bound":
        net = _embedded(res, "network")
        net["model"] = _realify(net["model"], how)
        _rehash(res, "network")
    elif res["certificate"]["kind"] == "bounds-table":
        nested = res["certificate"]["body"]["L4"]["fit"]
        nested["inputs"]["model"]["embedded"] = _realify(_embedded(nested, "model"), how)
        _rehash(nested, "model")
    else:
        res["inputs"]["model"]["embedded"] = _realify(_embedded(res, "model"), how)
        _rehash(res, "model")
    return res


KINDS = ["limitation-farkas", "prompt-witness", "multilayer-injectivity", "universality-dp-bound", "bounds-table",
         "lora-witness", "loss-bound", "experiment-consistency"]


TEXTBOOK_MODULES = {"limitation", "multilayer", "witness", "universality", "loss", "bounds"}


def test_the_kind_list_is_the_checker_table():
    """Every kind checked by a textbook-layer module is in KINDS (so a new one is tested here too)."""
    from verify.checker.envelope import STATUS_KINDS
    assert set(KINDS) <= set(STATUS_KINDS)
    textbook = {k for k, (_, _, spec) in STATUS_KINDS.items() if spec.split(":")[0] in TEXTBOOK_MODULES}
    assert textbook == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_every_textbook_kind_rejects_a_real_layer(genuine, kind):
    for how in MAKE_REAL:
        ok, msg = check_result(_with_model(genuine[kind], how))
        assert not ok, (kind, how)
        assert "plain (ptverify-model/1)" in msg, (kind, how, msg)


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in ("universality-dp-bound",)])
def test_every_textbook_kind_rejects_targets_at_the_attention_block(genuine, kind):
    res = copy.deepcopy(genuine[kind])
    holder = res["certificate"]["body"]["L4"]["fit"] if kind == "bounds-table" else res
    holder["inputs"]["dataset"]["embedded"]["at"] = "attention"
    _rehash(holder, "dataset")
    ok, msg = check_result(res)
    assert not ok and "dataset.at" in msg, (kind, msg)


def _npz_with(path, header: dict, extra_arrays: dict) -> str:
    m = _tiny_plain()
    m.layers[0].heads[0].W_o = np.array([[0.5], [0.0]])
    arrays = {k: np.asarray(a, dtype=np.float64) for k, a in m.arrays()}
    arrays.update(extra_arrays)
    hdr = {"format": MODEL_FORMAT_2, "d": 2, "causal": False, "kinds": ["softmax"], "heads": [1], **header}
    arrays["__header__"] = np.frombuffer(json.dumps(hdr).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    return path


LN_ARRAYS = {f"layers.0.norm.{ln}.{n}": np.ones(2) for ln in ("ln1", "ln2") for n in ("gamma", "beta")}
NORM_HDR = {"placement": "post", "ln1": {"eps": 1e-5}, "ln2": {"eps": "1/100000"}}

#: (name, header fields, extra arrays, what both readers must name)
BAD_NPZ = [
    ("scale negative", {"layers": [{"scale": -1}]}, {}, "attention.scale"),
    ("activation", {"layers": [{"activation": "elu"}]}, {}, "mlp.activation"),
    ("placement", {"layers": [{"norm": dict(NORM_HDR, placement="mid")}]}, LN_ARRAYS, "norm.placement"),
    ("eps zero", {"layers": [{"norm": dict(NORM_HDR, ln2={"eps": 0})}]}, LN_ARRAYS, "norm.ln2.eps"),
    ("gamma missing", {"layers": [{"norm": NORM_HDR}]},
     {k: v for k, v in LN_ARRAYS.items() if k != "layers.0.norm.ln1.gamma"}, "ln1.gamma"),
    ("norm arrays, no norm", {}, LN_ARRAYS, "norm"),
    ("b_o shape", {}, {"layers.0.attention.b_o": np.zeros(3)}, "b_o"),
    ("/2 array under a /1 header", {"format": MODEL_FORMAT}, {"layers.0.attention.heads.0.b_q": np.zeros(1)}, "b_q"),
]


@pytest.mark.parametrize("name, header, extra, field", BAD_NPZ, ids=[b[0] for b in BAD_NPZ])
def test_both_readers_refuse_a_bad_v2_npz(tmp_path, name, header, extra, field):
    path = _npz_with(str(tmp_path / "m.npz"), header, extra)
    with pytest.raises(InputError) as info:
        load_model(path)
    assert field in str(info.value).split(":")[0], (name, str(info.value))
    with pytest.raises(Reject) as rej:
        model_from_npz(path)
    assert field.split(".")[-1] in str(rej.value), (name, str(rej.value))


def test_a_good_v2_npz_reads_the_same_in_both_readers(tmp_path):
    path = _npz_with(str(tmp_path / "m.npz"), {"layers": [{"scale": INV_SQRT_HEAD_SIZE, "activation": "gelu",
                                                          "norm": NORM_HDR}]},
                     dict(LN_ARRAYS, **{"layers.0.attention.b_o": np.zeros(2)}))
    m = load_model(path)
    assert (m.layers[0].scale, m.layers[0].norm, m.layers[0].ln2.eps) == (INV_SQRT_HEAD_SIZE, "post", Fraction(1, 100000))
    assert _checker_summary(model_from_npz(path)) == _summary(m)
