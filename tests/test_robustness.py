"""`ptverify check` on hostile but legal single-layer models: never a traceback, never exit 1 or 3,
never a run far past --timeout, and degenerate layers decided.

Each case is a small model and dataset written as JSON, run through the command line in-process
(``verify.cli.main``).  Asserted: exit code 0 (or 2 for inputs beyond the documented limits, with
the field named), no traceback on stderr, the status in the expected set, and the wall time below
--timeout plus a generous allowance for start-up (torch, z3) and the trusted checker's final check.
Degenerate layers (a head with W_o W_v = 0 or of low rank, W_o = 0, a zero MLP, repeated tokens)
must come back decided: "proved" or "memorized".
"""
from __future__ import annotations

import json
import time
from fractions import Fraction

import pytest

from verify.provers import exact
from verify.provers.limitation import OutOfTime, _Clock, check_memorization, z3_outcome

I2 = [[1, 0], [0, 1]]
Z2 = [[0, 0], [0, 0]]
SMALL_MLP = {"W_1": [[0.25, 0], [0, 0.25]], "b_1": [0, 0], "W_2": [[0.5, 0], [0, 0.5]], "b_2": [0, 0]}
ZERO_MLP = {"W_1": Z2, "b_1": [0, 0], "W_2": Z2, "b_2": [0, 0]}
MLP_X = [1.125, 0]           # MLP([1, 0]) under SMALL_MLP: x + 0.125 relu(x)
UNDECIDED = {"unknown", "timeout"}
TIMEOUT = 2                   # --timeout of every case
ALLOWANCE = 60                # seconds beyond --timeout: imports and the final check, on a loaded machine


def _sc(M, c):
    return [[v * c for v in row] for row in M]


def _head(q=I2, k=I2, v=I2, o=I2):
    return {"W_q": q, "W_k": k, "W_v": v, "W_o": o}


def _model(heads, mlp=SMALL_MLP, kind="softmax", causal=False):
    m = {"format": "ptverify-model/1", "d": 2,
         "layers": [{"attention": {"kind": kind, "heads": heads}, "mlp": dict(mlp)}]}
    if causal:
        m["causal"] = True
    return m


def _data(*examples):
    return {"format": "ptverify-dataset/1", "examples": [{"input": i, "output": o} for i, o in examples]}


# two examples sharing the query [1, 0] (the L1 situation), targets far from MLP([1, 0])
L1ISH = _data(([[1, 0]], [[3, 1]]), ([[1, 0], [0, 1]], [[2, 2], None]))
ONE = _data(([[1, 0]], [[3, 1]]))
DEAD_V, DEAD_O = [[1, 0], [0, 0]], [[0, 0], [0, 1]]             # W_o W_v = 0, neither zero
DENSE_V, DENSE_O = [[1, 1], [1, 1]], [[1, -1], [2, -2]]         # W_o W_v = 0, both dense

# name: (model, dataset, extra CLI arguments, allowed statuses)
HOSTILE = {
    # a zero-score query whose range of alpha is unbounded (was: format error on 'inf')
    "zero_score_unbounded_alpha": (_model([_head(q=Z2, k=Z2)]), ONE, [], {"memorized"}),
    # scores near 1e200 (was: L-BFGS NaN, then round(nan); exp enclosures that never end)
    "scores_1e200": (_model([_head(q=_sc(I2, 1e100), k=_sc(I2, 1e100))]), L1ISH, [], UNDECIDED),
    # scores near 1e6 (was: Z3 numeral of an exp enclosure past 4300 digits)
    "scores_1e6": (_model([_head(q=_sc(I2, 1000), k=_sc(I2, 1000))]), L1ISH, [], UNDECIDED),
    # tokens near 1e300 (was: overflow rounding the float preimage)
    "tokens_1e300": (_model([_head()]), _data(([[1e300, 0]], [[3e300, 1]]), ([[1e300, 0], [0, 1]], [[2, 2], None])),
                     [], UNDECIDED),
    # weights of 1e-300 (was: overflow in the dyadic conversion)
    "weights_1e-300": (_model([_head(q=_sc(I2, 1e-300), k=_sc(I2, 1e-300), v=_sc(I2, 1e-300), o=_sc(I2, 1e-300))]),
                       L1ISH, [], {"proved"}),
    "one_weight_1e-300": (_model([_head(q=[[1e-300, 0], [0, 1]])]), L1ISH, [], {"proved"}),
    # weights near 1e5 and 1e150: scores beyond the checker's exponential range (was: runs far past
    # --timeout); never "proved" with a certificate the checker cannot check
    "weights_1e5": (_model([_head(q=_sc(I2, 1e5), k=_sc(I2, 1e5), v=_sc(I2, 1e5))]), L1ISH, [], UNDECIDED),
    "weights_1e150": (_model([_head(q=_sc(I2, 1e150), k=_sc(I2, 1e150))],
                             {"W_1": _sc(I2, 1e150), "b_1": [0, 0], "W_2": _sc(I2, 1e150), "b_2": [0, 0]}),
                      L1ISH, [], UNDECIDED),
    "weights_1.7e308": (_model([_head(q=_sc(I2, 1.7e308), k=_sc(I2, 1.7e308))],
                               {"W_1": _sc(I2, 1.7e308), "b_1": [0, 0], "W_2": _sc(I2, 1.7e308), "b_2": [0, 0]}),
                        ONE, [], UNDECIDED),
    "rational_strings": (_model([_head(q=[["1/3", 0], [0, "2/7"]])]),
                         _data(([["1/3", 0]], [["3/7", 1]]), ([["1/3", 0], [0, 1]], [[2, 2], None])), [], {"proved"}),
}

DEGENERATE = {
    # W_o = 0 (was: IndexError building head blocks): the output is MLP(x) whatever the prompt
    "wo_zero": (_model([_head(o=Z2)]), ONE, [], {"proved"}),
    "wo_zero_targets_are_mlp": (_model([_head(o=Z2)], ZERO_MLP), _data(([[1, 0]], [[1, 0]])), [], {"memorized"}),
    "wo_wv_zero": (_model([_head(v=DEAD_V, o=DEAD_O)]), ONE, [], {"proved"}),
    "wo_wv_zero_targets_are_mlp": (_model([_head(v=DEAD_V, o=DEAD_O)]),
                                   _data(([[1, 0]], [MLP_X]), ([[0, 1], [1, 0]], [None, MLP_X])), [], {"memorized"}),
    "wo_wv_zero_dense": (_model([_head(v=DENSE_V, o=DENSE_O)]), _data(([[1, 0]], [MLP_X]), ([[0, 1]], [[0, 1.125]])),
                         [], {"memorized"}),
    "wo_wv_zero_tolerance": (_model([_head(v=DEAD_V, o=DEAD_O)]), _data(([[1, 0]], [[1.125, 0.001]])),
                             ["--tolerance", "1/10000"], {"proved"}),
    "wo_wv_zero_causal_length_2": (_model([_head(v=DEAD_V, o=DEAD_O)], causal=True),
                                   _data(([[1, 0], [0, 1]], [MLP_X, [0, 1.125]])), ["--prompt-length", "2"],
                                   {"memorized"}),
    "wo_wv_rank_1": (_model([_head(v=DEAD_V, o=[[1, 0], [0, 0]])]), ONE, [], {"proved"}),
    "all_heads_dead": (_model([_head(o=Z2), _head(v=Z2)]),
                       _data(([[1, 0]], [MLP_X]), ([[1, 0], [0, 1]], [MLP_X, None])), [], {"memorized"}),
    "one_of_two_heads_dead": (_model([_head(o=Z2), _head(q=[[1, 0], [0, 2]])]), L1ISH, [], {"proved"}),
    "hardmax_dead_head": (_model([_head(o=Z2)], kind="hardmax"), ONE, [], {"proved"}),
    "zero_mlp": (_model([_head()], ZERO_MLP), L1ISH, [], {"proved"}),
    "repeated_tokens": (_model([_head()]), _data(([[1, 0], [1, 0], [1, 0]], [[3, 1], [3, 1], [3, 1]]),
                                                 ([[1, 0], [1, 0]], [[3, 1], [3, 1]])), [], {"proved"}),
}


@pytest.fixture(scope="module", autouse=True)
def _torch_started():
    """torch's start-up (seconds on a loaded machine) is paid once per process, before the
    timed cases; :func:`test_cli_process_wall_time` measures a whole process instead."""
    import torch
    torch.optim.LBFGS([torch.zeros(1, requires_grad=True)])


def _run_check(tmp_path, capsys, model, dataset, extra=(), timeout=TIMEOUT):
    """Run ``ptverify check`` in-process; returns (exit code, stderr, result JSON or None, seconds)."""
    from verify.cli import main
    mp, dp, out = tmp_path / "m.json", tmp_path / "d.json", tmp_path / "r.json"
    mp.write_text(json.dumps(model))
    dp.write_text(json.dumps(dataset))
    argv = ["check", "--model", str(mp), "--dataset", str(dp), "--timeout", str(timeout), "--json", str(out), *extra]
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    return exc.value.code, err, json.loads(out.read_text()) if out.exists() else None, seconds


def _assert_sane(code, err, res, seconds, allowed, timeout=TIMEOUT):
    assert code == 0, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert seconds < timeout + ALLOWANCE, f"{seconds:.1f} s with --timeout {timeout}"
    assert res is not None
    assert res["status"] in allowed, (res["status"], res["info"].get("message"))
    if res["status"] == "timeout":
        assert res["info"].get("stage"), "a timeout must name its stage"
        assert res["certificate"] is None
    if res["status"] in ("proved", "memorized"):
        from verify.checker import check_result
        ok, msg = check_result(res, ".")
        assert ok, msg


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_models_never_crash(name, tmp_path, capsys):
    model, dataset, extra, allowed = HOSTILE[name]
    _assert_sane(*_run_check(tmp_path, capsys, model, dataset, extra), allowed)


@pytest.mark.parametrize("name", sorted(DEGENERATE))
def test_degenerate_layers_are_decided(name, tmp_path, capsys):
    model, dataset, extra, allowed = DEGENERATE[name]
    code, err, res, seconds = _run_check(tmp_path, capsys, model, dataset, extra)
    _assert_sane(code, err, res, seconds, allowed)


@pytest.mark.slow
def test_cli_process_wall_time(tmp_path):
    # a whole `ptverify check` process (imports included) on a model whose scores are beyond the
    # checker's range: exit 0, no traceback, undecided, within --timeout plus the allowance
    import subprocess
    import sys
    model, dataset, _, allowed = HOSTILE["scores_1e200"]
    mp, dp, out = tmp_path / "m.json", tmp_path / "d.json", tmp_path / "r.json"
    mp.write_text(json.dumps(model))
    dp.write_text(json.dumps(dataset))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "verify", "check", "--model", str(mp), "--dataset", str(dp),
                        "--timeout", "3", "--json", str(out)], capture_output=True, text=True,
                       timeout=3 + ALLOWANCE + 60)
    seconds = time.perf_counter() - t0
    _assert_sane(p.returncode, p.stderr, json.loads(out.read_text()), seconds, allowed, timeout=3)


def test_attention_free_with_unequal_scores_is_memorized_exactly(tmp_path, capsys):
    # W_o W_v = 0 with W_o, W_v dense: every prompt memorizes; the query's input tokens have
    # different scores, yet the checker replays exactly, since it forms W_o W_v = 0 first
    model = _model([_head(v=DENSE_V, o=DENSE_O)])
    code, err, res, seconds = _run_check(tmp_path, capsys, model, _data(([[1, 0], [0, 1]], [MLP_X, None])))
    _assert_sane(code, err, res, seconds, {"memorized"})
    assert "exactly" in res["info"]["message"]


# --------------------------------------------------------------------------- input limits: exit 2

@pytest.mark.parametrize("where,model,field", [
    ("rational string beyond 2**1024", _model([_head(q=[["1e400", 0], [0, 1]])]), "W_q"),
    ("decimal exponent beyond 400", _model([_head(q=[["1e-401", 0], [0, 1]])]), "W_q"),
    ("integer beyond 2**1024", _model([_head(q=[[10 ** 400, 0], [0, 1]])]), "W_q"),
    ("MLP of width 0", _model([_head()], {"W_1": [], "b_1": [], "W_2": [[], []], "b_2": [0, 0]}), "mlp.W_1"),
])
def test_inputs_beyond_the_limits_exit_2_naming_the_field(where, model, field, tmp_path, capsys):
    code, err, res, _ = _run_check(tmp_path, capsys, model, ONE)
    assert code == 2, (where, err)
    assert field in err and "Traceback" not in err


@pytest.mark.parametrize("args,field", [(["--prompt-length", str((1 << 40) + 1)], "--prompt-length"),
                                        (["--timeout", "nan"], "--timeout"), (["--timeout", "inf"], "--timeout"),
                                        (["--expect", "provd"], "--expect"), (["--prompt-norm", "1"], "--prompt-norm"),
                                        (["--prompt-norm", "-1"], "--prompt-norm")])
def test_options_beyond_the_limits_exit_2(args, field, tmp_path, capsys):
    from verify.cli import main
    mp, dp = tmp_path / "m.json", tmp_path / "d.json"
    mp.write_text(json.dumps(_model([_head()])))
    dp.write_text(json.dumps(ONE))
    with pytest.raises(SystemExit) as exc:
        main(["check", "--model", str(mp), "--dataset", str(dp), *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and field in err and "Traceback" not in err


def test_a_very_long_prompt_length_builds_no_witness(tmp_path, capsys):
    model, dataset, _, _ = DEGENERATE["wo_wv_zero_targets_are_mlp"]
    code, err, res, seconds = _run_check(tmp_path, capsys, model, dataset, ["--prompt-length", "100000"])
    _assert_sane(code, err, res, seconds, UNDECIDED)


def test_integer_of_5000_digits_exits_2(tmp_path, capsys):
    from verify.cli import main
    mp, dp = tmp_path / "m.json", tmp_path / "d.json"
    mp.write_text(json.dumps(_model([_head()])).replace("0.25", "1" * 5000, 1))
    dp.write_text(json.dumps(ONE))
    with pytest.raises(SystemExit) as exc:
        main(["check", "--model", str(mp), "--dataset", str(dp), "--timeout", "2"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--model" in err and "Traceback" not in err


# --------------------------------------------------------------------------- timeout status

def test_out_of_time_is_status_timeout_with_the_stage(tmp_path, capsys):
    code, err, res, seconds = _run_check(tmp_path, capsys, _model([_head()]), L1ISH, timeout=1e-9)
    assert code == 0 and "Traceback" not in err
    assert res["status"] == "timeout" and res["certificate"] is None
    assert res["info"]["stage"] == "MLP preimages"


def test_every_z3_answer_maps_to_one_outcome():
    class Fake:
        def __init__(self, reason):
            self.reason = reason

        def reason_unknown(self):
            return self.reason
    assert z3_outcome(Fake(""), "sat") == "sat"
    assert z3_outcome(Fake(""), "unsat") == "unsat"
    assert z3_outcome(Fake("timeout"), "unknown") == "timeout"
    assert z3_outcome(Fake("canceled"), "unknown") == "timeout"
    assert z3_outcome(Fake("(incomplete (theory arithmetic))"), "unknown") == "unknown"


def test_clock_raises_with_the_stage():
    clock = _Clock(-1.0)
    with pytest.raises(OutOfTime) as exc:
        clock.ms("relaxation R")
    assert exc.value.stage == "relaxation R"


def test_check_memorization_timeout_in_process():
    from constructions.datasets import l1_dataset, random_model
    model = random_model(3, seed=0)
    res = check_memorization(model, l1_dataset(model, seed=0), timeout=1e-9, search_witness=False)
    assert res.status.value == "timeout" and res.extra["stage"] and res.certificate is None


# --------------------------------------------------------------------------- exact arithmetic

@pytest.mark.parametrize("s", [Fraction(0), Fraction(1, 3), Fraction(-7, 2), Fraction(700), Fraction(-3000),
                               Fraction(65536), Fraction(-10 ** 9)])
def test_exp_score_contains_the_checkers_enclosure(s):
    from verify.checker.limitation import _exp_score
    lo, hi = exact.exp_score(s)
    clo, chi = _exp_score(s)
    assert lo <= clo and chi <= hi


@pytest.mark.parametrize("s,shift", [(Fraction(65536), Fraction(65536)), (Fraction(60000), Fraction(65000)),
                                     (Fraction(-10 ** 9), Fraction(0)), (Fraction(1, 3), Fraction(2)),
                                     (Fraction(-3000), Fraction(0)), (Fraction(-100), Fraction(-500))])
def test_solver_box_contains_the_scaled_checker_enclosure_and_is_short(s, shift):
    # a Farkas vector found with the scaled box must hold for the checker's own box
    from verify.checker.limitation import _exp_score
    L, H = exact.exp_box(s, shift)
    clo, chi = _exp_score(s)
    scale_lo, scale_hi = exact.exp_enclosure(-shift)
    assert L <= clo * scale_lo and chi * scale_hi <= H
    assert len(exact.z3_numeral(H)) < 4300 and len(exact.z3_numeral(L)) < 4300


def test_scores_beyond_the_checkers_range_are_refused():
    with pytest.raises(exact.ExpRangeError):
        exact.exp_score(Fraction(65537))
    with pytest.raises(exact.ExpRangeError):
        exact.exp_box(Fraction(10 ** 200), Fraction(10 ** 200))
    with pytest.raises(exact.ExpRangeError):      # the checker's absolute slack, scaled, is too large
        exact.exp_box(Fraction(-70000), Fraction(-65536))


def test_norm_bound_predicts_the_checkers_k():
    from constructions.datasets import random_model
    from constructions.model import model_to_json
    from verify.checker.inputs import model_from_obj
    from verify.checker.limitation import mlp_lipschitz
    from verify.provers.assumptions import certify_mlp
    for d, seed in ((3, 0), (8, 1), (20, 2)):
        m = random_model(d, seed=seed)
        assert certify_mlp(m.layers[0])["k"] == mlp_lipschitz(model_from_obj(model_to_json(m)).layers[0])


def test_exact_linear_algebra():
    F = Fraction
    assert exact.solve([[F(2), F(1)], [F(1), F(3)]], [F(3), F(5)]) == [F(4, 5), F(7, 5)]
    assert exact.solve([[F(1), F(1)], [F(2), F(2)]], [F(1), F(3)]) is None
    basis = exact.left_null_basis([[F(1), F(2)], [F(2), F(4)], [F(0), F(0)]])
    assert basis and all(exact.dot(phi, [F(1), F(2), F(0)]) == 0 and exact.dot(phi, [F(2), F(4), F(0)]) == 0
                         for phi in basis)
    assert exact.project_onto_span([[F(0), F(1)]], [F(3), F(4)]) == [F(0), F(4)]
    assert exact.left_null_basis([[], []], 2) == [[F(1), F(0)], [F(0), F(1)]]


def test_numbers_of_any_size_are_written_and_described():
    big = Fraction(10 ** 6000 + 1, 3)
    num, den = exact.fmt(big).split("/")          # past Python's 4300-digit str() guard
    assert len(num) == 6001 and den == "3"
    assert exact.approx(Fraction(10) ** 700) == "~2^2325"
    assert exact.sqrt_down(Fraction(2)) ** 2 <= 2 <= exact.sqrt_up(Fraction(2)) ** 2
    lo, hi = exact.log_below(Fraction(3)), exact.log_above(Fraction(3))
    assert exact.exp_enclosure(lo)[1] <= 3 <= exact.exp_enclosure(hi)[0]
