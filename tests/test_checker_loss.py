"""The certified loss lower bound: the bound is below real prompts' losses, its ``loss-bound``
results are accepted by the trusted checker (verify/checker/loss.py), and every mutation of them
is rejected."""
from __future__ import annotations

import copy
import json
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mutations import assert_all_rejected, body_mutations, envelope_mutations, set_at

from constructions.datasets import l1_dataset, l3_dataset, random_model
from constructions.forward import forward_torch
from constructions.model import Dataset, Example, InputError, as_float
from verify.checker import canonical_sha256, check_result
from verify.checker.loss import TIGHTNESS, HeadData, head_objective
from verify.provers.loss_bound import (AssumptionViolated, _HeadData, _minimize, canonical_low, certified_min_loss,
                                       loss_bound_result)
from verify.provers.loss_bound import head_objective as producer_objective


def _loss(model, ds, P) -> float:
    tot = 0.0
    for ex in ds.examples:
        out = forward_torch(model, ex.input, P).numpy()
        for t, y in enumerate(ex.output):
            if y is not None:
                tot += float(((out[t] - as_float(np.asarray(y))) ** 2).sum())
    return tot


def _json(res) -> dict:
    return json.loads(json.dumps(res.to_json()))


def _noisy_l3(seed: int = 0) -> tuple:
    """An L3 dataset whose targets carry float noise: the preimages are inexact (epsilon path)."""
    model = random_model(4, heads=1, head_size=2, mlp_width=8, seed=seed)
    ds = l3_dataset(model, seed, examples=2)
    rng = np.random.default_rng(seed)
    exs = [Example(ex.input, [None if y is None else as_float(np.asarray(y)) + rng.normal(0, 1e-6, 4)
                              for y in ex.output]) for ex in ds.examples]
    return model, Dataset(exs)


@pytest.fixture(scope="module")
def results() -> dict:
    """Real results: the LB claim's instance (one head, any length), a zero-score model at length 3
    (alpha = K), two heads (oblique projections, causal) and inexact preimages (epsilon)."""
    out = {}
    m = random_model(4, heads=1, head_size=4, mlp_width=8, seed=0)
    out["any"] = _json(loss_bound_result(m, l1_dataset(m, 0)))
    z = random_model(4, heads=1, head_size=4, mlp_width=8, seed=0, zero_scores=True)
    out["zero-K3"] = _json(loss_bound_result(z, l1_dataset(z, 0), 3))
    m2 = random_model(4, heads=2, head_size=2, mlp_width=8, seed=5, causal=True)
    out["oblique"] = _json(loss_bound_result(m2, l1_dataset(m2, 5), max_boxes=16))   # 16 boxes a head: fast
    out["inexact"] = _json(loss_bound_result(*_noisy_l3()))
    for name, r in out.items():
        assert r["status"] == "verified", (name, r["info"]["message"])
    return out


def test_results_accepted(results):
    assert results["oblique"]["info"]["checks"]["combine"] == "oblique"
    assert results["inexact"]["certificate"]["body"]["epsilon"] != "0"
    assert results["zero-K3"]["certificate"]["body"]["groups"][0]["heads"][0]["breakpoints"][0] != "0"
    for name, r in results.items():
        ok, msg = check_result(r)
        assert ok, (name, msg)
        assert Fraction(r["reported"]["certified_min_loss"]) > 0


@pytest.mark.parametrize("name", ["any", "zero-K3", "oblique", "inexact"])
def test_mutations_rejected(results, name):
    res = results[name]
    other = results["zero-K3" if name != "zero-K3" else "any"]
    B = Fraction(res["reported"]["certified_min_loss"])
    muts = list(envelope_mutations(res)) + list(body_mutations(res))
    muts += [("swap certificate with another instance's", dict(res, certificate=other["certificate"])),
             ("reported certified_min_loss x 2", set_at(res, ("reported", "certified_min_loss"), str(2 * B))),
             ("reported certified_min_loss + 1e-12", set_at(res, ("reported", "certified_min_loss"),
                                                            str(B + Fraction(1, 10 ** 12)))),
             ("reported mlp_lipschitz_bound", set_at(res, ("reported", "mlp_lipschitz_bound"), "1/2"))]
    for part in ("output", "input"):     # a target, and the token at a constrained position, moved
        m = set_at(res, ("inputs", "dataset", "embedded", "examples", 0, part, 1, 0), "1/3")
        m["inputs"]["dataset"]["sha256"] = canonical_sha256(m["inputs"]["dataset"]["embedded"])
        muts.append((f"dataset {part} at a constrained position moved, re-hashed", m))
    for gi, g in enumerate(res["certificate"]["body"]["groups"]):
        for j, h in enumerate(g["heads"]):
            low = Fraction(h["lows"][0])
            p = ("certificate", "body", "groups", gi, "heads", j, "lows", 0)
            # a valid but weaker low is rejected by the canonical form (within 2^-32 of the own bound)
            muts.append((f"low {gi}/{j} lowered 2^-20", set_at(res, p, str(low * (1 - Fraction(1, 1 << 20))))))
            muts.append((f"low {gi}/{j} raised 2^-20", set_at(res, p, str(low * (1 + Fraction(1, 1 << 20))))))
    # A bound for prompts of every length is also one for length 2 when no head has zero scores
    # (only such heads use the length), so on the any-length instances "prompt_length": 2 keeps a
    # valid certificate, with the same bound.
    allow = ("question.prompt_length#2",) if name in ("any", "oblique", "inexact") else ()
    tried, rejected = assert_all_rejected("loss-bound", res, muts, allow=allow)
    assert tried == rejected > 100


def test_any_length_certificate_holds_for_length_2(results):
    """What the allowance above says, checked: the same body answers the length-2 question."""
    res = set_at(results["any"], ("question", "prompt_length"), 2)
    from verify.checker.questions import statement
    res["statement"] = statement(res["question"], "verified")
    assert check_result(res)[0]


def test_canonical_low_is_below_and_close():
    for x in (Fraction(0), Fraction(1, 3), Fraction(10 ** 9, 7), Fraction(1, 10 ** 30)):
        c = canonical_low(x)
        assert c <= x and x - c <= x * TIGHTNESS
    assert canonical_low(Fraction(-1)) == 0


def test_checker_objective_matches_producer():
    """The checker's interval objective and the producer's agree to far better than 2^-32."""
    from constructions.forward import Iv
    from verify.checker.loss import _I
    hd = _HeadData([Iv(1), Iv(2, 2 + Fraction(1, 10 ** 20))], [[Iv(0), Iv(1)], [Iv(1), Iv(0)]],
                   [[Fraction(1), Fraction(0)], [Fraction(0), Fraction(1)]], False, Fraction(3, 2))
    hc = HeadData([_I(1), _I(2, 2 + Fraction(1, 10 ** 20))], [[_I(0), _I(1)], [_I(1), _I(0)]],
                  [[Fraction(1), Fraction(0)], [Fraction(0), Fraction(1)]], False, Fraction(3, 2))
    for a, b in ((Fraction(0), Fraction(1, 8)), (Fraction(1, 3), Fraction(1, 2)), (Fraction(1), Fraction(1))):
        p, c = producer_objective(hd, a, b).lo, head_objective(hc, a, b).lo
        assert abs(p - c) <= max(p, c) * Fraction(1, 1 << 80)


# --------------------------------------------------------------------------- the bound itself

@settings(max_examples=5)
@given(seed=st.integers(0, 1000), heads=st.sampled_from([1, 2]))
def test_bound_below_random_prompts(seed, heads):
    d = 4
    model = random_model(d, heads=heads, head_size=d // heads, mlp_width=8, seed=seed)
    ds = l1_dataset(model, seed)
    res = _json(loss_bound_result(model, ds))
    assert res["status"] == "verified", res["info"]["message"]
    B = float(Fraction(res["reported"]["certified_min_loss"]))
    rng = np.random.default_rng(seed)
    for L in (1, 3, 9):
        for scale in (0.5, 4.0):
            assert _loss(model, ds, rng.normal(0, scale, (L, d))) >= B


def test_bound_below_optimized_prompt():
    torch.manual_seed(0)
    model = random_model(4, heads=1, head_size=4, mlp_width=8, seed=2)
    ds = l1_dataset(model, 2)
    cb = certified_min_loss(model, ds)
    assert cb.value > 0
    from verify.experiments.prompt_vs_lora import TorchLayerModel
    tm = TorchLayerModel(model)
    X = torch.as_tensor(np.stack([as_float(ex.input) for ex in ds.examples]))
    Y = torch.as_tensor(np.stack([as_float(ex.output[1]) for ex in ds.examples]))
    P = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([P], lr=0.05)
    for _ in range(120):
        opt.zero_grad()
        loss = ((tm(X, P.expand(2, 3, 4))[:, 1] - Y) ** 2).sum()
        loss.backward()
        opt.step()
    assert float(loss.detach()) >= float(cb.value)


def test_per_length_bound_zero_score():
    model = random_model(4, heads=1, head_size=4, mlp_width=8, seed=0, zero_scores=True)
    ds = l1_dataset(model, 0)
    anyb = certified_min_loss(model, ds)
    rng = np.random.default_rng(0)
    for K in (1, 3):
        res = _json(loss_bound_result(model, ds, K))
        assert check_result(res)[0]
        B = Fraction(res["reported"]["certified_min_loss"])
        assert B >= anyb.value
        for _ in range(5):
            assert _loss(model, ds, rng.normal(0, 2, (K, 4))) >= float(B)


def test_interval_minimization_encloses_closed_form():
    """Equal Z_t: G = min over lambda in [0, 1] of ||dc - lambda dA||^2 / 2 in closed form."""
    from constructions.forward import Iv
    dc, dA = np.array([1.0, -0.5]), np.array([0.25, 1.5])
    c = [[Fraction(0), Fraction(0)], [Fraction(v) for v in dc]]
    A = [[Iv(0), Iv(0)], [Iv(Fraction(v)) for v in dA]]
    hd = _HeadData([Iv(2), Iv(2)], A, c, False, Fraction(2))
    lam = np.clip(dc @ dA / (dA @ dA), 0, 1)
    exact = float(((dc - lam * dA) ** 2).sum() / 2)
    _, _, lo = _minimize(hd, 1e-9, 300)
    assert float(lo) <= exact + 1e-12 and float(lo) >= 0.97 * exact


def test_assumptions_named():
    m = random_model(4, heads=1, head_size=2, mlp_width=8, seed=0, kind="hardmax")
    with pytest.raises(AssumptionViolated, match="softmax"):
        certified_min_loss(m, l1_dataset(random_model(4, heads=1, head_size=2, mlp_width=8, seed=0), 0))
    m = random_model(4, heads=1, head_size=2, mlp_width=8, seed=0)
    ds = l1_dataset(m, 0)
    big = copy.deepcopy(m)
    big.layers[0].W_2 = as_float(big.layers[0].W_2) * 8
    with pytest.raises(AssumptionViolated, match="injective MLP"):
        certified_min_loss(big, ds)
    assert loss_bound_result(big, ds).status.value == "error"
    with pytest.raises(InputError, match="prompt_length"):
        certified_min_loss(m, ds, prompt_length=0)


def test_checker_refuses_hardmax_and_zero_bound(results):
    """The checker names its hypotheses on its own: a hardmax layer, and a bound of 0."""
    res = copy.deepcopy(results["any"])
    from verify.checker.inputs import canonical_sha256
    res["inputs"]["model"]["embedded"]["layers"][0]["attention"]["kind"] = "hardmax"
    res["inputs"]["model"]["sha256"] = canonical_sha256(res["inputs"]["model"]["embedded"])
    ok, msg = check_result(res)
    assert not ok and "softmax" in msg
    res = copy.deepcopy(results["any"])
    for h in res["certificate"]["body"]["groups"][0]["heads"]:
        h["lows"] = ["0"] * len(h["lows"])
    ok, msg = check_result(res)
    assert not ok
