"""Claims LB (the certified loss lower bound on the L1 dataset) and EXP (prompt tuning stays at or
above it while LoRA fits), and the experiment's ``ptverify-result/2``."""
from __future__ import annotations

import os
import time

from verify.claims import Claim
from verify.result import Result, Status, certificate

__all__ = ["CLAIMS", "experiment_result", "run_experiment_result"]


def _claim_loss(params: dict, outdir: str) -> Result:
    from constructions.datasets import l1_dataset, random_model
    from verify.provers.loss_bound import loss_bound_result
    model = random_model(params["d"], heads=params["heads"], head_size=params["head_size"],
                         mlp_width=params["mlp_width"], seed=params.get("seed", 0))
    return loss_bound_result(model, l1_dataset(model, params.get("seed", 0)), "any", claim="LB")


def _lora_fits(r: dict) -> bool:
    return bool(r["checks"]["lora_w2_rank_ge_needed_below_fit_tol"])


def _status(bound_positive: bool, violations: list, lora_ok: bool) -> tuple[Status, str]:
    if violations:
        return Status.ERROR, (f"{len(violations)} prompt run(s) ended below the certified bound: a bug in the "
                              "bound, the forward pass or the bookkeeping")
    if not bound_positive:
        return Status.UNKNOWN, "the certified bound is 0: nothing to compare the prompt runs with"
    if not lora_ok:
        return Status.UNKNOWN, "LoRA on W_2 of rank >= rank(Y - Yhat) did not reach the fit tolerance"
    return Status.VERIFIED, ""


def experiment_result(obj: dict, instances: dict, seed: int) -> Result:
    """The EXP result for the L1 dataset of an experiment run: its model and dataset embedded, the
    certified bound's body and every prompt run (prompt and recorded final loss) as the
    ``experiment-consistency`` certificate, checked by the trusted checker before it is claimed.
    The LoRA runs and the other datasets are measurements, reported under ``info`` only."""
    from verify.checker import check_result
    from verify.provers.loss_bound import loss_inputs
    t0 = time.perf_counter()
    l1 = obj["datasets"]["L1"]
    model, ds, cb = instances["L1"]
    runs = [{"prompt": p["prompt"], "final_loss": p["final_loss"]} for p in l1["prompt_runs"]]
    status, why = _status(cb.value > 0, l1["checks"]["violations"], _lora_fits(l1))
    checks = {f"{name}:{k}": v for name, r in obj["datasets"].items() for k, v in r["checks"].items()
              if k != "violations"}
    res = Result("EXP", status, question={"kind": "experiment"}, inputs=loss_inputs(model, ds),
                 certificate=certificate("experiment-consistency", {"bound": cb.body, "runs": runs}),
                 reported={"certified_min_loss": str(cb.value), "runs": len(runs)},
                 method="torch float64 Adam + L-BFGS; the bound and every recorded prompt re-checked rigorously",
                 checks=checks, message="\n".join(obj["findings"] + ([why] if why else [])),
                 extra={"seed": seed, "certified_min_loss": float(cb.value), "plot": obj.get("plot"),
                        "prompt_runs": [{"length": p["length"], "init": p["init"]} for p in l1["prompt_runs"]]})
    if status == Status.VERIFIED:
        ok, msg = check_result(res.to_json())
        res.checks["checker"] = ok
        if not ok:
            res.status, res.message = Status.UNKNOWN, f"{res.message}\nthe checker rejects it: {msg}"
    res.seconds = {"run": obj["seconds"], "check": time.perf_counter() - t0}
    return res


def run_experiment_result(out: str, quick: bool, seed: int, config=None, progress=None) -> tuple[dict, Result]:
    """Run the experiment into ``out`` and wrap its L1 part as the EXP result."""
    from verify.experiments.prompt_vs_lora import run_experiment
    instances: dict = {}
    obj = run_experiment(out, quick=quick, seed=seed, progress=progress, config=config, instances=instances)
    if "L1" not in instances:
        return obj, Result("EXP", Status.ERROR, message="the experiment's datasets must include L1")
    return obj, experiment_result(obj, instances, seed)


def _claim_exp(params: dict, outdir: str) -> Result:
    cfg = {k: v for k, v in params.items() if k in ("datasets", "lengths", "inits", "steps", "polish")}
    _, res = run_experiment_result(os.path.join(outdir, "prompt_vs_lora"), params.get("quick", True),
                                   params.get("seed", 0), cfg)
    return res


CLAIMS = [
    Claim(id="LB", title="certified loss lower bound for every prompt (L1 dataset)",
          statement="every prompt of every length has x_0-loss >= certified_min_loss > 0",
          expected=Status.VERIFIED, run=_claim_loss, default={"d": 8, "heads": 2, "head_size": 2, "mlp_width": 16},
          quick={"d": 4, "heads": 1, "head_size": 4, "mlp_width": 8},
          command="ptverify experiment prompt-vs-lora --quick --out ptverify-out/prompt-vs-lora-quick", proof="proofs/loss_bound.md",
          test="tests/test_checker_loss.py::test_bound_below_random_prompts"),
    Claim(id="EXP", title="prompt tuning plateaus above the certified bound, LoRA reaches ~0",
          statement="every gradient prompt-tuning run (its prompt replayed rigorously) ends at or above the "
                    "certified bound; LoRA W_2 of rank >= rank(E) ends below 1e-8 (measured)",
          expected=Status.VERIFIED, run=_claim_exp, default={"quick": False, "datasets": ["L1", "L3"]},
          quick={"quick": True, "datasets": ["L1"]},
          command="ptverify experiment prompt-vs-lora --out ptverify-out/prompt-vs-lora", proof="proofs/loss_bound.md",
          test="tests/test_experiment.py::test_quick_experiment"),
]
