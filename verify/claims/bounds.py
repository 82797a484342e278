"""The prompt-vs-LoRA claims: the L4/L5 table verified on instances (L4L5) and the exact LoRA
update on an L1 dataset (L5).  The work is in ``verify/provers/bounds.py``, the proofs in
``proofs/L4.md`` and ``proofs/L5.md``."""
from __future__ import annotations

from verify.claims import Claim
from verify.result import Result, Status

__all__ = ["CLAIMS"]


def _claim_table(params: dict, outdir: str) -> Result:
    from verify.provers.bounds import run_bounds
    return run_bounds(params["d"], params["m"], params["N"], params["heads"], params["head_size"],
                      params["mlp_width"], seed=params.get("seed", 0), verify=True,
                      timeout=params.get("timeout", 30.0))


def _claim_l5(params: dict, outdir: str) -> Result:
    from constructions.datasets import l1_dataset, random_model
    from verify.provers.bounds import lora_result
    model = random_model(params["d"], heads=params["heads"], head_size=params["head_size"],
                         mlp_width=params["mlp_width"], seed=params.get("seed", 0), zero_scores=True)
    res = lora_result(model, l1_dataset(model, params.get("seed", 0)), "L5")
    res.extra["seed"] = params.get("seed", 0)
    return res


CLAIMS = [
    Claim(id="L4L5", title="prompt vs LoRA parameter table, every row verified on instances",
          statement="L4: m_p >= m N for generic targets (attained at m N on an instance); L5: rank min(d, N m) "
                    "LoRA on W_2 suffices; L1/L3: no finite prompt, low-rank LoRA", expected=Status.VERIFIED,
          run=_claim_table, default={"d": 8, "m": 2, "N": 4, "heads": 2, "head_size": 2, "mlp_width": 16},
          quick={"d": 4, "m": 2, "N": 2, "heads": 2, "head_size": 1, "mlp_width": 8},
          command="ptverify bounds --d 8 --m 2 --examples 4 --heads 2 --head-size 2 --mlp-width 16 --verify",
          proof="proofs/L4.md, proofs/L5.md", test="tests/test_bounds.py::test_bounds_verify_small"),
    Claim(id="L5", title="exact LoRA update memorizes an L1 dataset",
          statement="Delta W_2 = (Y - Yhat) H^+ memorizes exactly, rank <= min(d, N m)", expected=Status.MEMORIZED,
          run=_claim_l5, default={"d": 8, "heads": 2, "head_size": 2, "mlp_width": 16},
          quick={"d": 4, "heads": 1, "head_size": 2, "mlp_width": 8},
          command="ptverify bounds --d 8 --m 2 --examples 4 --heads 2 --head-size 2 --mlp-width 16 --verify",
          proof="proofs/L5.md", test="tests/test_bounds.py::test_lora_exact_memorizes"),
]
