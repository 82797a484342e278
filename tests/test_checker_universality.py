"""The trusted check of Theorem U certificates (``verify/checker/universality.py``): real results
hold, and every mutation of them is rejected by ``verify.checker.check_result``."""
from __future__ import annotations

import copy
import hashlib
import json
import os
from fractions import Fraction

import pytest

from mutations import assert_all_rejected, body_mutations, envelope_mutations, record
from verify.checker import canonical_sha256, check_file, check_result, statement
from verify.checker.numbers import Reject
from verify.checker.universality import instance, rpow_down, rpow_up
from verify.claims.universality import CLAIMS
from verify.provers.universality import run_universality

KIND = "universality-dp-bound"
NAMES = ("U-hardmax", "U-softmax", "U-d2", "U-n3")


def _json(res) -> dict:
    return json.loads(json.dumps(res.to_json(), allow_nan=False))


@pytest.fixture(scope="module")
def results() -> dict:
    """The quick instances of the four claims, as written (no Monte Carlo samples)."""
    out = {}
    for c in CLAIMS:
        params = dict(c.quick, samples=0, seed=0)
        out[c.id] = _json(c.run(params, "."))
    assert [out[n]["status"] for n in NAMES] == ["verified"] * 4
    return out


def _restated(res: dict) -> dict:
    """The result with its statement re-derived from its (mutated) question and status, so that
    only the certificate check can reject it; unchanged when the question no longer parses."""
    try:
        return dict(res, statement=statement(res["question"], res["status"]))
    except Reject:
        return res


def _deep(res: dict):
    """Question and status mutations with the statement re-derived (they reach the kind's check)."""
    for name, m in envelope_mutations(res):
        if name.startswith(("question", "status")):
            yield name + " (restated)", _restated(m)


@pytest.mark.parametrize("name", NAMES)
def test_quick_claims_hold_and_every_mutation_is_rejected(results, name):
    res = results[name]
    ok, msg = check_result(res)
    assert ok, msg
    assert Fraction(res["reported"]["bound"]) <= Fraction(res["question"]["eps"])
    tried, rejected = assert_all_rejected(KIND, res, list(envelope_mutations(res)) + list(body_mutations(res))
                                          + list(_deep(res)))
    assert tried == rejected > 60


def _swap(res: dict, other: dict, *keys) -> dict:
    out = copy.deepcopy(res)
    for k in keys:
        out[k] = copy.deepcopy(other[k])
    return out


def test_swapped_certificates_and_inputs_are_rejected(results):
    muts = []
    for a in NAMES:
        for b in NAMES:
            if a == b:
                continue
            ra, rb = results[a], results[b]
            muts.append((f"{a} with the certificate of {b}", _swap(ra, rb, "certificate")))
            muts.append((f"{a} with the certificate and reported numbers of {b}", _swap(ra, rb, "certificate", "reported")))
            for inp in ("network", "prompt"):
                m = copy.deepcopy(ra)
                m["inputs"][inp] = copy.deepcopy(rb["inputs"][inp])
                muts.append((f"{a} with the {inp} of {b}", m))
    for name, m in muts:
        ok, msg = check_result(m)
        assert not ok, name
    record(KIND, len(muts), len(muts))


def _with_target(res: dict, target: str) -> dict:
    q = dict(res["question"], target=target)
    q.pop("seed", None)
    if target == "relu-net":
        q["seed"] = 0
    return _restated(dict(res, question=q))


def test_wrong_target_in_the_question_is_rejected(results):
    muts = []
    for name in NAMES:
        for tgt in ("token-mix", "smooth", "relu-net"):
            if tgt != results[name]["question"]["target"]:
                muts.append((f"{name} target={tgt}", _with_target(results[name], tgt)))
        if results[name]["question"]["target"] == "relu-net":
            muts.append((f"{name} seed=1", _restated(dict(results[name], question=dict(results[name]["question"], seed=1)))))
    for label, m in muts:
        ok, msg = check_result(m)
        assert not ok, label
        # another target gives another prompt; another seed of relu-net may quantize to the same
        # prompt on a coarse grid (U-n3's K = 7), and then its derived bound differs
        assert "P_f" in msg or "prompt" in msg or ("seed" in label and "differs from the derived" in msg), (label, msg)
    record(KIND, len(muts), len(muts))


def _to_side_files(res: dict, folder: str) -> dict:
    """The same result with the network and the prompt in content-addressed side files."""
    out = copy.deepcopy(res)
    for name in ("network", "prompt"):
        data = json.dumps(res["inputs"][name]["embedded"]).encode()
        sha = hashlib.sha256(data).hexdigest()
        fname = f"{name}-{sha[:16]}.json"
        with open(os.path.join(folder, fname), "wb") as fh:
            fh.write(data)
        out["inputs"][name] = {"sha256": sha, "file": fname}
    return out


def test_side_file_inputs_hold_and_replaced_ones_are_rejected(results, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    os.makedirs(a)
    os.makedirs(b)
    ra = _to_side_files(results["U-hardmax"], a)
    rb = _to_side_files(results["U-softmax"], b)
    assert check_result(ra, a)[0] and check_result(rb, b)[0]
    muts = list(envelope_mutations(ra))
    for inp in ("network", "prompt"):
        # the other instance's side file, copied next to this result under its own name
        other = rb["inputs"][inp]
        with open(os.path.join(b, other["file"]), "rb") as src, open(os.path.join(a, other["file"]), "wb") as dst:
            dst.write(src.read())
        m = copy.deepcopy(ra)
        m["inputs"][inp] = dict(other)
        muts.append((f"{inp} side file of U-softmax", m))
        m = copy.deepcopy(ra)
        m["inputs"][inp]["file"] = other["file"]
        muts.append((f"{inp} side file of U-softmax under the old hash", m))
    assert_all_rejected(KIND, ra, muts, base_dir=a)


def test_a_file_written_by_the_producer_holds(results, tmp_out):
    path = os.path.join(tmp_out, "u.json")
    with open(path, "w") as fh:
        json.dump(results["U-d2"], fh)
    ok, msg = check_file(path)
    assert ok and "re-derived" in msg


def test_refuted_result_is_checked(tmp_out):
    res = run_universality(1, 1, "4", "2", "1/20", "token-mix", K=2, samples=0)
    assert res.status.value == "refuted"
    obj = _json(res)
    ok, msg = check_result(obj)
    assert ok, msg
    assert Fraction(obj["reported"]["lower"]) > Fraction(1, 20)
    tried, rejected = assert_all_rejected(KIND, obj, list(envelope_mutations(obj)) + list(_deep(obj)))
    assert tried == rejected


def test_statuses_need_their_inequality(results):
    res = results["U-d2"]
    as_refuted = _restated(dict(res, status="refuted"))
    ok, msg = check_result(as_refuted)
    assert not ok and "lower bound" in msg
    tight = json.loads(json.dumps(res))
    bound = Fraction(res["reported"]["bound"])
    tight["question"]["eps"] = str(bound * Fraction(999, 1000))
    ok, msg = check_result(_restated(tight))
    assert not ok


def test_instance_is_derived_from_the_question_alone():
    q = {"d": 1, "n": 2, "lipschitz": Fraction(1), "p": Fraction(2), "eps": Fraction(1, 4), "target": "smooth",
         "temperature": None, "seed": None, "delta": None}
    inst = instance(q)
    assert (inst.K, inst.m_p) == (23, 2 * 23 ** 2)
    assert (inst.K * inst.eps / 4) ** 2 >= 2 > ((inst.K - 1) * inst.eps / 4) ** 2
    for bad in ({"target": "relu-net"}, {"seed": 3}, {"p": Fraction(1, 2)}, {"delta": Fraction(2, 5)},
                {"eps": Fraction(1, 10 ** 6)}, {"d": 15}):
        with pytest.raises(Reject):
            instance(dict(q, **bad))


def test_checker_roots_bracket():
    for x in (Fraction(2), Fraction(1, 3), Fraction(10, 7)):
        for p in (Fraction(1), Fraction(2), Fraction(3, 2), Fraction(1, 3)):
            lo, hi = rpow_down(x, p), rpow_up(x, p)
            assert lo <= hi <= lo + Fraction(1, 1 << 64)
            if p.denominator > 1:
                assert lo ** p.denominator <= x ** p.numerator <= hi ** p.denominator
            else:
                assert lo == hi == x ** p


def test_body_hash_is_the_outputs_commitment(results):
    from verify.checker.universality import outputs_sha256
    res = results["U-hardmax"]
    K = res["reported"]["K"]
    prompt = res["inputs"]["prompt"]["embedded"]["tokens"]
    # on every flat box g outputs fbar (the lookup prompt's two tokens of that cell)
    values = [[Fraction(prompt[2 * c][0]), Fraction(prompt[2 * c + 1][0])] for c in range(K * K)]
    assert outputs_sha256(values) == res["certificate"]["body"]["outputs_sha256"]
    assert canonical_sha256(res["inputs"]["network"]["embedded"]) == res["inputs"]["network"]["sha256"]


def test_python_integer_path_gives_the_same_result(results, monkeypatch):
    """Small integers are computed in int64 after their magnitudes are bounded; forcing Python
    integers everywhere must give the same outputs and numbers (the reported ones)."""
    import verify.checker.universality as cu
    monkeypatch.setattr(cu, "INT64_SAFE", 0)
    for name in NAMES:
        ok, msg = check_result(results[name])
        assert ok, (name, msg)


# =========================================================================== d = 2, n = 2 (windowed evaluation)

@pytest.fixture(scope="module")
def d2n2() -> dict:
    """d = 2, n = 2 (the size class of eps = 1/2 at K = 16) with a small grid, K = 3."""
    res = _json(run_universality(2, 2, "1", "2", "1", "smooth", K=3, samples=0))
    assert res["status"] == "verified"
    return res


def _network_mutations(res: dict):
    """Tampered networks (positional encodings of the prompt windows, the gather layer's tent and
    heads, the lookup layer), with the input's sha256 recomputed so that the check reaches the
    evaluation."""
    net = res["inputs"]["network"]["embedded"]
    m_p = len(net["pos_prompt"])

    def put(label, fn):
        out = copy.deepcopy(res)
        obj = out["inputs"]["network"]["embedded"]
        fn(obj)
        out["inputs"]["network"]["sha256"] = canonical_sha256(obj)
        return label, out

    def swap(a, b):
        def fn(o):
            pp = o["pos_prompt"]
            pp[a][0], pp[b][0] = pp[b][0], pp[a][0]
        return fn

    def move(j, dz):
        def fn(o):
            o["pos_prompt"][j][0] = str(Fraction(o["pos_prompt"][j][0]) + dz)
        return fn
    tok = res["inputs"]["prompt"]["embedded"]["tokens"]
    near = next(j for j in range(2, m_p, 2) if tok[j] != tok[0])
    far = next(j for j in range(m_p - 2, 0, -2) if tok[j] != tok[0])
    pair = next(j for j in range(0, m_p, 2) if tok[j] != tok[j + 1])
    yield put(f"prompt windows of rows 0 and {near} (different values) swapped", swap(0, near))
    yield put(f"prompt windows of rows 0 and {far} (different values) swapped", swap(0, far))
    yield put("prompt windows of the two output positions of a cell swapped", swap(pair, pair + 1))
    for j, dz in ((0, 1), (3, Fraction(1, 2)), (7, 4), (10, -4), (m_p - 1, 3), (0, -10 ** 6)):
        yield put(f"prompt row {j} moved by {dz}", move(j, dz))
    G = len(net["model"]["layers"]) - 2

    def mlp(layer, key, idx, val):
        def fn(o):
            tgt = o["model"]["layers"][layer]["mlp"][key]
            if isinstance(idx, tuple):
                tgt[idx[0]][idx[1]] = val
            else:
                tgt[idx] = val
        return fn
    units = len(net["model"]["layers"][G]["mlp"]["b_1"])
    for k in range(units):
        b = Fraction(net["model"]["layers"][G]["mlp"]["b_1"][k])
        yield put(f"tent unit {k} moved by 1/2", mlp(G, "b_1", k, str(b + Fraction(1, 2))))
    yield put("tent unit 3 reads coordinate 1 too", mlp(G, "W_1", (3, 1), "1"))
    yield put("tent writes coordinate 1", mlp(G, "W_2", (1, 3), "1"))

    def head(layer, h, key, idx, val):
        def fn(o):
            o["model"]["layers"][layer]["attention"]["heads"][h][key][idx[0]][idx[1]] = val
        return fn
    yield put("gather max head keys on coordinate 1 too", head(G, 0, "W_k", (0, 1), "1"))
    yield put("gather min head reads the maximum", head(G, 1, "W_q", (0, 0), "1"))
    yield put("lookup keys on coordinate 1 too", head(G + 1, 0, "W_k", (0, 1), "1"))
    yield put("lookup copies coordinate 1 twice", head(G + 1, 0, "W_v", (1, 1), "2"))


def _tampered_outcomes(res: dict, muts: list) -> int:
    """Check every tampered result against the reference (the full evaluation, all rows per cell):
    when its outputs differ from the committed ones it must be rejected, when they are the same it
    must hold (the certificate is about the network it names).  Returns how many changed."""
    import verify.checker.universality as cu
    from verify.checker.questions import parse_question
    inst = instance(parse_question(res["question"])[1])
    f, _ = cu.target_values(inst)
    prompt = cu._prompt(res["inputs"]["prompt"]["embedded"], inst, f)
    commit = res["certificate"]["body"]["outputs_sha256"]
    changed = 0
    for label, m in muts:
        ok, msg = check_result(m)
        try:
            model, pin, ppr = cu._network(m["inputs"]["network"]["embedded"], inst)
            ref = cu.outputs_sha256(cu.evaluate_cells(model, pin, ppr, prompt, inst, method="full")[0])
        except Reject:
            ref = None
        if ref != commit:
            changed += 1
            assert not ok, (label, msg)
        else:
            assert ok, (label, msg)
    return changed


def test_d2_n2_tampered_networks_are_rejected_unless_their_outputs_are_unchanged(d2n2):
    """Every tampered network is checked against the reference (the full evaluation, all rows
    per cell): when its outputs differ from the committed ones the result must be rejected, when
    they are the same it must hold (the certificate is about the network it names)."""
    muts = list(_network_mutations(d2n2))
    changed = _tampered_outcomes(d2n2, muts)
    assert changed >= len(muts) - 2
    record(KIND, changed, changed)


def test_d2_n2_every_mutation_is_rejected(d2n2):
    ok, msg = check_result(d2n2)
    assert ok, msg
    tried, rejected = assert_all_rejected(KIND, d2n2, list(envelope_mutations(d2n2)) + list(body_mutations(d2n2))
                                          + list(_deep(d2n2)))
    assert tried == rejected > 60


def test_windowed_facts_failing_at_a_size_beyond_the_full_limit_is_refused(d2n2, monkeypatch):
    """A network on which the windowed evaluation's facts fail goes to the full evaluation, which
    is refused beyond its work limit (here set below this small instance): never a shortcut."""
    import verify.checker.universality as cu
    monkeypatch.setattr(cu, "MAX_WORK", 1)
    assert check_result(d2n2)[0]                          # the windowed evaluation: facts hold
    for label, m in _network_mutations(d2n2):
        if label in ("prompt row 0 moved by -1000000", "tent unit 3 reads coordinate 1 too",
                     "lookup keys on coordinate 1 too"):
            ok, msg = check_result(m)
            assert not ok and "limit" in msg, (label, msg)
    monkeypatch.setattr(cu, "MAX_WINDOW_WORK", 1)
    ok, msg = check_result(d2n2)
    assert not ok and "windowed evaluation" in msg and "limit" in msg


def test_the_formula_grid_of_d2_n2_eps_half_is_within_the_limits():
    """K = 16, N = 65,536 cells, m_p = 131,072: the windowed evaluation's work is below its limit,
    the full one's far above its own."""
    import verify.checker.universality as cu
    from verify.provers.universality import _inputs, setup
    q = {"d": 2, "n": 2, "lipschitz": Fraction(1), "p": Fraction(2), "eps": Fraction(1, 2), "target": "relu-net",
         "temperature": None, "seed": 0, "delta": None}
    inst = instance(q)
    assert (inst.K, inst.N, inst.m_p, inst.w) == (16, 65536, 131072, Fraction(1, 16384))
    net, P, _, _, params = setup(2, 2, "1", "2", "1/2", "relu-net", K=2)    # the same layers, fewer tent units
    model = cu._network(_inputs(net, P, params)["network"]["embedded"],
                        instance(dict(q, delta=Fraction(1, 2))))[0]
    preps, npref = cu._split(model, None)
    assert cu._window_work(preps, npref, inst) < cu.MAX_WINDOW_WORK < cu._work(preps, npref, inst) // 64
    with pytest.raises(Reject):
        instance(dict(q, eps=Fraction(1, 3)))                 # K = 24: beyond MAX_CELLS


def test_a_wide_gather_tent_is_charged_to_the_windowed_evaluation():
    """The windowed evaluation tabulates G's tent once (every unit's sign at every piece, in
    rationals): a small file whose gather layer has thousands of tent units is refused by the
    work estimate instead of running for minutes before the first cell."""
    import verify.checker.universality as cu
    from verify.checker.inputs import model_from_obj

    def layer(heads, W1, b1, W2):
        return {"attention": {"kind": "hardmax", "heads": heads},
                "mlp": {"W_1": W1, "b_1": b1, "W_2": W2, "b_2": ["0"]}}
    one, zero = [["1"]], [["0"]]
    units = 5000
    model = model_from_obj({"format": "ptverify-model/1", "d": 1, "layers": [
        layer([{"W_q": zero, "W_k": zero, "W_v": zero, "W_o": zero}], one, ["0"], zero),
        layer([{"W_q": one, "W_k": one, "W_v": one, "W_o": one}], [["1"]] * units,
              [str(-k) for k in range(units)], [["1"] * units]),
        layer([{"W_q": one, "W_k": one, "W_v": one, "W_o": one}], [["-1"], ["1"]], ["0", "-1"], [["1", "-1"]])]})
    inst = instance({"d": 1, "n": 1, "lipschitz": Fraction(1), "p": Fraction(2), "eps": Fraction(1, 2),
                     "target": "smooth", "temperature": None, "seed": None, "delta": Fraction(1, 2)})
    preps, npref = cu._split(model, None)
    assert cu._window_shape(preps, npref, False)
    assert cu._window_work(preps, npref, inst) > cu.MAX_WINDOW_WORK
    rows = [[Fraction(1)], [Fraction(2)]]
    with pytest.raises(Reject, match="windowed evaluation"):
        cu.evaluate_cells(model, [[Fraction(0)]], rows, rows, inst)


def test_clipping_values_in_one_sweep_equal_the_direct_sums():
    """The last MLP's values at its breakpoints, computed in one sweep (the checker's O(n log n)
    way), equal the direct O(n^2) sums on random coordinate-wise units, shared breakpoints included."""
    import random
    from fractions import Fraction as F

    from verify.checker.universality import _values_at_breakpoints
    rng = random.Random(1)
    for _ in range(2000):
        us = [(F(rng.choice([-3, -2, -1, 1, 2, 3]), rng.randint(1, 4)), F(rng.randint(-6, 6), rng.randint(1, 3)),
               F(rng.randint(-5, 5), rng.randint(1, 5))) for _ in range(rng.randint(1, 8))]
        b2 = F(rng.randint(-3, 3), 2)
        brk = sorted({-b / w for w, b, _ in us})
        assert _values_at_breakpoints(us, brk, b2) == [z + b2 + sum(co * max(w * z + b, 0) for w, b, co in us)
                                                       for z in brk]


def test_windowed_evaluation_keeps_the_denominator_limit():
    """A gather-layer output weight with a 2000-bit denominator: the windowed evaluation refuses it as the
    full one does (its work estimate assumes bounded denominators), instead of running slowly."""
    import verify.checker.universality as cu
    from verify.checker.inputs import model_from_obj

    def layer(heads, W1, b1, W2):
        return {"attention": {"kind": "hardmax", "heads": heads},
                "mlp": {"W_1": W1, "b_1": b1, "W_2": W2, "b_2": ["0"]}}
    one, zero = [["1"]], [["0"]]
    big = f"1/{3 ** 1300}"
    model = model_from_obj({"format": "ptverify-model/1", "d": 1, "layers": [
        layer([{"W_q": zero, "W_k": zero, "W_v": zero, "W_o": zero}], one, ["0"], zero),
        layer([{"W_q": one, "W_k": one, "W_v": one, "W_o": one}], one, ["0"], [[big]]),
        layer([{"W_q": one, "W_k": one, "W_v": one, "W_o": one}], [["-1"], ["1"]], ["0", "-1"], [["1", "-1"]])]})
    inst = instance({"d": 1, "n": 1, "lipschitz": Fraction(1), "p": Fraction(2), "eps": Fraction(1, 2),
                     "target": "smooth", "temperature": None, "seed": None, "delta": Fraction(1, 2)})
    preps, npref = cu._split(model, None)
    assert cu._window_shape(preps, npref, False)
    rows = [[Fraction(1)], [Fraction(2)]]
    with pytest.raises(Reject, match="bits"):
        cu.evaluate_cells(model, [[Fraction(0)]], rows, rows, inst)


# =========================================================================== d = 1, n = 3 (chain evaluation)

@pytest.fixture(scope="module")
def d1n3() -> dict:
    """d = 1, n = 3 (the broadcast construction, 7 layers) with a small grid, K = 3."""
    res = _json(run_universality(1, 3, "1", "2", "1", "token-mix", K=3, samples=0))
    assert res["status"] == "verified"
    return res


def _broadcast_mutations(res: dict):
    """Tampered broadcast networks: prompt windows swapped or moved, every unit of every attention
    layer's MLP moved by 1/2, a head made to read the minimum or to add twice the maximum."""
    net = res["inputs"]["network"]["embedded"]
    m_p = len(net["pos_prompt"])
    tok = res["inputs"]["prompt"]["embedded"]["tokens"]

    def put(label, fn):
        out = copy.deepcopy(res)
        obj = out["inputs"]["network"]["embedded"]
        fn(obj)
        out["inputs"]["network"]["sha256"] = canonical_sha256(obj)
        return label, out

    def swap(a, b):
        def fn(o):
            pp = o["pos_prompt"]
            pp[a][0], pp[b][0] = pp[b][0], pp[a][0]
        return fn

    def move(j, dz):
        def fn(o):
            o["pos_prompt"][j][0] = str(Fraction(o["pos_prompt"][j][0]) + dz)
        return fn
    near = next(j for j in range(3, m_p, 3) if tok[j] != tok[0])
    pair = next(j for j in range(0, m_p, 3) if tok[j] != tok[j + 2])
    yield put(f"prompt windows of rows 0 and {near} (different values) swapped", swap(0, near))
    yield put("prompt windows of output positions 0 and 2 of a cell swapped", swap(pair, pair + 2))
    for j, dz in ((0, 1), (4, Fraction(1, 2)), (7, 6), (m_p - 1, -6), (0, -10 ** 6)):
        yield put(f"prompt row {j} moved by {dz}", move(j, dz))
    layers = net["model"]["layers"]
    for li in range(1, len(layers)):
        for k, b in enumerate(layers[li]["mlp"]["b_1"]):
            def fn(o, li=li, k=k, b=b):
                o["model"]["layers"][li]["mlp"]["b_1"][k] = str(Fraction(b) + Fraction(1, 2))
            yield put(f"layer {li} unit {k} moved by 1/2", fn)

    def head(li, key, val):
        def fn(o):
            o["model"]["layers"][li]["attention"]["heads"][0][key][0][0] = val
        return fn
    yield put("gather head reads the minimum", head(1, "W_q", "-1"))
    yield put("a lookup head reads the minimum", head(len(layers) - 2, "W_q", "-1"))
    yield put("a lookup head adds twice the maximum", head(len(layers) - 3, "W_o", "2"))


def test_d1_n3_tampered_networks_are_rejected_unless_their_outputs_are_unchanged(d1n3):
    """As for d = 2, n = 2, on the broadcast network (its attention layers chained): every tampered
    network whose outputs, by the full evaluation, differ from the committed ones is rejected; the
    others hold."""
    muts = list(_broadcast_mutations(d1n3))
    changed = _tampered_outcomes(d1n3, muts)
    assert len(muts) > 60 and changed >= len(muts) // 2
    record(KIND, changed, changed)
