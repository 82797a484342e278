"""The trusted checker on Theorem M results (verify/checker/multilayer.py, and the prompt
witnesses of the multi-layer claims): real results are accepted, and every mutation of the
envelope, of every number and field of the body, and every certificate swap is rejected."""
from __future__ import annotations

import copy
import json
from fractions import Fraction

import numpy as np
import pytest
from mutations import assert_all_rejected, body_mutations, envelope_mutations, record, set_at

from constructions.datasets import random_model
from constructions.model import Dataset, Example
from constructions.multilayer import forward_uniform_exact
from verify.checker import canonical_sha256, check_result, statement
from verify.provers.multilayer import (certify, crosscheck, encoder_example, nonvacuity, norm_grid, prove_multilayer,
                                       witness_result, _layer_matrices)
from verify.result import Status

CERT = "multilayer-injectivity"
WITNESS = "prompt-witness"


def _json(res) -> dict:
    return json.loads(json.dumps(res.to_json(), allow_nan=False))


@pytest.fixture(scope="module")
def results() -> dict:
    out = {"M1": prove_multilayer(layers=2, d=3, heads=2, condition=1, seed=2),
           "M2": prove_multilayer(layers=2, d=3, heads=2, condition=2, prompt_norm=1, seed=2),
           "M1-z3": crosscheck(1, lengths=(1,), seed=0, timeout=60),
           "M1-other": prove_multilayer(layers=2, d=3, heads=2, condition=1, seed=5),
           "M-nonvacuous": nonvacuity(seed=0, lengths=(1,)),
           "M-encoder": encoder_example(seed=0),
           "M-encoder-other": encoder_example(seed=1)}
    for name, res in out.items():
        assert res.status in (Status.PROVED, Status.MEMORIZED), (name, res.message)
    return {name: _json(res) for name, res in out.items()}


def _paste(res: dict, cert: dict) -> dict:
    return dict(copy.deepcopy(res), certificate=copy.deepcopy(cert))


@pytest.mark.parametrize("name", ["M1", "M2", "M1-z3"])
def test_injectivity_results_hold_and_every_mutation_is_rejected(results, name):
    res = results[name]
    assert check_result(res)[0]
    assert res["certificate"]["kind"] == CERT and set(res["inputs"]) == {"model", "dataset"}
    muts = list(envelope_mutations(res)) + list(body_mutations(res))
    tried, rejected = assert_all_rejected(CERT, res, muts)
    assert tried == rejected and tried > 60


def test_injectivity_certificate_swaps_are_rejected(results):
    """M1's certificate on M2's instance and back, another M1 instance's certificate, and each
    with the condition relabelled: the grid norms are canonical for one model only."""
    muts = []
    for a, b in (("M1", "M2"), ("M2", "M1"), ("M1", "M1-other"), ("M1-other", "M1"), ("M1-z3", "M1"),
                 ("M1", "M1-z3"), ("M2", "M1-z3")):
        muts.append((f"{b} certificate in {a}", _paste(results[a], results[b]["certificate"])))
        for cond in (0, 1, 2):
            cert = copy.deepcopy(results[b]["certificate"])
            cert["body"]["condition"] = cond
            if cert != results[a]["certificate"]:
                muts.append((f"{b} certificate (condition {cond}) in {a}", _paste(results[a], cert)))
    assert_all_rejected(f"{CERT} (swaps)", results["M1"], muts)


def _rehashed(res: dict, path: tuple, value) -> dict:
    out = set_at(res, ("inputs", "dataset", "embedded") + path, value)
    out["inputs"]["dataset"]["sha256"] = canonical_sha256(out["inputs"]["dataset"]["embedded"])
    return out


def _input_blind(name: str) -> bool:
    """The envelope's re-hashed change of the second example's input token.  Both claims exist to
    show a model whose output ignores it (the encoder maps every input to -p; the violating model
    erases the first coordinate under a one-token prompt), so the changed dataset is still
    memorized by the same prompt: the checker must accept it (checked below), and the targets'
    re-hashed changes stand in for it."""
    return name.startswith("inputs.dataset.embedded['examples', 1, 'input', 0, 0]") and name.endswith("rehashed")


@pytest.mark.parametrize("name", ["M-nonvacuous", "M-encoder"])
def test_witness_results_hold_and_every_mutation_is_rejected(results, name):
    res = results[name]
    assert check_result(res)[0]
    assert res["certificate"]["kind"] == WITNESS and res["question"]["prompt_length"] == 1
    muts = list(envelope_mutations(res)) + list(body_mutations(res))
    # the models ignore this input entry, so the changed (re-hashed) dataset is still memorized
    x = res["inputs"]["dataset"]["embedded"]["examples"][1]["input"][0][0]
    blind = _rehashed(res, ("examples", 1, "input", 0, 0), str(Fraction(x) + 1))
    assert check_result(blind)[0]
    assert not any(_input_blind(n) for n, _ in muts)
    for i, ex in enumerate(res["inputs"]["dataset"]["embedded"]["examples"]):
        for e, v in enumerate(ex["output"][0]):
            muts.append((f"target [{i}][{e}] rehashed", _rehashed(res, ("examples", i, "output", 0, e),
                                                                  str(Fraction(v) + Fraction(1, 64)))))
    other = "M-encoder-other" if name == "M-encoder" else "M-encoder"
    muts.append((f"{other} witness", _paste(res, results[other]["certificate"])))
    tried, rejected = assert_all_rejected(WITNESS, res, muts)
    assert tried == rejected and tried > 30


def test_injectivity_certificate_is_not_a_witness_and_back(results):
    """A proof's certificate in a memorization result, and a witness in a proof, restated."""
    muts = []
    for a, b in (("M1", "M-nonvacuous"), ("M-encoder", "M1"), ("M-nonvacuous", "M2")):
        st = "proved" if results[b]["certificate"]["kind"] == CERT else "memorized"
        m = _paste(results[a], results[b]["certificate"])
        m["status"], m["statement"] = st, statement(m["question"], st)
        muts.append((f"{b} certificate in {a} as {st}", m))
    assert_all_rejected(f"{CERT} (kind swaps)", results["M1"], muts)


# --------------------------------------------------------------------------- a memorizable single-layer instance

def _memorizable_single_layer(causal: bool):
    """A one-layer zero-score model and {(x, g([p, x])), (x', g([p, x']))}: memorized by p."""
    m = random_model(3, heads=1, layers=1, seed=4, zero_scores=True, causal=causal, value_scale=0.3)
    rng = np.random.default_rng(7)
    p, x, x2 = (np.trunc(v / np.linalg.norm(v) * 0.9 * 64) / 64 for v in rng.normal(size=(3, 1, 3)))
    xs = [x, x2]
    ds = Dataset([Example(x, [forward_uniform_exact(m, x, p)[0]]) for x in xs])
    wit, ok, msg = witness_result("single", m, ds, [[str(Fraction(float(v))) for v in p[0]]], "construction")
    assert ok, msg
    return m, ds, _json(wit)


def _as_proof(res: dict, cert: dict, question: dict) -> dict:
    out = dict(copy.deepcopy(res), certificate=copy.deepcopy(cert), question=question)
    out["status"], out["statement"] = "proved", statement(question, "proved")
    out.pop("reported", None)
    return out


@pytest.mark.parametrize("causal", [False, True])
def test_multilayer_certificate_on_a_memorizable_instance_is_rejected(results, causal):
    """M1's and M2's certificates pasted into a single-layer memorizable instance's result (as a
    proof), and a certificate forged for that instance with its true canonical norms: rejected
    (the model is not causal, the norm list belongs to another model, or the pair's margin
    c^2 ||x - x'||^2 - ||y - y'||^2 is <= 0 because the targets are the model's own outputs)."""
    m, ds, wit = _memorizable_single_layer(causal)
    assert check_result(wit)[0]
    assert certify(m, ds, 1)[0] is None
    q_any = {"kind": "memorization", "prompt_length": "any", "tolerance": "0"}
    q_norm = dict(q_any, prompt_norm="1")
    muts = [(f"{n} certificate", _as_proof(wit, results[n]["certificate"], q)) for n, q in
            (("M1", q_any), ("M2", q_norm), ("M1-z3", q_any))]
    for cond, q in ((1, q_any), (2, q_norm)):
        norms = {name: norm_grid(W) for name, W in _layer_matrices(m, cond).items()}
        cert = {"format": "ptverify-certificate/1", "kind": CERT,
                "body": {"condition": cond, "norms": norms, "pair": {"examples": [0, 1], "position": 0}}}
        muts.append((f"forged condition {cond}", _as_proof(wit, cert, q)))
    tried, rejected = 0, 0
    for name, mres in muts:
        ok, msg = check_result(mres)
        tried, rejected = tried + 1, rejected + (not ok)
        assert not ok, name
        if name.startswith("forged") and causal:
            assert "not separated" in msg, msg
        if not causal:
            assert "not causal" in msg, msg
    record(f"{CERT} (single-layer memorizable)", tried, rejected)


def test_condition1_accepts_any_prompt_norm_and_length(results):
    """Condition 1 holds for every prompt: the question may bound the norm or fix the length."""
    res = results["M1"]
    for q in ({"prompt_norm": "1/2"}, {"prompt_length": 3}, {"prompt_norm": "100", "prompt_length": 1}):
        m = copy.deepcopy(res)
        m["question"].update(q)
        m["statement"] = statement(m["question"], "proved")
        assert check_result(m)[0], q


def test_condition2_needs_the_questions_prompt_norm(results):
    res = copy.deepcopy(results["M2"])
    del res["question"]["prompt_norm"]
    res["statement"] = statement(res["question"], "proved")
    ok, msg = check_result(res)
    assert not ok and "prompt_norm" in msg
