"""The prompt-vs-LoRA experiment: its torch forward, the quick mode end to end, and its
``experiment-consistency`` result under the trusted checker (every mutation rejected)."""
from __future__ import annotations

import json
import os
import re
from fractions import Fraction

import numpy as np
import pytest
import torch
from mutations import assert_all_rejected, body_mutations, envelope_mutations, set_at

from constructions.datasets import random_model, random_tokens
from constructions.forward import forward_torch
from constructions.lora import LoRAUpdate, apply_lora
from constructions.model import as_float
from verify.checker import canonical_sha256, check_result
from verify.checker.loss import RUN_TOLERANCE
from verify.claims.experiment import run_experiment_result
from verify.experiments.prompt_vs_lora import FIT_TOL, TorchLayerModel, _instance

#: a small but complete configuration: L1 only, prompts of lengths 1 and 2, LoRA on W_2
SMALL = {"datasets": ["L1"], "lengths": [1, 2], "inits": 1, "lora_targets": ["W_2"]}


def test_torch_model_matches_forward_torch():
    for causal in (False, True):
        model = random_model(4, heads=2, head_size=2, mlp_width=8, seed=4, causal=causal)
        rng = np.random.default_rng(1)
        X, P = random_tokens(rng, 3, 4), random_tokens(rng, 2, 4)
        ref = forward_torch(model, X, P)
        got = TorchLayerModel(model)(torch.as_tensor(X)[None], torch.as_tensor(P)[None])[0]
        assert torch.allclose(ref, got, atol=1e-13)
        # a LoRA delta on W_2 agrees with the model that has it applied
        B, A = rng.normal(size=(4, 1)), rng.normal(size=(1, 8))
        ref = forward_torch(apply_lora(model, [LoRAUpdate("W_2", B, A)]), X, P)
        got = TorchLayerModel(model)(torch.as_tensor(X)[None], torch.as_tensor(P)[None],
                                     {(0, None, "W_2"): torch.as_tensor(B @ A)})[0]
        assert torch.allclose(ref, got, atol=1e-12)


def _json(res) -> dict:
    return json.loads(json.dumps(res.to_json()))


def test_quick_experiment(tmp_out):
    """Quick mode: the bound is positive, every prompt run ends at or above it, LoRA on W_2 of
    rank >= rank(Y - Yhat) fits; the result is accepted by the trusted checker."""
    obj, res = run_experiment_result(tmp_out, True, 0)
    assert os.path.getsize(os.path.join(tmp_out, "prompt_vs_lora.png")) > 10_000
    with open(os.path.join(tmp_out, "prompt_vs_lora.json")) as fh:
        js = json.load(fh)
    l1 = js["datasets"]["L1"]
    bound = js["certified_min_loss"]
    assert bound > 0 and bound == l1["certified_min_loss"]
    for name, r in js["datasets"].items():
        assert all(p["final_loss"] >= r["certified_min_loss"] for p in r["prompt_runs"]), name
        need = r["lora_w2_prediction"]["rank_needed"]
        for p in r["lora_runs"]:
            if p["target"] == "W_2" and p["rank"] >= need:
                assert p["final_loss"] < FIT_TOL, (name, p["rank"], p["final_loss"])
            if p["target"] == "W_2" and p["rank"] < need:   # Eckart-Young floor, so the optimizer is sane
                floor = r["lora_w2_prediction"]["floor_by_rank"][str(p["rank"])]
                assert p["final_loss"] >= floor * (1 - 1e-6)
    assert res.status.value == "verified", res.message
    rj = _json(res)
    ok, msg = check_result(rj)
    assert ok, msg
    assert Fraction(rj["reported"]["certified_min_loss"]) == Fraction(l1["certified_min_loss_exact"])
    assert len(rj["certificate"]["body"]["runs"]) == len(l1["prompt_runs"]) == 8
    bad = set_at(rj, ("certificate", "body", "runs", 0, "final_loss"), rj["certificate"]["body"]["runs"][0]["final_loss"] + 1e-3)
    assert not check_result(bad)[0]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    _, res = run_experiment_result(str(tmp_path_factory.mktemp("exp")), True, 0, config=SMALL)
    assert res.status.value == "verified", res.message
    return _json(res)


def _torch_loss(res: dict, prompt) -> float:
    model, ds = _instance("L1", 4, 0)
    P = np.asarray(prompt, dtype=np.float64)
    tot = 0.0
    for ex in ds.examples:
        out = forward_torch(model, ex.input, P).numpy()
        for t, y in enumerate(ex.output):
            if y is not None:
                tot += float(((out[t] - as_float(np.asarray(y))) ** 2).sum())
    return tot


_ENTRY = re.compile(r"body\['runs', (\d+), 'prompt', (\d+), (\d+)\]#\d$")


def _flat_entries(res: dict, muts: list) -> tuple:
    """Prompt-entry mutations that leave a valid record.  The optimizer drives the prompts toward
    infinity (the infimum of the L1 loss is not attained), where the loss is flat: moving one entry
    of a prompt of entries ~100 changes its loss by as little as 1e-15 relative, and the record is
    then a correct record of that other prompt (loss >= the bound, recorded loss within the
    tolerance).  Which ones these are is decided here independently of the checker: the float64
    forward of constructions/forward.py (which agrees with the checker's enclosure to about 1e-16)
    moves the loss by at most the checker's tolerance, 1e-9 (1 + loss)."""
    allowed = []
    for name, m in muts:
        hit = _ENTRY.match(name)
        if not hit:
            continue
        n, a, j = map(int, hit.groups())
        run = m["certificate"]["body"]["runs"][n]
        v = run["prompt"][a][j]
        if not isinstance(v, float) or not np.isfinite(v):
            continue
        rec = run["final_loss"]
        if abs(_torch_loss(m, run["prompt"]) - rec) <= float(RUN_TOLERANCE) * (1 + rec):
            allowed.append(name)
    return tuple(allowed)


def test_experiment_mutations_rejected(small):
    """Every envelope and body mutation of a real result, swaps of the bound and of the whole
    certificate, forged reported numbers, runs dropped or repeated, moved targets: all rejected,
    except prompt entries the loss does not depend on (see _flat_entries)."""
    res = small
    body = res["certificate"]["body"]
    B = Fraction(res["reported"]["certified_min_loss"])
    muts = list(envelope_mutations(res)) + list(body_mutations(res))
    z = random_model(4, heads=1, head_size=4, mlp_width=8, seed=0, zero_scores=True)
    from constructions.datasets import l1_dataset
    from verify.provers.loss_bound import certified_min_loss, loss_bound_result
    other_bound = certified_min_loss(z, l1_dataset(z, 0)).body
    lb = _json(loss_bound_result(*_instance("L1", 4, 0)))
    runs = body["runs"]
    r0 = runs[0]
    muts += [
        ("bound swapped with another instance's", set_at(res, ("certificate", "body", "bound"), other_bound)),
        ("certificate swapped with the LB result's", dict(res, certificate=lb["certificate"])),
        ("LB certificate under the experiment question", dict(lb, question=res["question"], statement=res["statement"])),
        ("reported certified_min_loss x 2", set_at(res, ("reported", "certified_min_loss"), str(2 * B))),
        ("reported certified_min_loss + 1e-12", set_at(res, ("reported", "certified_min_loss"), str(B + Fraction(1, 10 ** 12)))),
        ("reported runs + 1", set_at(res, ("reported", "runs"), len(runs) + 1)),
        ("run dropped", set_at(res, ("certificate", "body", "runs"), runs[1:])),
        ("run repeated", set_at(res, ("certificate", "body", "runs"), runs + [r0])),
        ("runs empty", set_at(res, ("certificate", "body", "runs"), [])),
        ("final_loss + 1e-6 relative", set_at(res, ("certificate", "body", "runs", 0, "final_loss"), r0["final_loss"] * (1 + 1e-6))),
        ("final_loss below the bound", set_at(res, ("certificate", "body", "runs", 0, "final_loss"), float(B) / 2)),
        ("prompt token dropped", set_at(res, ("certificate", "body", "runs", 1, "prompt"), runs[1]["prompt"][:1])),
        ("prompt emptied", set_at(res, ("certificate", "body", "runs", 0, "prompt"), [])),
        ("prompt zeroed", set_at(res, ("certificate", "body", "runs", 0, "prompt"), [[0.0] * 4])),
    ]
    assert res["inputs"]["dataset"]["embedded"]["examples"][0]["output"][1] is not None
    moved = set_at(res, ("inputs", "dataset", "embedded", "examples", 0, "output", 1, 0), "1/3")
    moved["inputs"]["dataset"]["sha256"] = canonical_sha256(moved["inputs"]["dataset"]["embedded"])
    muts.append(("target moved, re-hashed", moved))
    allow = _flat_entries(res, muts)
    tried, rejected = assert_all_rejected("experiment-consistency", res, muts, allow=allow)
    n_entries = sum(1 for name, _ in muts if _ENTRY.match(name))
    assert tried == rejected > 250 and len(allow) < n_entries


def test_cli_experiment_writes_a_checked_result(tmp_out, monkeypatch):
    """``ptverify experiment prompt-vs-lora`` writes OUT/result.json, which the checker accepts."""
    from typer.testing import CliRunner

    import verify.experiments.prompt_vs_lora as pvl
    from verify.cli import app
    small_cfg = pvl._config

    def cfg(quick):
        return dict(small_cfg(quick), **SMALL)
    monkeypatch.setattr(pvl, "_config", cfg)
    r = CliRunner().invoke(app, ["experiment", "prompt-vs-lora", "--quick", "--out", tmp_out, "--expect", "verified"])
    assert r.exit_code == 0, r.output
    from verify.checker import check_file
    ok, msg = check_file(os.path.join(tmp_out, "result.json"))
    assert ok, msg
    r = CliRunner().invoke(app, ["experiment", "prompt-vs-lora", "--quick", "--out", tmp_out, "--seed", "-1"])
    assert r.exit_code == 2 and "--seed" in r.output
