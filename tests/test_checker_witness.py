"""The trusted checker's ``prompt-witness`` kind: exact replays, rigorous interval replays, any
number of layers, and the cases it must refuse.

The known wrong verdict this kind fixes: two examples sharing the query token whose targets are
the layer's own float64 outputs with NO prompt.  A prompt whose scores are very negative changes
nothing in float64, so a float replay said "memorized at tolerance 0"; in exact arithmetic every
prompt changes the output, and the checker's enclosure shows it.
"""
from __future__ import annotations

import copy
from fractions import Fraction

import numpy as np
import pytest
from mutations import assert_all_rejected, body_mutations, envelope_mutations, set_at

from constructions.datasets import planted_dataset, prop_e_dataset, random_model
from constructions.forward import forward_exact, forward_torch
from constructions.model import Dataset, Example, as_float, dataset_to_json, model_to_json
from verify.checker import check_result
from verify.checker.inputs import dataset_from_obj, model_from_obj
from verify.checker.witness import forward
from verify.provers.limitation import check_memorization
from verify.result import Status, certificate, embed, memorization_question, statement


def _q(v) -> str:
    q = Fraction(v)
    return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"


def _result(model, ds, prompt, tol="0", K="any", norm=None) -> dict:
    """A memorized result carrying ``prompt`` as its witness."""
    q = memorization_question(K, tol, norm)
    return {"format": "ptverify-result/2", "claim": "test", "question": q, "status": "memorized",
            "statement": statement(q, "memorized"),
            "inputs": {"model": embed(model_to_json(model)), "dataset": embed(dataset_to_json(ds))},
            "certificate": certificate("prompt-witness", {"prompt": [[_q(v) for v in row] for row in prompt]})}


# --------------------------------------------------------------------------- the known wrong verdict

def _no_prompt_dataset(seed: int = 0):
    """Two examples [a_i, x] sharing x whose x-targets are the model's float64 outputs without a prompt."""
    model = random_model(3, heads=1, seed=seed)
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=3) * 64) / 64
    exs = []
    for _ in range(2):
        X = np.stack([np.round(rng.normal(size=3) * 64) / 64, x])
        out = forward_torch(model, X).numpy()
        exs.append(Example(input=X, output=[None, out[1].copy()]))
    return model, Dataset(exs), x


def _far_prompt(model, x) -> np.ndarray:
    """One token whose score at x is hugely negative: invisible in float64."""
    h = model.layers[0].heads[0]
    g = as_float(h.W_k).T @ (as_float(h.W_q) @ x)
    return (-2000.0 / float(g @ g)) * g[None, :]


def test_no_prompt_targets_not_memorized_at_tolerance_0():
    model, ds, x = _no_prompt_dataset()
    P = _far_prompt(model, x)
    for e in ds.examples:   # what the old float64 replay saw: error exactly 0
        out = forward_torch(model, e.input, P).numpy()
        assert np.array_equal(out[1], as_float(np.asarray(e.output[1], dtype=np.float64)))
    ok, msg = check_result(_result(model, ds, P))
    assert not ok and "exceeds question.tolerance 0" in msg, msg
    res = check_memorization(model, ds, timeout=20)
    assert res.status != Status.MEMORIZED, res.message
    if res.status == Status.PROVED:   # float64 targets are not exactly reachable: a proof is right
        assert check_result(res.to_json())[0]


def test_no_prompt_targets_memorized_within_a_tolerance():
    # the same witness holds once the tolerance covers the float64 rounding of the targets
    model, ds, x = _no_prompt_dataset()
    ok, msg = check_result(_result(model, ds, _far_prompt(model, x), tol="1/1000000000"))
    assert ok and "rigorous enclosures" in msg, msg


# --------------------------------------------------------------------------- exact and interval replays

def test_zero_score_witness_replays_exactly():
    model = random_model(3, heads=1, seed=2, zero_scores=True)
    ds = prop_e_dataset(model, Fraction(2), seed=2)
    res = check_memorization(model, ds, timeout=20)
    assert res.status == Status.MEMORIZED
    rj = res.to_json()
    ok, msg = check_result(rj)
    assert ok and "exactly" in msg
    bad = set_at(rj, ("certificate", "body", "prompt", 0, 0), _q(Fraction(rj["certificate"]["body"]["prompt"][0][0]) + Fraction(1, 10 ** 30)))
    assert not check_result(bad)[0]


@pytest.mark.parametrize("layers,kind,causal,heads", [(1, "hardmax", False, 1), (2, "hardmax", True, 2),
                                                      (2, "softmax", False, 2), (3, "softmax", True, 1)])
def test_planted_witness_replays_on_any_number_of_layers(layers, kind, causal, heads):
    model = random_model(3, heads=heads, seed=7, layers=layers, kind=kind, causal=causal)
    ds, prompt = planted_dataset(model, seed=7, examples=2, prompt_length=2)
    exact = kind == "hardmax"
    ok, msg = check_result(_result(model, ds, prompt, tol="0" if exact else "1/1000000000", K=2))
    assert ok, msg
    assert ("exactly" in msg) == exact
    if not exact:   # float64 targets: never within tolerance 0
        assert not check_result(_result(model, ds, prompt, tol="0", K=2))[0]


def test_enclosure_agrees_with_an_independent_forward_pass():
    model = random_model(3, heads=2, seed=3, layers=2, causal=True)
    X = np.array([[0.5, -0.25, 1.0], [0.125, 0.75, -0.5]])
    P = np.array([[0.25, 0.5, -1.0]])
    ref = forward_exact(model, X, P)
    cm = model_from_obj(model_to_json(model))
    toks = [[Fraction(float(v)) for v in row] for row in np.concatenate([P, X])]
    got = forward(cm, toks)[1:]
    for (c, r), row in zip(got, ref):
        for e, iv in enumerate(row):
            lo, hi = c[e] - r[e], c[e] + r[e]
            assert lo <= iv.hi and iv.lo <= hi          # the two enclosures intersect
            assert hi - lo < Fraction(1, 10 ** 30)     # and ours is tight


# --------------------------------------------------------------------------- what must be refused

@pytest.fixture(scope="module")
def exact_case():
    model = random_model(3, heads=1, seed=1, kind="hardmax")
    ds, prompt = planted_dataset(model, seed=1, examples=2)
    rj = _result(model, ds, prompt, K=1)
    assert check_result(rj)[0]
    return model, ds, prompt, rj


@pytest.mark.parametrize("name,body", [
    ("empty prompt", {"prompt": []}),
    ("nan", {"prompt": [[float("nan"), 0, 0]]}),
    ("inf", {"prompt": [["inf", 0, 0]]}),
    ("short token", {"prompt": [[0, 0]]}),
    ("long token", {"prompt": [[0, 0, 0, 0]]}),
    ("not a list", {"prompt": "0"}),
    ("bool entry", {"prompt": [[True, 0, 0]]}),
    ("unknown field", {"prompt": [[0, 0, 0]], "tolerance": "1"}),
    ("missing prompt", {}),
])
def test_malformed_bodies_rejected(exact_case, name, body):
    rj = copy.deepcopy(exact_case[3])
    rj["certificate"]["body"] = body
    assert not check_result(rj)[0], name


def test_prompt_length_and_norm_from_the_question(exact_case):
    model, ds, prompt, _ = exact_case
    assert not check_result(_result(model, ds, prompt, K=2))[0]
    assert check_result(_result(model, ds, prompt, K="any"))[0]
    n2 = sum(Fraction(float(v)) ** 2 for v in prompt[0])
    assert check_result(_result(model, ds, prompt, K=1, norm=_q(n2 + 1)))[0]
    # a norm bound just below the token's norm (n2 - 1/1000 < ||p||^2): refused
    below = Fraction(int((n2 - Fraction(1, 1000)) * 10 ** 6), 10 ** 6)
    from verify.checker.numbers import sqrt_down
    assert not check_result(_result(model, ds, prompt, K=1, norm=_q(sqrt_down(below))))[0]


def test_checker_loads_only_the_result_inputs(exact_case):
    model, ds, prompt, rj = exact_case
    obj = dataset_to_json(ds)
    obj["examples"][0]["output"][-1][0] = _q(Fraction(obj["examples"][0]["output"][-1][0]) + 1)
    bad = copy.deepcopy(rj)
    bad["inputs"]["dataset"] = embed(obj)
    ok, msg = check_result(bad)
    assert not ok and "exceeds" in msg
    assert dataset_from_obj(obj, 3).inputs   # the altered dataset itself is well-formed


# --------------------------------------------------------------------------- the prover's witnesses, mutated

@pytest.fixture(scope="module")
def witnesses():
    """E-witness (exact, zero-score) and control-planted (softmax, tolerance 1e-9) results."""
    m1 = random_model(3, heads=1, seed=0, zero_scores=True)
    e = check_memorization(m1, prop_e_dataset(m1, Fraction(2), seed=0), claim="E-witness", timeout=60)
    m2 = random_model(3, heads=1, seed=0)
    ds2, _ = planted_dataset(m2, seed=0, examples=2)
    c = check_memorization(m2, ds2, claim="control-planted", tolerance=Fraction(1, 10 ** 9), timeout=30)
    assert e.status == Status.MEMORIZED and c.status == Status.MEMORIZED, (e.message, c.message)
    return {"E-witness": e.to_json(), "control-planted": c.to_json()}


@pytest.mark.parametrize("name", ["E-witness", "control-planted"])
def test_witness_mutations_rejected(witnesses, name):
    rj = witnesses[name]
    muts = list(envelope_mutations(rj)) + list(body_mutations(rj))
    # the other instance's witness in this result
    other = witnesses["control-planted" if name == "E-witness" else "E-witness"]
    muts.append(("witness of the other instance", dict(copy.deepcopy(rj), certificate=other["certificate"])))
    # one more token, or one token fewer
    P = rj["certificate"]["body"]["prompt"]
    muts.append(("token appended", set_at(rj, ("certificate", "body", "prompt"), P + [P[-1]])))
    if len(P) > 1:
        muts.append(("token removed", set_at(rj, ("certificate", "body", "prompt"), P[:-1])))
    tried, rejected = assert_all_rejected(f"prompt-witness ({name})", rj, muts)
    assert tried == rejected > 40
