"""A target out of the certified reach (kind ``limitation-real-reach``, proofs/reach.md): targets
pushed outside the certified range are proved unreachable and re-checked, targets made by an actual
prompt are never proved, and mutated certificates are rejected."""
from __future__ import annotations

import copy
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from constructions.model import Dataset, Example
from verify.checker import statement
from verify.checker.reach import support_direction, support_terms
from verify.checker.real import view
from verify.provers.limitation import check_memorization
from verify.provers.reach import run_reach
from verify.provers.real import check_real
from verify.provers.real.forward import FloatLayer, attention_site
from verify.provers.real.separate import CERT_KIND, candidates
from verify.result import Status

sys.path.insert(0, str(Path(__file__).parent))
from test_real_limitation import _recheck, _rehash, real_model  # noqa: E402

TOL = Fraction(1, 10)
R = Fraction(3)


def _planted(model, seed: int, m: int = 3, mp: int = 2, pn=None, positions=None) -> Dataset:
    """One example whose constrained targets are the attention site under an actual prompt."""
    rng = np.random.default_rng(seed + 500)
    d = model.d
    fl = FloatLayer(model.layers[0], d)
    X = rng.normal(size=(m, d))
    P = rng.normal(size=(mp, d)) * rng.choice([0.3, 1.0, 3.0])
    if pn is not None:
        nr = np.linalg.norm(P, axis=1, keepdims=True)
        P = P * np.minimum(1.0, float(pn) / nr) * (1 - 1e-9)
    site = attention_site(fl, X, P, model.causal)
    pos = range(m) if positions is None else positions
    return Dataset([Example(X, [site[t] if t in pos else None for t in range(m)])], at="attention")


def _box(model, ds, pn, n: int = 0):
    """The certified range of member n at its site (u; h = LN1(u) post-LN), as floats."""
    res = run_reach(model, ds, prompt_norm=pn, witness_steps=0, vet=False)
    ent = res.certificate["body"]["ranges"][n]
    key = ("h_lo", "h_hi") if "h_lo" in ent else ("lo", "hi")
    return tuple(np.array([float(v) for v in ent[k]]) for k in key)


def _pushed(model, pn, seed: int, k: int = 1, by: float = 0.5, causal_pos=None) -> Dataset:
    """A planted dataset whose last target's coordinate k is moved ``by`` (plus the tolerance)
    above the certified range, plus a second planted example that stays reachable."""
    ds = _planted(model, seed, pn=pn, positions=[2])
    _, hi = _box(model, ds, pn)
    ex = ds.examples[0]
    T = np.array(ex.output[2], dtype=np.float64)
    T[k] = hi[k] + float(TOL) + by
    other = _planted(model, seed + 1, pn=pn, positions=[2]).examples[0]
    return Dataset([Example(ex.input, [None, None, T]), other], at="attention")


CASES = [("pre", None, False), ("pre", R, False), (None, R, False), ("post", None, False), ("pre", None, True),
         (None, R, True), ("post", R, True)]


@pytest.fixture(scope="module")
def proved():
    out = {}
    for norm, pn, causal in CASES:
        model = real_model(d=6, heads=2, s=3, norm=norm, seed=3, causal=causal)
        ds = _pushed(model, pn, seed=3)
        out[(norm, pn, causal)] = (model, ds, check_real(model, ds, tolerance=TOL, prompt_norm=pn))
    return out


def _restate(obj) -> dict:
    obj["statement"] = statement(obj["question"], obj["status"])
    return obj


@pytest.mark.parametrize("norm,pn,causal", CASES)
def test_pushed_target_is_proved_and_rechecked(proved, norm, pn, causal):
    model, ds, res = proved[(norm, pn, causal)]
    assert res.status == Status.PROVED, res.message
    obj = res.to_json()
    assert obj["certificate"]["kind"] == CERT_KIND
    body = obj["certificate"]["body"]
    assert (body["example"], body["position"]) == (0, 2)
    assert obj["question"].get("prompt_norm") == (None if pn is None else str(pn))
    ok, msg = _recheck(obj)
    assert ok, msg
    assert "no prompt of any length reaches this target" in msg


def test_check_routes_to_the_separating_direction():
    """``check_memorization`` (the ``ptverify check`` path): no pair, then the direction, no witness."""
    model = real_model(d=6, heads=2, s=3, norm="pre", seed=4)
    ds = _pushed(model, None, seed=4, k=0)
    res = check_memorization(model, ds, tolerance=TOL, timeout=60)
    assert res.status == Status.PROVED, res.message
    assert res.certificate["kind"] == CERT_KIND
    assert _recheck(res.to_json())[0]


@pytest.mark.parametrize("norm,pn", [("pre", None), (None, R)])
def test_general_direction_beyond_a_corner(norm, pn):
    """Every coordinate inside its range, the target near the box's corner: only a general
    direction separates it (the heads' and coordinates' bounds are not attained together)."""
    model = real_model(d=6, heads=2, s=3, norm=norm, seed=3)
    ds = _planted(model, 3, pn=pn, positions=[2])
    lo, hi = _box(model, ds, pn)
    T = hi - 0.01 * (hi - lo)
    ds = Dataset([Example(ds.examples[0].input, [None, None, T])], at="attention")
    res = check_real(model, ds, tolerance=Fraction(0), prompt_norm=pn)
    assert res.status == Status.PROVED, res.message
    c = res.certificate["body"]["c"]
    assert sum(v != "0" for v in c) >= 2
    ok, msg = _recheck(res.to_json())
    assert ok, msg


def test_no_norm_without_prompt_norm():
    """Without a LayerNorm or a norm bound the prompt set is unbounded: nothing is proved, except
    along a coordinate no head's values reach (g_j = 0 for every head)."""
    model = real_model(d=6, heads=2, s=3, norm=None, seed=5)
    ds = _pushed(model, R, seed=5, k=1)
    res = check_real(model, ds, tolerance=TOL)
    assert res.status == Status.UNKNOWN and res.certificate is None
    for h in model.layers[0].heads:
        h.W_o[0] = 0.0
    ds = _pushed(model, None, seed=5, k=0)
    res = check_real(model, ds, tolerance=TOL)
    assert res.status == Status.PROVED, res.message
    assert res.certificate["body"]["c"] == ["1", "0", "0", "0", "0", "0"]
    assert _recheck(res.to_json())[0]


def test_support_direction_matches_support_terms():
    for norm, pn in (("pre", None), ("pre", R), (None, R), (None, None), ("post", R)):
        model = real_model(d=5, heads=2, s=2, norm=norm, seed=8)
        L = view(_layer_of(model))
        d = model.d
        rows = support_terms(L, d, pn)
        for k in range(d):
            e = [Fraction(0)] * d
            e[k] = Fraction(1)
            got = support_direction(L, d, pn, e)
            assert got == [row[k] for row in rows]
            scaled = support_direction(L, d, pn, [3 * v for v in e])
            for (c1, r1), (c3, r3) in zip(got, scaled):
                assert c3 == 3 * c1 and (r1 is None) == (r3 is None) and (r1 is None or r3 == 9 * r1)


def _layer_of(model):
    from verify.checker.inputs import load_input
    from verify.provers.limitation.results import _inputs
    inputs, base = _inputs(model, _planted(model, 0), None)
    return load_input("model", inputs["model"], base).layers[0]


# --------------------------------------------------------------------------- planted: never proved

def _bodies(ds, d):
    """Every coordinate direction (both sides) and the all-ones direction for every member."""
    for i, ex in enumerate(ds.examples):
        for t, y in enumerate(ex.output):
            if y is None:
                continue
            for k in range(d):
                for side in ("hi", "lo"):
                    e = ["0"] * d
                    e[k] = "1"
                    yield {"example": i, "position": t, "c": e, "side": side}
            yield {"example": i, "position": t, "c": ["1"] * d, "side": "hi"}
            yield {"example": i, "position": t, "c": ["-1"] + ["1/2"] * (d - 1), "side": "lo"}


@pytest.mark.parametrize("seed", range(6))
def test_planted_targets_are_never_proved(seed):
    """Random small layers, targets made by an actual prompt (float forward): the prover finds no
    direction and the checker accepts none of the obvious ones, at tolerance 0."""
    rng = np.random.default_rng(seed)
    norm = ["pre", "post", None][seed % 3]
    pn = R if norm is None or seed % 2 else None
    d = int(rng.integers(3, 7))
    model = real_model(d=d, heads=int(rng.integers(1, 3)), s=int(rng.integers(1, 4)), norm=norm, seed=seed,
                       causal=bool(seed % 2))
    ds = _planted(model, seed, pn=pn)
    assert list(candidates(model, ds, Fraction(0), pn)) == []
    res = check_real(model, ds, tolerance=Fraction(0), prompt_norm=pn)
    assert res.status != Status.PROVED and res.certificate is None
    obj = res.to_json()
    obj["status"] = "proved"
    _restate(obj)
    for body in _bodies(ds, d):
        bad = copy.deepcopy(obj)
        bad["certificate"] = {"format": "ptverify-certificate/1", "kind": CERT_KIND, "body": body}
        ok, msg = _recheck(bad)
        assert not ok, (body, msg)
        assert "no separation" in msg or "unbounded" in msg, msg


@pytest.mark.parametrize("norm,pn,causal", [("pre", None, False), ("pre", R, True), (None, R, False),
                                            (None, R, True)])
def test_random_prompts_stay_within_the_direction_bound(norm, pn, causal):
    """The checker's exact bound on c.u along random rational directions is never exceeded by the
    float forward of random admissible prompts (a few rows, some repeated)."""
    from verify.checker.reach import no_prompt_heads
    from verify.checker.real_reach import direction_bounds
    from verify.provers.reach import site_u
    model = real_model(d=5, heads=2, s=3, norm=norm, seed=9, causal=causal)
    ds = _planted(model, 9, pn=pn)
    L, d = view(_layer_of(model)), model.d
    fl = FloatLayer(model.layers[0], d)
    rng = np.random.default_rng(2)
    X = ds.examples[0].input
    Xq = [[Fraction(float(v)) for v in row] for row in X]
    for t in range(3):
        heads_a = no_prompt_heads(L, d, Xq, model.causal, t)
        for _ in range(3):
            c = [Fraction(int(v), 7) for v in rng.integers(-7, 8, size=d)]
            lo, hi = direction_bounds(L, d, Xq[t], heads_a, support_direction(L, d, pn, c), c)
            cf = np.array([float(v) for v in c])
            for n in range(30):
                m = 1 + n % 3
                P = rng.normal(size=(m, d)) * rng.choice([0.3, 1.0, 3.0, 100.0])
                if n % 4 == 0:             # rows along a head's value direction g_j, repeated
                    h = fl.heads[n % len(fl.heads)]
                    g = h["W_v"].T @ (h["W_o"].T @ cf)
                    P = np.tile(rng.choice([1.0, 100.0]) * g / max(np.linalg.norm(g), 1e-300), (m, 1))
                if pn is not None:
                    nr = np.linalg.norm(P, axis=1, keepdims=True)
                    P = P * np.minimum(1.0, float(pn) / nr) * (1 - 1e-12)
                v = float(cf @ site_u(fl, X, P, causal)[t])
                slack = 1e-9 * (1 + abs(float(lo)) + abs(float(hi)))
                assert float(lo) - slack <= v <= float(hi) + slack


# --------------------------------------------------------------------------- mutations

@pytest.fixture(scope="module")
def genuine(proved):
    obj = proved[(None, R, False)][2].to_json()
    assert obj["status"] == "proved"
    return obj


def _rejected(obj, why=""):
    ok, msg = _recheck(obj)
    assert not ok, why
    return msg


def test_genuine_passes(genuine):
    assert _recheck(genuine)[0]


def test_changed_direction_is_rejected(genuine):
    body = genuine["certificate"]["body"]
    k = body["c"].index("1")
    for c in ([("-1" if j == k else v) for j, v in enumerate(body["c"])],
              [("1" if j == (k + 1) % len(body["c"]) else "0") for j in range(len(body["c"]))],
              ["0"] * len(body["c"])):
        bad = copy.deepcopy(genuine)
        bad["certificate"]["body"]["c"] = c
        _rejected(bad, c)
    bad = copy.deepcopy(genuine)
    bad["certificate"]["body"]["side"] = "lo"
    assert "no separation" in _rejected(bad)
    for junk in (["x"] + body["c"][1:], body["c"][:-1], [str(1 << 300)] + body["c"][1:]):
        bad = copy.deepcopy(genuine)
        bad["certificate"]["body"]["c"] = junk
        assert "c" in _rejected(bad, junk)


def test_changed_example_is_rejected(genuine):
    bad = copy.deepcopy(genuine)
    bad["certificate"]["body"]["example"] = 1          # the reachable one
    assert "no separation" in _rejected(bad)
    bad["certificate"]["body"]["position"] = 0          # an unconstrained output
    assert "null target" in _rejected(bad)
    bad["certificate"]["body"]["example"] = 2          # no such example
    _rejected(bad)


def test_raised_tolerance_is_rejected(genuine):
    bad = copy.deepcopy(genuine)
    bad["question"]["tolerance"] = "7/10"              # the target was pushed 1/2 beyond the tolerance 1/10
    _restate(bad)
    assert "no separation" in _rejected(bad)
    bad = copy.deepcopy(genuine)
    bad["question"]["tolerance"] = "1/2"
    _restate(bad)
    assert _recheck(bad)[0]                            # 1/10 + 1/2 - 1/2: still just beyond


def test_changed_prompt_norm_is_rejected(genuine):
    bad = copy.deepcopy(genuine)
    del bad["question"]["prompt_norm"]
    _restate(bad)
    assert "unbounded" in _rejected(bad)
    bad["question"]["prompt_norm"] = "30"
    _restate(bad)
    assert "no separation" in _rejected(bad)
    bad["question"]["prompt_norm"] = "1"               # a smaller set: still proved
    _restate(bad)
    assert _recheck(bad)[0]


def test_target_moved_inside_is_rejected(genuine, proved):
    model, ds, _ = proved[(None, R, False)]
    bad = copy.deepcopy(genuine)
    out = bad["inputs"]["dataset"]["embedded"]["examples"][0]["output"]
    planted = _planted(model, 3, pn=R, positions=[2]).examples[0].output[2]
    out[2] = [float(v) for v in planted]
    _rehash(bad)
    assert "no separation" in _rejected(bad)


def test_wrong_status_and_question_are_rejected(genuine):
    bad = copy.deepcopy(genuine)
    bad["status"] = "memorized"
    _restate(bad)
    assert "cannot establish" in _rejected(bad)
    bad = copy.deepcopy(genuine)
    del bad["inputs"]["dataset"]["embedded"]["at"]
    _rehash(bad)
    _rejected(bad)


def test_isolated_checker_accepts_and_rejects(isolated_checker, genuine, tmp_path):
    """The trusted checker alone (standard library and numpy) re-checks the result file."""
    import json
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(genuine))
    worse = copy.deepcopy(genuine)
    worse["certificate"]["body"]["side"] = "lo"
    bad.write_text(json.dumps(worse))
    r = isolated_checker(good, bad)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert r.stdout.count("OK") == 1 and r.stdout.count("FAILED") == 1, r.stdout


def test_cli_check_prompt_norm_on_a_real_layer(tmp_path, capsys):
    """``ptverify check --prompt-norm R`` on a single real layer asks about rows of norm <= R: a
    no-norm layer's pushed target is then proved (and replayed); a textbook layer refuses it."""
    import json

    from constructions.model import save_dataset, save_model
    from verify.cli import main
    model = real_model(d=6, heads=2, s=3, norm=None, seed=3)
    ds = _pushed(model, R, seed=3)
    mp, dp, out = tmp_path / "m.json", tmp_path / "d.json", tmp_path / "r.json"
    save_model(model, str(mp))
    save_dataset(ds, str(dp))
    with pytest.raises(SystemExit) as e:
        main(["check", "--model", str(mp), "--dataset", str(dp), "--tolerance", str(TOL), "--prompt-norm", str(R),
              "--json", str(out), "--expect", "proved"])
    assert e.value.code == 0, capsys.readouterr()
    obj = json.loads(out.read_text())
    assert obj["question"]["prompt_norm"] == str(R) and obj["certificate"]["kind"] == CERT_KIND
    with pytest.raises(SystemExit) as e:
        main(["replay", str(out)])
    assert e.value.code == 0
    capsys.readouterr()


def test_harness_mutations_are_rejected(genuine):
    """The shared mutation harness (envelope, question, every body leaf) on the separating
    direction's certificate; counted in the per-kind tally.  Perturbed entries of ``c`` are left
    out: a nearby direction that still separates is another valid certificate of the same true claim
    (the checker derives the bound for the direction it is given); directions that do not separate
    are rejected in test_changed_direction_is_rejected."""
    from mutations import assert_all_rejected, body_mutations, envelope_mutations
    tried, rejected = assert_all_rejected(CERT_KIND, genuine, list(envelope_mutations(genuine))
                                          + list(body_mutations(genuine)), allow=("body['c',",))
    assert tried == rejected > 10
