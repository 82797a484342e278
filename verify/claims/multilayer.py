"""The Theorem M claims (M1, M2, their Z3 cross-checks, non-vacuity, the encoder counterexample);
the work is in ``verify/provers/multilayer.py``, the proofs in ``proofs/multilayer.md``."""
from __future__ import annotations

from verify.claims import Claim
from verify.result import Result, Status

__all__ = ["CLAIMS"]


def _run_prove(p: dict, outdir: str) -> Result:
    from verify.provers.multilayer import prove_multilayer
    return prove_multilayer(p.get("layers", 4), p.get("d", 16), p.get("heads", 2), p.get("condition", 1),
                            p.get("prompt_norm"), p.get("seed", 0))


def _run_cross(p: dict, outdir: str) -> Result:
    from verify.provers.multilayer import crosscheck
    return crosscheck(p["condition"], tuple(p.get("lengths", (1, 2, 3))), p.get("seed", 0),
                      p.get("timeout", 60.0), claim=f"M{p['condition']}-z3")


def _run_nonvac(p: dict, outdir: str) -> Result:
    from verify.provers.multilayer import nonvacuity
    return nonvacuity(p.get("seed", 0))


def _run_encoder(p: dict, outdir: str) -> Result:
    from verify.provers.multilayer import encoder_example
    return encoder_example(p.get("seed", 0))


_CMD = "ptverify prove multilayer"
_PROOF = "proofs/multilayer.md"
_TESTS = "tests/test_multilayer.py"
CLAIMS = [
    Claim("M1", "Theorem M, condition 1 (query-independent scores)",
          "a causal model with W_k^T W_q = 0, ||sum_j W_o^j W_v^j|| < 1 and contractive MLPs is injective in "
          "each input token for every prompt: no prompt of any length memorizes {(x, y), (x', y)}",
          Status.PROVED, _run_prove, default={"layers": 4, "d": 16, "heads": 2, "condition": 1},
          quick={"layers": 2, "d": 4, "heads": 2, "condition": 1},
          command=f"{_CMD} --layers 4 --d 16 --heads 2 --condition 1 --seed 0 --json out/r.json && ptverify replay out/r.json",
          proof=_PROOF, test=f"{_TESTS}::test_prove_condition1_replays"),
    Claim("M2", "Theorem M, condition 2 (bounded prompts, Lipschitz attention)",
          "with prompt tokens of norm <= 1, a causal softmax model whose per-layer attention Lipschitz bound "
          "and MLP contraction are < 1 on the reachable states: no prompt of any length memorizes {(x, y), (x', y)}",
          Status.PROVED, _run_prove,
          default={"layers": 4, "d": 16, "heads": 2, "condition": 2, "prompt_norm": 1},
          quick={"layers": 2, "d": 4, "heads": 2, "condition": 2, "prompt_norm": 1},
          command=f"{_CMD} --layers 4 --d 16 --heads 2 --condition 2 --prompt-norm 1 --seed 0 --json out/r.json",
          proof=_PROOF, test=f"{_TESTS}::test_prove_condition2_replays"),
    Claim("M1-z3", "Theorem M, condition 1, cross-checked by Z3 (2 layers, d = 2, prompt lengths 1..3)",
          "the injectivity certificate holds, and Z3, encoding the prompted network exactly, answers unsat on "
          "the dataset it rules out",
          Status.PROVED, _run_cross, default={"condition": 1, "lengths": [1, 2, 3]},
          quick={"condition": 1, "lengths": [1, 2, 3]},
          command="ptverify reproduce --only M1-z3", proof=_PROOF, test=f"{_TESTS}::test_z3_agrees_condition1"),
    Claim("M2-z3", "Theorem M, condition 2, cross-checked by Z3 (2 layers, d = 2, prompt lengths 1..3)",
          "the injectivity certificate holds, and Z3, on a sound linear relaxation of the prompted network "
          "(prompt norm <= 1), answers unsat on the dataset it rules out",
          Status.PROVED, _run_cross, default={"condition": 2, "lengths": [1, 2, 3]},
          quick={"condition": 2, "lengths": [1, 2]},
          command="ptverify reproduce --only M2-z3", proof=_PROOF, test=f"{_TESTS}::test_z3_agrees_condition2"),
    Claim("M-nonvacuous", "Theorem M's conditions are not vacuous",
          "a 2-layer model with ||W_o W_v|| = 2 in layer 1 (violating condition 1) memorizes a non-injective "
          "dataset with a one-token prompt found by Z3 and replayed exactly",
          Status.MEMORIZED, _run_nonvac, default={}, quick={},
          command="ptverify reproduce --only M-nonvacuous", proof=_PROOF, test=f"{_TESTS}::test_nonvacuity_replays"),
    Claim("M-encoder", "The encoder setting is not covered by condition 1",
          "a 4-layer encoder (no causal mask) with zero scores, ||W_o W_v|| < 1 and identity MLPs maps every "
          "input to -p under a one-token prompt p: it memorizes {(x, y), (x', y)}, replayed exactly",
          Status.MEMORIZED, _run_encoder, default={}, quick={},
          command="ptverify reproduce --only M-encoder", proof=_PROOF, test=f"{_TESTS}::test_encoder_counterexample"),
]
