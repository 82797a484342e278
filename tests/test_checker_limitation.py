"""The trusted checker's ``limitation-farkas`` kind: the producer's certificates hold, every
mutation of them is rejected, and what the checker derives itself (k, logarithms, ranks, the
certified minimum error, the question's tolerance and prompt length) cannot be forged."""
from __future__ import annotations

import copy
import math
from fractions import Fraction

import numpy as np
import pytest
from mutations import assert_all_rejected, body_mutations, envelope_mutations, set_at

import verify.provers.limitation as prover
from constructions.datasets import l1_dataset, l3_dataset, long_prompt_dataset, prop_e_dataset, random_model
from constructions.model import Dataset, Example
from verify.checker import canonical_sha256, check_result
from verify.checker.limitation import full_column_rank, log_above, log_below, norm_upper
from verify.checker.numbers import Mat, exp_bounds
from verify.result import Status, statement


def _proved(res) -> dict:
    assert res.status == Status.PROVED, res.message
    return res.to_json()


def _check(model, ds, **kw):
    return prover.check_memorization(model, ds, search_witness=False, nonlinear=False, **kw)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """name -> (result JSON, folder of its side files), one per certificate shape."""
    out = {}
    r, _, _ = prover.prove_limitation(d=3, heads=1, mlp_width=6, seed=0, nonlinear=False)
    out["L1 annihilator"] = (_proved(r), ".")
    m = random_model(4, heads=2, head_size=2, seed=0)
    out["L2 annihilator+Phi"] = (_proved(_check(m, l1_dataset(m, seed=0, examples=3))), ".")
    m = random_model(4, heads=1, head_size=2, seed=0)
    out["L3 subspace"] = (_proved(_check(m, l3_dataset(m, seed=0))), ".")
    m = random_model(3, heads=1, seed=0, zero_scores=True)
    out["E alpha pieces"] = (_proved(_check(m, prop_e_dataset(m, Fraction(3, 2), seed=0))), ".")
    m = random_model(3, heads=1, seed=2, zero_scores=True)
    out["E alpha piece K=3"] = (_proved(_check(m, prop_e_dataset(m, Fraction(2), seed=2), prompt_length=3)), ".")
    m = random_model(3, heads=1, seed=5)
    ds, _ = long_prompt_dataset(m, prompt_length=4, seed=5)
    out["E-length entropy pieces"] = (_proved(_check(m, ds, prompt_length=1, tolerance=Fraction(1, 10 ** 9))), ".")
    # direct sum (d > 48): model and dataset as content-addressed side files
    base = str(tmp_path_factory.mktemp("direct-sum"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(prover, "_INLINE_LIMIT", 0)
        r, _, _ = prover.prove_limitation(d=50, heads=2, seed=0, side_files=base + "/r", nonlinear=False)
    r.write(base + "/r.json")                   # copies the side files next to the result
    out["direct-sum"] = (_proved(r), base)
    forms = {k: v[0]["certificate"]["body"] for k, v in out.items()}
    assert forms["direct-sum"]["form"] == "direct-sum" and "file" in out["direct-sum"][0]["inputs"]["model"]
    assert "Phi" in forms["L2 annihilator+Phi"] and forms["L3 subspace"]["form"] == "subspace"
    assert "alpha_pieces" in forms["E alpha pieces"] and "entropy_pieces" in forms["E-length entropy pieces"]
    return out


def _extra_mutations(rj: dict):
    """Targeted changes that must break the certificate (beyond the generic ones)."""
    yield "question.prompt_norm set", _restated(rj, prompt_norm="1000")
    body = rj["certificate"]["body"]
    yield "members[0].position -1", set_at(rj, ("certificate", "body", "members", 0, "position"), -1)
    yield "members duplicated", set_at(rj, ("certificate", "body", "members"), body["members"] + body["members"][:1])
    yield "mlp_bound carried", set_at(rj, ("certificate", "body", "mlp_bound"), {"b1": "-1", "b2": "2"})
    E = rj.get("reported", {}).get("certified_min_error")
    if E is not None:   # holds exactly for EPS < E (E is reported rounded down to 64 bits)
        yield "tolerance 2 E", _restated(rj, tolerance=str(2 * Fraction(E)))
        yield "reported E + tiny", set_at(rj, ("reported", "certified_min_error"), str(Fraction(E) + Fraction(1, 10 ** 40)))
    # (a positively scaled Farkas vector is still a certificate with the same min error: see
    # test_scaled_multipliers_still_prove_with_the_same_min_error; it is not a mutation to reject)


def _one_per_leaf(mutations) -> list:
    """Every leaf of the body once, the kind of perturbation cycling from leaf to leaf (the
    50-dimensional direct-sum body has ~300 numbers; each full check loads a 50 x 100 model)."""
    by_leaf: dict = {}
    for name, m in mutations:
        by_leaf.setdefault(name.split("#")[0], []).append((name, m))
    return [ms[i % len(ms)] for i, ms in enumerate(by_leaf.values())]


def _restated(rj: dict, **question) -> dict:
    q = dict(rj["question"], **question)
    return dict(copy.deepcopy(rj), question=q, statement=statement(q, rj["status"]))


def _all_mutations(results, name: str, body) -> None:
    rj, base = results[name]
    assert check_result(rj, base)[0]
    muts = list(envelope_mutations(rj)) + list(body) + list(_extra_mutations(rj))
    for other, (oj, _) in results.items():   # another instance's certificate pasted in
        if other != name:
            muts.append((f"certificate of {other}", dict(copy.deepcopy(rj), certificate=oj["certificate"])))
    tried, rejected = assert_all_rejected(f"limitation-farkas ({name})", rj, muts, base_dir=base)
    assert tried == rejected > 40


@pytest.mark.parametrize("name", ["L1 annihilator", "L2 annihilator+Phi", "L3 subspace", "E alpha pieces",
                                  "E alpha piece K=3", "E-length entropy pieces", "direct-sum"])
def test_every_mutation_rejected(results, name):
    rj = results[name][0]
    _all_mutations(results, name, body_mutations(rj) if name != "direct-sum" else _one_per_leaf(body_mutations(rj)))


@pytest.mark.slow
def test_every_direct_sum_body_perturbation_rejected(results):
    """All four perturbations of every number of the direct-sum body (~1300 checks, ~40 s)."""
    _all_mutations(results, "direct-sum", body_mutations(results["direct-sum"][0]))


# --------------------------------------------------------------------------- what the checker derives

def test_min_error_is_exact_and_sharp(results):
    rj, _ = results["L1 annihilator"]
    E = Fraction(rj["reported"]["certified_min_error"])
    assert E > 0
    assert check_result(_restated(rj, tolerance=str(E * Fraction(99, 100))))[0]
    ok, msg = check_result(_restated(rj, tolerance=str(E * Fraction(101, 100))))
    assert not ok and "not separated" in msg, msg
    # a result need not report it; a forged one is refused
    assert check_result({k: v for k, v in rj.items() if k != "reported"})[0]


def test_scaled_multipliers_still_prove_with_the_same_min_error(results):
    # a positively scaled Farkas vector is still a certificate; the min error it implies is the same
    # number, so the only way to forge `reported` is refused above
    rj, _ = results["L1 annihilator"]
    body = rj["certificate"]["body"]
    scaled = set_at(rj, ("certificate", "body", "multipliers"), [[str(Fraction(v) * 3) for v in row] for row in body["multipliers"]])
    assert check_result(scaled)[0]


def test_norm_bound_never_negative_and_rigorous():
    rng = np.random.default_rng(0)
    for shape in ((3, 6), (6, 3), (50, 60), (1, 1)):
        W = rng.normal(size=shape)
        b = norm_upper(Mat.from_float(W))
        assert b >= Fraction(float(np.linalg.svd(W, compute_uv=False).max()))
    assert norm_upper(Mat.from_float(np.zeros((2, 3)))) == 0


def _rehash(rj: dict, edit) -> dict:
    out = copy.deepcopy(rj)
    edit(out["inputs"]["model"]["embedded"])
    out["inputs"]["model"]["sha256"] = canonical_sha256(out["inputs"]["model"]["embedded"])
    return out


def test_non_injective_mlp_rejected(results):
    rj, _ = results["L1 annihilator"]

    def blow_up(m):
        W = m["layers"][0]["mlp"]["W_1"]
        m["layers"][0]["mlp"]["W_1"] = [[v * 64 for v in row] for row in W]
    ok, msg = check_result(_rehash(rj, blow_up))
    assert not ok and "not certified injective" in msg


def test_hardmax_only_subspace(results):
    def hard(m):
        m["layers"][0]["attention"]["kind"] = "hardmax"
    ok, msg = check_result(_rehash(results["L1 annihilator"][0], hard))
    assert not ok and "only the subspace form" in msg
    assert check_result(_rehash(results["L3 subspace"][0], hard))[0]   # L3 holds for hardmax too


def test_logs_bracket_the_logarithm():
    for a in (Fraction(1), Fraction(2), Fraction(3), Fraction(1, 7), Fraction(10 ** 9), Fraction(123456789, 1 << 40)):
        lo, hi = log_below(a), log_above(a)
        assert lo <= hi and hi - lo < Fraction(1, 1 << 70)
        assert exp_bounds(lo)[1] <= a <= exp_bounds(hi)[0]
        assert abs(float(lo) - math.log(a)) < 1e-12


def test_full_column_rank():
    rng = np.random.default_rng(1)
    A, B = Mat.from_float(rng.normal(size=(5, 2))), Mat.from_float(rng.normal(size=(5, 3)))
    assert full_column_rank([A, B])
    assert not full_column_rank([A, A])
    assert not full_column_rank([A, B, A])   # more columns than rows


def test_length_certificate_rejected_for_any_length(results):
    for name in ("E alpha piece K=3", "E-length entropy pieces"):
        rj, _ = results[name]
        ok, msg = check_result(_restated(rj, prompt_length="any"))
        assert not ok, name


def test_causal_keys_are_the_prefix():
    model = random_model(3, heads=1, seed=4, causal=True)
    ds = l1_dataset(model, seed=4)
    exs = [Example(input=np.concatenate([e.input, e.input[:1]]), output=list(e.output) + [None]) for e in ds.examples]
    res = _check(model, Dataset(exs))
    rj = _proved(res)
    assert check_result(rj)[0]

    def non_causal(m):
        m["causal"] = False
    assert not check_result(_rehash(rj, non_causal))[0]
