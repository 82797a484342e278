"""``ptverify bench limitation``: the table's structure (timings are never asserted)."""
from __future__ import annotations

import json
import os

import pytest
import z3

from constructions.datasets import l1_dataset, planted_dataset, random_model
from verify.experiments.bench import BENCH_FORMAT, encode_naive


def _run_main(argv, capsys):
    from verify.cli import main
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr()


def test_bench_limitation_writes_the_table(tmp_out, capsys):
    out = os.path.join(tmp_out, "bench.json")
    code, cap = _run_main(["bench", "limitation", "--dims", "1,2", "--naive-timeout", "1", "--json", out], capsys)
    assert code == 0, cap.err
    assert "bench limitation" in cap.out and "speedup" in cap.out
    with open(out) as fh:
        rep = json.load(fh)
    assert rep["format"] == BENCH_FORMAT and rep["bench"] == "limitation"
    assert rep["naive_timeout_s"] == 1.0 and rep["naive_prompt_length"] == 1
    assert [r["d"] for r in rep["rows"]] == [1, 2]
    for row in rep["rows"]:
        st, nv = row["structured"], row["naive"]
        assert st["status"] in ("proved", "unknown", "error", "memorized")
        assert st["status"] != "proved" or st["certificate_checked"] is True
        assert st["prompt_length"] == "any" and st["seconds"] >= 0
        assert nv["answer"] in ("sat", "unsat", "unknown", "timeout", "error", "timeout (skipped)")
        assert nv["prompt_length"] == 1
        assert (nv["seconds"] is None) == (nv["answer"] == "timeout (skipped)")
        assert set(row) >= {"heads", "head_size", "mlp_width", "examples", "speedup", "speedup_lower_bound"}
    # the naive encoding is not run again after it first runs out of time
    answers = [r["naive"]["answer"] for r in rep["rows"]]
    stopped = [i for i, a in enumerate(answers) if a in ("timeout", "unknown", "error")]
    if stopped:
        assert all(a == "timeout (skipped)" for a in answers[stopped[0] + 1:])
    # the constructed L1 datasets are proved by the structured prover
    assert all(r["structured"]["status"] == "proved" for r in rep["rows"])


@pytest.mark.parametrize("argv, field", [
    (["--dims", "0,2"], "--dims"),
    (["--dims", "two"], "--dims"),
    (["--heads", "0"], "--heads"),
    (["--naive-timeout", "0"], "--naive-timeout"),
    (["--prompt-length", "0"], "--prompt-length"),
])
def test_bench_bad_options_exit_2(tmp_out, capsys, argv, field):
    out = os.path.join(tmp_out, "bench.json")
    code, cap = _run_main(["bench", "limitation", *argv, "--json", out], capsys)
    assert code == 2 and field in cap.err
    assert not os.path.exists(out)


def _decide(model, ds, k, timeout_ms=60_000):
    assertions, info = encode_naive(model, ds, k)
    s = z3.Solver()
    s.set("timeout", timeout_ms)
    s.add(*assertions)
    return s.check(), info


def test_naive_encoding_is_satisfied_by_the_planting_prompt():
    """On a planted dataset (hardmax: exact outputs), the naive encoding with the planting prompt
    fixed is satisfiable, and a wrong target makes it unsatisfiable: the encoding is the real
    question, not a vacuous one."""
    model = random_model(2, heads=1, seed=3, kind="softmax", zero_scores=True)
    ds, prompt = planted_dataset(model, seed=3, examples=2, length=2, prompt_length=1)
    assertions, info = encode_naive(model, ds, 1)
    assert info["prompt_reals"] == 2 and info["equations"] == 2 * 2 * 2
    s = z3.Solver()
    s.add(*assertions)
    P = [z3.Real(f"p_0_{c}") for c in range(2)]
    s.push()
    s.add(*[p == z3.RealVal(str(v)) for p, v in zip(P, prompt[0].tolist())])
    assert s.check() == z3.sat
    s.pop()
    # a wrong target: no prompt gives it
    ds.examples[0].output[0] = ds.examples[0].output[0] + 1000
    assert _decide(model, ds, 1)[0] == z3.unsat


def test_naive_encoding_shares_exponentials_of_the_shared_query():
    """Both L1 examples query x_0 against the same prompt token: that exponential is one variable,
    so the two-example encoding has fewer free exponentials than two one-example encodings."""
    from constructions.model import Dataset
    model = random_model(2, heads=1, seed=0)
    ds = l1_dataset(model, seed=0)
    _, one = encode_naive(model, Dataset(ds.examples[:1]), 1)
    _, two = encode_naive(model, ds, 1)
    assert 0 < one["exp_reals_free"] and two["exp_reals_free"] < 2 * one["exp_reals_free"]
    assert two["exp_reals_enclosed"] > 0
    assert two["relu_ifs"] == 2 * model.layers[0].r
