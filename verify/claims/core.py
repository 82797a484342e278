"""Core claims: L1 (single and multi-head), L2, L3, Proposition E and the planted control."""
from __future__ import annotations

import os
from fractions import Fraction

from verify.claims import Claim
from verify.result import Status

__all__ = ["CLAIMS"]


def _side(outdir: str, name: str) -> str:
    return os.path.join(outdir, name)


def _run_l1(p: dict, outdir: str):
    from verify.provers.limitation import prove_limitation
    res, _, _ = prove_limitation(d=p["d"], heads=p["heads"], head_size=p.get("head_size"), mlp_width=p.get("mlp_width"),
                                 seed=p.get("seed", 0), side_files=_side(outdir, p.get("_id", "L1")),
                                 artifacts=os.path.join(outdir, "smt2", p.get("_id", "L1")), timeout=p.get("timeout", 120.0))
    return res


def _run_l1_multi(p: dict, outdir: str):
    res = _run_l1(dict(p, _id="L1-multihead"), outdir)
    res.claim = "L1-multihead"
    return res


def _run_l2(p: dict, outdir: str):
    from constructions.datasets import l1_dataset, random_model
    from verify.provers.limitation import check_memorization
    model = random_model(p["d"], heads=p["heads"], head_size=p.get("head_size"), seed=p.get("seed", 0))
    ds = l1_dataset(model, seed=p.get("seed", 0), examples=p["examples"])
    res = check_memorization(model, ds, claim="L2", search_witness=False, side_files=_side(outdir, "L2"),
                             artifacts=os.path.join(outdir, "smt2", "L2"))
    return res


def _run_l3(p: dict, outdir: str):
    from constructions.datasets import l3_dataset, random_model
    from verify.provers.limitation import check_memorization
    model = random_model(p["d"], heads=p["heads"], head_size=p["head_size"], seed=p.get("seed", 0))
    ds = l3_dataset(model, seed=p.get("seed", 0))
    return check_memorization(model, ds, claim="L3", search_witness=False, side_files=_side(outdir, "L3"))


def _run_e(p: dict, outdir: str, claim: str = "E"):
    from constructions.datasets import prop_e_dataset, random_model
    from verify.provers.limitation import check_memorization
    model = random_model(p["d"], heads=1, seed=p.get("seed", 0), zero_scores=True)
    ds = prop_e_dataset(model, Fraction(p["alpha"]), seed=p.get("seed", 0))
    return check_memorization(model, ds, claim=claim, timeout=60.0, side_files=_side(outdir, claim))


def _run_e_witness(p: dict, outdir: str):
    return _run_e(p, outdir, claim="E-witness")


def _run_e_length(p: dict, outdir: str):
    from constructions.datasets import long_prompt_dataset, random_model
    from verify.provers.limitation import check_memorization
    model = random_model(p["d"], heads=1, seed=p.get("seed", 5))
    ds, _ = long_prompt_dataset(model, prompt_length=p["planted_length"], seed=p.get("seed", 5))
    return check_memorization(model, ds, claim="E-length", prompt_length=p["K"], tolerance=Fraction(1, 10 ** 9),
                              search_witness=False, side_files=_side(outdir, "E-length"))


def _run_control(p: dict, outdir: str):
    from constructions.datasets import planted_dataset, random_model
    from verify.provers.limitation import check_memorization
    model = random_model(p["d"], heads=p["heads"], seed=p.get("seed", 0))
    ds, _ = planted_dataset(model, seed=p.get("seed", 0), examples=2)
    res = check_memorization(model, ds, claim="control-planted", tolerance=Fraction(1, 10 ** 9), timeout=30.0,
                             side_files=_side(outdir, "control-planted"))
    return res


CLAIMS = [
    Claim("L1", "Theorem L1 at BERT size: a dataset no prompt of any length memorizes",
          "For a random single-layer softmax transformer with certified injective MLP, the two-example "
          "dataset sharing x_0 is memorized by no prompt of any length.",
          Status.PROVED, _run_l1,
          default={"d": 768, "heads": 12, "mlp_width": 3072},
          quick={"d": 3, "heads": 1, "mlp_width": 6},
          command="ptverify prove limitation --d 768 --heads 12 --mlp-width 3072 --seed 0 --json out/r.json",
          proof="proofs/L1.md", test="tests/test_prover.py::test_constructed_l1_always_proved"),
    Claim("L1-multihead", "Theorem L1 when head output spaces overlap (no direct sum)",
          "With h s > d the heads do not decouple; K d > sum_j (rank(W_o^j W_v^j) + 1) examples sharing x_0 "
          "are memorized by no prompt of any length.",
          Status.PROVED, _run_l1_multi,
          default={"d": 3, "heads": 2, "head_size": 2, "mlp_width": 6},
          quick={"d": 3, "heads": 2, "head_size": 2, "mlp_width": 6},
          command="ptverify prove limitation --d 3 --heads 2 --head-size 2 --mlp-width 6",
          proof="proofs/L1.md", test="tests/test_prover.py::test_constructed_l1_always_proved"),
    Claim("L2", "Theorem L2: the cone condition with several examples sharing a query token",
          "Three examples sharing x_0 with generic targets: the per-example feasible sets of (alpha, beta) have "
          "empty intersection, so no prompt of any length memorizes the dataset.",
          Status.PROVED, _run_l2,
          default={"d": 8, "heads": 2, "head_size": 4, "examples": 3},
          quick={"d": 4, "heads": 2, "head_size": 2, "examples": 3},
          command="ptverify check --model examples/L2/model.json --dataset examples/L2/dataset.json --expect proved",
          proof="proofs/L2.md", test="tests/test_prover.py::test_l2_three_examples"),
    Claim("L3", "Theorem L3: no prompt leaves the attention subspace",
          "When h s < d, a target whose attention part leaves V = sum_j col(W_o^j W_v^j) is memorized by no "
          "prompt of any length.",
          Status.PROVED, _run_l3,
          default={"d": 16, "heads": 2, "head_size": 4},
          quick={"d": 4, "heads": 1, "head_size": 2},
          command="ptverify check --model examples/L3/model.json --dataset examples/L3/dataset.json --expect proved",
          proof="proofs/L3.md", test="tests/test_prover.py::test_l3_off_subspace_proved"),
    Claim("E", "Proposition E: exact any-length decision for one head (R alone is feasible here)",
          "For a zero-score head every prompt has alpha = Z_P(x_0) = its length; two examples sharing x_0 "
          "whose targets need alpha = 3/2 are memorized by no prompt of any length, although relaxation R "
          "is feasible.",
          Status.PROVED, _run_e,
          default={"d": 4, "alpha": "3/2"}, quick={"d": 3, "alpha": "3/2"},
          command="ptverify check --model examples/E/model.json --dataset examples/E/dataset.json --expect proved",
          proof="proofs/prop_E.md", test="tests/test_prover.py::test_prop_e_decides_both_ways"),
    Claim("E-witness", "Proposition E, feasible side: a constructed witness prompt that replays exactly",
          "The same construction with alpha = 2: the decision procedure builds a prompt of length 2 that "
          "memorizes the dataset exactly (rational replay).",
          Status.MEMORIZED, _run_e_witness,
          default={"d": 4, "alpha": "2"}, quick={"d": 3, "alpha": "2"},
          command="ptverify check --model examples/E/model.json --dataset examples/E/dataset-alpha2.json "
                  "--expect memorized",
          proof="proofs/prop_E.md", test="tests/test_prover.py::test_prop_e_decides_both_ways"),
    Claim("E-length", "A fixed-length limitation where the any-length claim fails",
          "Targets produced by a prompt of 4 tokens (float64, tolerance 1e-9): relaxation R plus the entropy "
          "relation g^T pi = alpha log alpha - alpha H, 0 <= H <= log K, proves that no prompt of length 1 "
          "memorizes them, although a prompt of length 4 does.",
          Status.PROVED, _run_e_length,
          default={"d": 3, "planted_length": 4, "K": 3, "seed": 5}, quick={"d": 3, "planted_length": 4, "K": 1, "seed": 5},
          command="ptverify check --model examples/E-length/model.json --dataset examples/E-length/dataset.json "
                  "--prompt-length 1 --tolerance 1e-9 --expect proved",
          proof="proofs/prop_E.md", test="tests/test_prover.py::test_fixed_length_proved_where_any_length_fails"),
    Claim("control-planted", "Control: a dataset produced by a known prompt is never 'proved'",
          "A planted dataset (float64 targets from a known prompt, tolerance 1e-9) is memorized: the prover "
          "returns a witness prompt that the independent checker replays.",
          Status.MEMORIZED, _run_control,
          default={"d": 3, "heads": 1}, quick={"d": 3, "heads": 1},
          command="ptverify check --model examples/planted/model.json --dataset examples/planted/dataset.json "
                  "--tolerance 1e-9 --expect memorized",
          proof="proofs/soundness_R.md", test="tests/test_prover.py::test_planted_never_proved"),
]
