"""Known-answer properties of the single-layer prover and its independent checker.

Constructed datasets (L1, L2, L3) are always "proved" with a certificate the checker accepts;
planted datasets (produced by a known prompt) are never "proved"; tampered certificates fail.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from constructions.datasets import (l1_dataset, l3_dataset, long_prompt_dataset, planted_dataset, prop_e_dataset,
                                    random_model)
from constructions.model import save_dataset, save_model
from verify.checker import check_result
from verify.provers.limitation import check_memorization, prove_limitation
from verify.result import Status, statement


def replay_dict(rj: dict) -> tuple[bool, str]:
    """The trusted checker on a result (side files, if any, next to it in the current folder)."""
    return check_result(rj)


def _replays(res) -> bool:
    ok, _ = replay_dict(res.to_json())
    return ok


def _body(res) -> dict:
    return res.certificate["body"]


@settings(max_examples=15)
@given(d=st.integers(1, 6), heads=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_constructed_l1_always_proved(d, heads, seed):
    # head size d // heads, so the head output spaces form a direct sum; overlapping heads are
    # covered by test_nonlinear_path_decides_overlapping_heads and the test after it
    assume(heads <= d)
    res, model, ds = prove_limitation(d=d, heads=heads, mlp_width=2 * d, seed=seed, nonlinear=False)
    assert res.status == Status.PROVED, res.message
    assert res.checks["certificate_checked"] is True
    assert _replays(res)


@pytest.mark.slow
def test_nonlinear_path_decides_overlapping_heads():
    res, model, ds = prove_limitation(d=3, heads=2, head_size=2, mlp_width=6, seed=0)
    assert res.extra["assumptions"]["direct_sum"] is False
    assert res.solver["nonlinear_R"] == "unsat"
    assert res.status == Status.PROVED and _replays(res)


def test_fully_overlapping_heads_not_claimed_without_certificate():
    # d = 1, two heads: each head's output space is the span of the other, no projection isolates
    # a head; Z3 decides R nonlinearly but "proved" needs an exact certificate
    res, model, ds = prove_limitation(d=1, heads=2, mlp_width=2, seed=0, timeout=10)
    assert res.status in (Status.UNKNOWN, Status.TIMEOUT), res.message
    assert res.certificate is None and res.to_json()["certificate"] is None


def test_l2_three_examples():
    model = random_model(4, heads=2, head_size=2, seed=3)
    ds = l1_dataset(model, seed=3, examples=3)
    res = check_memorization(model, ds, search_witness=False)
    assert res.status == Status.PROVED and _replays(res)
    assert len(_body(res)["members"]) >= 2


@settings(max_examples=10)
@given(seed=st.integers(0, 10_000), d=st.integers(3, 6))
def test_l3_off_subspace_proved(seed, d):
    model = random_model(d, heads=1, head_size=d - 2, seed=seed)
    ds = l3_dataset(model, seed=seed)
    res = check_memorization(model, ds, search_witness=False)
    assert res.status == Status.PROVED
    assert _body(res)["form"] == "subspace"
    assert _replays(res)


@settings(max_examples=12)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 4), kind=st.sampled_from(["softmax", "hardmax", "zero"]),
       heads=st.integers(1, 2), shared=st.booleans())
def test_planted_never_proved(seed, d, kind, heads, shared):
    model = random_model(d, heads=heads, head_size=max(1, d // heads), seed=seed,
                         kind="hardmax" if kind == "hardmax" else "softmax", zero_scores=kind == "zero")
    ds, prompt = planted_dataset(model, seed=seed, examples=2, shared=shared)
    res = check_memorization(model, ds, tolerance=Fraction(1, 10 ** 9), search_witness=False, nonlinear=False)
    assert res.status != Status.PROVED, res.to_json()


def test_planted_exact_hardmax_memorized_by_replayed_witness():
    model = random_model(3, heads=1, seed=1, kind="hardmax")
    ds, prompt = planted_dataset(model, seed=1, examples=2)
    res = check_memorization(model, ds, timeout=20)
    assert res.status == Status.MEMORIZED
    assert res.checks["witness_replayed"] and _replays(res)
    assert "exactly" in res.message


def _perturb(obj, path, delta=Fraction(1, 7)):
    cur = obj
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = str(Fraction(cur[path[-1]]) + delta)


def _number_paths(body):
    out = []
    for key in ("multipliers", "Phi", "gammas"):
        if key in body:
            for i, row in enumerate(body[key]):
                for j, _ in enumerate(row):
                    out.append((key, i, j))
    for i, m in enumerate(body["members"]):
        for j, _ in enumerate(m["z"]):
            out.append(("members", i, "z", j))
    for j, _ in enumerate(body["query"]):
        out.append(("query", j))
    out.append(("mlp_bound", "b1"))
    out.append(("tolerance",))
    return out


@pytest.fixture(scope="module")
def l1_result():
    res, model, ds = prove_limitation(d=3, heads=1, mlp_width=6, seed=5)
    assert res.status == Status.PROVED
    return res.to_json()


@settings(max_examples=25)
@given(data=st.data())
def test_tampered_certificate_rejected(l1_result, data):
    paths = _number_paths(l1_result["certificate"]["body"])
    path = data.draw(st.sampled_from(paths))
    res = copy.deepcopy(l1_result)
    body = res["certificate"]["body"]
    if path == ("mlp_bound", "b1"):
        body["mlp_bound"] = {"b1": "-1", "b2": "2"}   # the checker derives k itself: a carried bound is refused
    elif path == ("tolerance",):
        res["question"]["tolerance"] = "1"
        res["statement"] = statement(res["question"], "proved")
    else:
        _perturb(body, list(path), data.draw(st.sampled_from([Fraction(1, 7), Fraction(-3, 2), Fraction(10)])))
    ok, msg = replay_dict(res)
    assert not ok, f"tampered {path} accepted: {msg}"


def test_tampered_dataset_rejected(l1_result):
    res = copy.deepcopy(l1_result)
    y = res["inputs"]["dataset"]["embedded"]["examples"][0]["output"][1]
    y[0] = str(Fraction(y[0]) + Fraction(1, 3))
    ok, msg = replay_dict(res)
    assert not ok and "sha256" in msg


@settings(max_examples=6)
@given(seed=st.integers(0, 1000), K=st.integers(1, 3))
def test_any_length_proved_implies_every_length(seed, K):
    model = random_model(3, heads=1, seed=seed)
    ds = l1_dataset(model, seed=seed)
    any_res = check_memorization(model, ds, search_witness=False)
    assume(any_res.status == Status.PROVED)
    k_res = check_memorization(model, ds, prompt_length=K, search_witness=False)
    assert k_res.status == Status.PROVED and _replays(k_res)
    assert k_res.question["prompt_length"] == K


def test_tolerance_positive_min_error_and_large_tolerance_not_proved():
    model = random_model(3, heads=1, seed=2)
    ds = l1_dataset(model, seed=2)
    res = check_memorization(model, ds, search_witness=False)
    eps = Fraction(res.reported["certified_min_error"])   # derived by the trusted checker
    assert eps > 0
    below = check_memorization(model, ds, tolerance=eps / 2, search_witness=False)
    assert below.status == Status.PROVED and _replays(below)
    above = check_memorization(model, ds, tolerance=eps * 1000 + 10, search_witness=False)
    assert above.status != Status.PROVED


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "verify", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_prove_replay_and_check_files(tmp_out):
    r = _cli("prove", "limitation", "--d", "3", "--json", os.path.join(tmp_out, "r.json"),
             "--artifacts", os.path.join(tmp_out, "smt"), "--expect", "proved",
             "--save-model", os.path.join(tmp_out, "m.json"), "--save-dataset", os.path.join(tmp_out, "d.json"))
    assert r.returncode == 0, r.stderr
    assert json.load(open(os.path.join(tmp_out, "r.json")))["status"] == "proved"
    assert any(f.endswith(".smt2") for f in os.listdir(os.path.join(tmp_out, "smt")))
    assert _cli("replay", os.path.join(tmp_out, "r.json")).returncode == 0
    r = _cli("check", "--model", os.path.join(tmp_out, "m.json"), "--dataset", os.path.join(tmp_out, "d.json"),
             "--json", os.path.join(tmp_out, "c.json"), "--expect", "proved")
    assert r.returncode == 0, r.stderr + r.stdout


def test_cli_check_planted_files_not_proved(tmp_out):
    model = random_model(3, heads=1, seed=4)
    ds, _ = planted_dataset(model, seed=4)
    mp, dp = os.path.join(tmp_out, "m.npz"), os.path.join(tmp_out, "d.json")
    save_model(model, mp)
    save_dataset(ds, dp)
    r = _cli("check", "--model", mp, "--dataset", dp, "--tolerance", "1e-9", "--timeout", "10",
             "--json", os.path.join(tmp_out, "c.json"))
    assert r.returncode == 0, r.stderr
    assert json.load(open(os.path.join(tmp_out, "c.json")))["status"] in ("memorized", "unknown")
    r = _cli("check", "--model", mp, "--dataset", dp, "--tolerance", "1e-9", "--timeout", "10", "--expect", "proved")
    assert r.returncode == 1


@pytest.mark.parametrize("args,field", [
    (["--prompt-length", "0"], "--prompt-length"),
    (["--prompt-length", "many"], "--prompt-length"),
    (["--tolerance", "-1"], "--tolerance"),
    (["--tolerance", "abc"], "--tolerance"),
])
def test_cli_bad_options_exit_2(tmp_out, args, field):
    model = random_model(2, seed=0)
    ds = l1_dataset(model)
    mp, dp = os.path.join(tmp_out, "m.json"), os.path.join(tmp_out, "d.json")
    save_model(model, mp)
    save_dataset(ds, dp)
    out = os.path.join(tmp_out, "never.json")
    r = _cli("check", "--model", mp, "--dataset", dp, "--json", out, *args)
    assert r.returncode == 2 and field in r.stderr
    assert not os.path.exists(out)


def test_checker_rejects_wrong_query_token(l1_result):
    res = copy.deepcopy(l1_result)
    res["certificate"]["body"]["members"][0]["position"] = 0
    ok, msg = replay_dict(res)
    assert not ok


def test_injectivity_failure_is_named():
    model = random_model(3, seed=0, mlp_contraction=0.5)
    layer = model.layers[0]
    layer.W_1 = layer.W_1 * 64.0
    ds = l1_dataset(random_model(3, seed=0))
    res = check_memorization(model, ds, search_witness=False)
    assert res.status != Status.PROVED
    assert "injective MLP" in res.message


@settings(max_examples=8)
@given(num=st.integers(1, 9), den=st.integers(1, 3), seed=st.integers(0, 1000), d=st.integers(2, 4))
def test_prop_e_decides_both_ways(num, den, seed, d):
    alpha = Fraction(num, den)
    model = random_model(d, heads=1, seed=seed, zero_scores=True)
    ds = prop_e_dataset(model, alpha, seed=seed)
    res = check_memorization(model, ds, timeout=30)
    if alpha.denominator == 1:
        assert res.status == Status.MEMORIZED, res.message
        assert len(_body(res)["prompt"]) == alpha
    else:
        assert res.status == Status.PROVED, res.message
        assert "alpha_pieces" in _body(res)
    assert _replays(res)


def test_prop_e_fixed_length_consistency():
    model = random_model(3, heads=1, seed=2, zero_scores=True)
    ds = prop_e_dataset(model, Fraction(2), seed=2)
    assert check_memorization(model, ds, prompt_length=2, search_witness=False).status == Status.MEMORIZED
    for K in (1, 3):
        res = check_memorization(model, ds, prompt_length=K, search_witness=False)
        assert res.status == Status.PROVED and _replays(res)
    # a length-K certificate is not a proof for another length, nor for every length
    res = check_memorization(model, ds, prompt_length=1, search_witness=False).to_json()
    for other in (2, "any"):
        q = dict(res["question"], prompt_length=other)
        assert not replay_dict(dict(res, question=q, statement=statement(q, "proved")))[0]


def test_fixed_length_proved_where_any_length_fails():
    model = random_model(3, heads=1, seed=5)
    ds, prompt = long_prompt_dataset(model, prompt_length=4, seed=5)
    tol = Fraction(1, 10 ** 9)
    assert check_memorization(model, ds, tolerance=tol, search_witness=False).status != Status.PROVED
    for K in (1, 2):
        res = check_memorization(model, ds, prompt_length=K, tolerance=tol, search_witness=False)
        assert res.status == Status.PROVED, res.message
        assert "entropy_pieces" in _body(res) and _replays(res)
    # the planting length itself is never proved
    assert check_memorization(model, ds, prompt_length=4, tolerance=tol, search_witness=False).status != Status.PROVED


@settings(max_examples=6)
@given(seed=st.integers(0, 1000), L=st.integers(1, 4))
def test_long_prompt_planted_never_proved_at_its_length(seed, L):
    model = random_model(3, heads=1, seed=seed)
    ds, prompt = long_prompt_dataset(model, prompt_length=L, seed=seed)
    for K in ("any", L):
        res = check_memorization(model, ds, prompt_length=K, tolerance=Fraction(1, 10 ** 9), search_witness=False)
        assert res.status != Status.PROVED, (K, res.message)
