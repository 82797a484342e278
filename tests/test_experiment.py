"""The prompt-vs-LoRA experiment: its torch forward, and the quick mode end to end."""
from __future__ import annotations

import copy
import json
import os

import numpy as np
import torch

from constructions.datasets import random_model, random_tokens
from constructions.forward import forward_torch
from constructions.lora import LoRAUpdate, apply_lora
from verify.experiments.prompt_vs_lora import FIT_TOL, TorchLayerModel, run_experiment


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


def test_quick_experiment(tmp_out):
    """Quick mode: the bound is positive, every prompt run ends at or above it, LoRA on W_2 of
    rank >= rank(Y - Yhat) fits; the result replays (bound and prompts in rigorous arithmetic)."""
    from verify.provers.bounds import experiment_result, replay_experiment
    from verify.experiments.prompt_vs_lora import _instance
    from verify.provers.loss_bound import certified_min_loss
    obj = run_experiment(tmp_out, quick=True, seed=0)
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
    model, ds = _instance("L1", l1["d"], 0)
    res = experiment_result(obj, 0, certified_min_loss(model, ds).certificate)
    assert res.status.value == "verified", res.message
    ok, msg = replay_experiment(res.certificate)
    assert ok, msg
    bad = copy.deepcopy(res.certificate)
    bad["prompts"][0]["final_loss"] += 1e-3
    assert not replay_experiment(bad)[0]
    bad = copy.deepcopy(res.certificate)
    bad["certified_min_loss_exact"] = "1000"
    assert not replay_experiment(bad)[0]
