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
    code, cap = _run_main(["bench", "limitation", "--dims", "1,2", "--naive-timeout", "1", "--naive-max-d", "1",
                           "--json", out], capsys)
    assert code == 0, cap.err
    assert "bench limitation" in cap.out and "speedup" in cap.out
    with open(out) as fh:
        rep = json.load(fh)
    assert rep["format"] == BENCH_FORMAT and rep["bench"] == "limitation"
    assert rep["naive_timeout_s"] == 1.0 and rep["naive_prompt_length"] == 1 and rep["naive_max_d"] == 1
    assert [r["d"] for r in rep["rows"]] == [1, 2]
    assert set(rep["growth"]) >= {"prove", "prove_cpu", "replay", "replay_cpu", "peak_memory", "fit_min_d"}
    assert rep["growth"]["prove"] is None          # no rows with d >= 64: nothing to fit
    assert rep["rows"][1]["naive"]["answer"] in ("not run (d > --naive-max-d)", "timeout (skipped)")
    for row in rep["rows"]:
        st, nv = row["structured"], row["naive"]
        assert st["status"] in ("proved", "unknown", "error", "memorized")
        assert st["status"] != "proved" or st["certificate_checked"] is True
        assert st["prompt_length"] == "any" and st["seconds"] >= 0
        assert nv["answer"] in ("sat", "unsat", "unknown", "timeout", "error", "timeout (skipped)",
                                "not run (d > --naive-max-d)")
        assert nv["prompt_length"] == 1
        assert (nv["seconds"] is None) == (nv["answer"] in ("timeout (skipped)", "not run (d > --naive-max-d)"))
        # per-stage times, peak memory, and the trusted checker's own run on the written result
        assert st["peak_mb"] > 0 and st["cpu_seconds"] >= 0
        assert set(st["stages"]) >= {"instance", "mlp_bound", "preimages", "relaxation", "check"}
        assert st["replay"] is not None and st["replay"]["ok"] is True and st["replay"]["peak_mb"] > 0
        assert set(row) >= {"heads", "head_size", "mlp_width", "examples", "speedup", "speedup_lower_bound"}
    assert "growth exponent" in cap.out and "stages" in cap.out
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
    (["--naive-max-d", "0"], "--naive-max-d"),
    (["--naive-form", "text"], "--naive-form"),
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


def test_growth_exponent_fits_the_slope():
    from verify.experiments.bench import growth_exponent
    rows = [{"d": d, "t": 2.0 * d ** 3} for d in (8, 64, 128, 512)]
    assert abs(growth_exponent(rows, lambda r: r["t"]) - 3.0) < 1e-9     # d = 8 is below the fit
    assert growth_exponent(rows[:2], lambda r: r["t"]) is None


# --------------------------------------------------------------------------- the checker's fast exact paths

def _fractions_of(a):
    from fractions import Fraction
    return [[Fraction(float(v)) for v in row] for row in a]


def test_limb_products_equal_object_arithmetic():
    """Products of a binary64 matrix with big rational vectors on int64 limbs equal the products
    in Python integers, entry for entry (wide exponent ranges, zeros, negative entries)."""
    import numpy as np
    from fractions import Fraction
    from verify.checker.numbers import LIMB_MIN_SIZE, Mat
    rng = np.random.default_rng(5)
    A = rng.normal(size=(90, 70)) * np.exp(rng.normal(size=(90, 70)) * 4)
    A[0, :] = 0.0
    A[1, 1], A[2, 2] = 1e-200, -3e150
    assert A.size >= LIMB_MIN_SIZE
    fast, slow = Mat.from_float(A), Mat.from_fractions(_fractions_of(A))
    assert fast.D == slow.D and (fast.N == slow.N).all()
    xs = [[Fraction(int(v) * 10 ** 40 + 1, 3 ** int(e)) for v, e in zip(rng.integers(-10 ** 9, 10 ** 9, 70),
                                                                        rng.integers(0, 30, 70))] for _ in range(3)]
    assert fast.mv_many(xs) == slow.mv_many(xs)
    y = [Fraction(int(v), 7) for v in rng.integers(-10 ** 12, 10 ** 12, 90)]
    assert fast.vm(y) == slow.vm(y)


def test_grid_norm_bound_is_a_function_of_the_values_and_an_upper_bound():
    import numpy as np
    from verify.checker.limitation import _grid_sums, norm_upper
    from verify.checker.numbers import Mat
    rng = np.random.default_rng(6)
    A = rng.normal(size=(100, 60)) * np.exp(rng.normal(size=(100, 60)))
    A[3, 4] = 5e-320                                   # subnormal: rounded up to one grid step
    fast, slow = Mat.from_float(A), Mat.from_fractions(_fractions_of(A))
    assert _grid_sums(fast) == _grid_sums(slow)
    assert norm_upper(fast) == norm_upper(slow) >= np.linalg.norm(A, 2)
    n1, ninf, _ = _grid_sums(fast)
    assert n1 >= np.abs(A).sum(axis=0).max() and ninf >= np.abs(A).sum(axis=1).max()


def test_blocked_rank_mod_p_agrees_with_plain_elimination():
    import numpy as np
    from verify.checker.limitation import PRIMES, _full_rank_mod_p
    from verify.checker.numbers import is_prime
    assert all(is_prime(p) and p < 1 << 27 for p in PRIMES)
    p, rng = PRIMES[0], np.random.default_rng(7)

    def plain(A):                  # column by column, no blocking
        A, r = A.copy(), 0
        for c in range(A.shape[1]):
            nz = np.nonzero(A[r:, c])[0]
            if nz.size == 0:
                return False
            k = r + int(nz[0])
            A[[r, k]] = A[[k, r]]
            f = (A[r + 1:, c] * pow(int(A[r, c]), p - 2, p)) % p
            A[r + 1:, c:] = (A[r + 1:, c:] - (f[:, None] * A[r, c:][None, :]) % p) % p
            r += 1
        return True
    for trial in range(60):
        m = int(rng.integers(1, 30))
        n = int(rng.integers(1, m + 1))
        A = rng.integers(0, 3, size=(m, n)) * (rng.random((m, n)) < 0.5)
        if trial % 4 == 0 and n > 1:
            A[:, -1] = 2 * A[:, 0]
        A = A.astype(np.int64) % p
        for b in (1, 3, 64):
            assert _full_rank_mod_p(A, p, b) == plain(A)


def test_matmul_mod_exact_at_full_range():
    """The float products behind the blocked rank test equal Python-integer products mod p for
    entries up to p - 1 and the largest inner size (64)."""
    import numpy as np
    from verify.checker.limitation import PRIMES, _matmul_mod
    rng = np.random.default_rng(8)
    for p in PRIMES:
        X, Y = rng.integers(0, p, (20, 64)), rng.integers(0, p, (64, 15))
        X[0, :], Y[:, 0] = p - 1, p - 1
        ref = [[sum(int(X[i, k]) * int(Y[k, j]) for k in range(64)) % p for j in range(15)] for i in range(20)]
        assert _matmul_mod(X, Y, p).tolist() == ref


def test_naive_query_read_back_from_smtlib_is_the_same_formula():
    """The "smtlib" form solves the query printed as SMT-LIB2 and read back: the same assertions
    (so the same answer whenever Z3 decides both), recorded in the row."""
    import z3
    from constructions.datasets import l1_dataset, random_model
    from verify.experiments.bench import _naive_row, encode_naive
    model = random_model(1, heads=1, mlp_width=4, seed=0)
    ds = l1_dataset(model, seed=0)
    A, _ = encode_naive(model, ds, 1)
    s = z3.Solver()
    s.add(*A)
    back = z3.Solver()
    back.from_string(s.to_smt2())
    assert len(back.assertions()) == len(A)
    assert z3.Solver().check(z3.Not(z3.And(*back.assertions()) == z3.And(*A))) == z3.unsat
    row = _naive_row(model, ds, 1, 1, 0.5, None, False, None, "smtlib")
    assert row["form"] == "smtlib" and row["answer"] in ("unsat", "timeout")
