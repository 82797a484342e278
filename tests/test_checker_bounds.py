"""The trusted checker on LoRA witnesses and on the L4/L5 table (verify/checker/bounds.py): real
results are accepted; every envelope mutation, every number and field of the body (nested results
included), every nested result swapped with another, and every certificate from another kind or
instance is rejected."""
from __future__ import annotations

import copy
import json
from fractions import Fraction

import pytest
from mutations import (assert_all_rejected, body_mutations, envelope_mutations, leaves, perturb, set_at)

from constructions.datasets import l1_dataset, l3_dataset, random_model
from constructions.model import dataset_to_json, model_to_json
from verify.checker import canonical_sha256, check_result
from verify.checker.bounds import NESTED_LABELS, table_numbers
from verify.claims import get_claim
from verify.provers.bounds import generic_exact_dataset, lora_result, run_bounds
from verify.result import embed

LORA, TABLE = "lora-witness", "bounds-table"


def _json(res) -> dict:
    return json.loads(json.dumps(res.to_json(), allow_nan=False))


def _paste(res: dict, cert: dict) -> dict:
    return dict(copy.deepcopy(res), certificate=copy.deepcopy(cert))


def _rehashed(res: dict, name: str, path: tuple, value) -> dict:
    """An input's content changed and its sha256 recomputed: only the check itself can object."""
    out = set_at(res, ("inputs", name, "embedded") + path, value)
    out["inputs"][name]["sha256"] = canonical_sha256(out["inputs"][name]["embedded"])
    return out


@pytest.fixture(scope="module")
def lora() -> dict:
    """The L5 claim (quick) and LoRA results on other instances of other kinds."""
    c = get_claim("L5")
    out = {"L5": _json(c.run(dict(c.quick, seed=0), "."))}
    m = random_model(4, heads=1, head_size=2, mlp_width=8, seed=1, zero_scores=True)
    out["L3"] = _json(lora_result(m, l3_dataset(m, 1), "x"))
    m = random_model(4, heads=1, head_size=2, mlp_width=8, seed=0, kind="hardmax")
    out["hardmax"] = _json(lora_result(m, generic_exact_dataset(m, 2, 2, 0), "x"))
    m = random_model(4, heads=1, head_size=2, mlp_width=8, seed=3, zero_scores=True)
    out["other-seed"] = _json(lora_result(m, l1_dataset(m, 3), "x"))
    for name, res in out.items():
        assert res["status"] == "memorized", (name, res["info"]["message"])
    return out


@pytest.fixture(scope="module")
def table() -> dict:
    c = get_claim("L4L5")
    out = {"quick": _json(c.run(dict(c.quick, seed=0), "."))}
    out["other"] = _json(run_bounds(4, 1, 3, 2, 1, 8, seed=1, verify=True, timeout=30))
    for name, res in out.items():
        assert res["status"] == "verified", (name, res["info"]["message"])
    return out


# --------------------------------------------------------------------------- lora-witness

def test_lora_result_holds_and_derives_rank(lora):
    res = lora["L5"]
    ok, msg = check_result(res)
    assert ok, msg
    assert res["reported"] == {"rank": 2, "params": 2 * (4 + 8), "max_error": "0", "constrained_outputs": 2}
    assert check_result(dict(res, reported={"rank": 1}))[0] is False
    assert check_result(lora["L3"])[0] and lora["L3"]["reported"]["rank"] == 1


def _lora_extra_mutations(res: dict, lora: dict) -> list:
    body = res["certificate"]["body"]
    d, k = len(body["B"]), len(body["A"])
    ex = res["inputs"]["dataset"]["embedded"]["examples"]
    t = next(i for i, y in enumerate(ex[0]["output"]) if y is not None)
    b2 = float(res["inputs"]["model"]["embedded"]["layers"][0]["mlp"]["b_2"][0])
    muts = [
        # a target moved: the frozen attention and features are unchanged, so the replay must miss it
        ("dataset target rehashed", _rehashed(res, "dataset", ("examples", 0, "output", t, 0),
                                              str(Fraction(ex[0]["output"][t][0]) + Fraction(1, 2**20)))),
        # b_2 is added to every output: any change breaks exact equality
        ("model b_2 rehashed", _rehashed(res, "model", ("layers", 0, "mlp", "b_2", 0), b2 + 0.5)),
        ("B extra zero column, A extra zero row",
         set_at(set_at(res, ("certificate", "body", "B"), [row + ["0"] for row in body["B"]]),
                ("certificate", "body", "A"), body["A"] + [["0"] * len(body["A"][0])])),
        ("B A doubled rank, halves", set_at(set_at(res, ("certificate", "body", "B"), [row + row for row in body["B"]]),
                                            ("certificate", "body", "A"),
                                            [[str(Fraction(v) / 2) for v in r] for r in body["A"] * 2])),
        ("empty update", set_at(set_at(res, ("certificate", "body", "B"), [[] for _ in range(d)]),
                                ("certificate", "body", "A"), [])),
        ("A as floats with NaN", set_at(res, ("certificate", "body", "A", 0, 0), float("nan"))),
        ("B bool", set_at(res, ("certificate", "body", "B", 0, 0), True)),
        ("B 1/0", set_at(res, ("certificate", "body", "B", 0, 0), "1/0")),
        ("target W_1", set_at(res, ("question", "target"), "W_1")),
        ("tolerance 1e-9 with an off target",
         _rehashed(set_at(res, ("question", "tolerance"), "1/1000000000"), "dataset",
                   ("examples", 0, "output", t, 0), str(Fraction(ex[0]["output"][t][0]) + Fraction(1, 10**8)))),
        ("reported rank + 1", dict(res, reported=dict(res["reported"], rank=k + 1))),
        ("reported params", dict(res, reported=dict(res["reported"], params=k * 4))),
        ("reported max_error", dict(res, reported=dict(res["reported"], max_error="1/7"))),
        ("model replaced by a two-layer model", _rehashed(res, "model", ("layers",),
                                                         res["inputs"]["model"]["embedded"]["layers"] * 2)),
    ]
    # a softmax model whose scores differ: the output involves exp, an exact replay is impossible
    m = random_model(4, heads=1, head_size=2, mlp_width=8, seed=0)
    muts.append(("softmax model with unequal scores", dict(copy.deepcopy(res), inputs=dict(
        res["inputs"], model=embed(model_to_json(m))))))
    m = random_model(4, heads=1, head_size=2, mlp_width=8, seed=0, zero_scores=True)
    muts.append(("other dataset", dict(copy.deepcopy(res), inputs=dict(
        res["inputs"], dataset=embed(dataset_to_json(l3_dataset(m, 5)))))))
    for other in ("L3", "hardmax", "other-seed"):
        muts.append((f"{other} witness", _paste(res, lora[other]["certificate"])))
        muts.append((f"{other} inputs", dict(copy.deepcopy(res), inputs=lora[other]["inputs"])))
    return muts


def test_lora_every_mutation_is_rejected(lora, table):
    res = lora["L5"]
    muts = list(envelope_mutations(res)) + list(body_mutations(res)) + _lora_extra_mutations(res, lora)
    muts.append(("a bounds-table certificate", _paste(res, table["quick"]["certificate"])))
    lora_in_table = table["quick"]["certificate"]["body"]["L1"]["lora"]
    muts.append(("the table's L1 LoRA witness", _paste(res, lora_in_table["certificate"])))
    tried, rejected = assert_all_rejected(LORA, res, muts)
    assert tried == rejected and tried > 100


def test_lora_minimum_norm_is_required(lora):
    """An update that still memorizes but adds a component orthogonal to every feature is refused
    (the only objection): the body is canonical, so no entry can change and still hold."""
    from constructions.lora import features_exact, rref
    m = random_model(4, heads=1, head_size=2, mlp_width=8, seed=0, kind="hardmax")
    _, H, _ = features_exact(m, generic_exact_dataset(m, 2, 2, 0))
    R, piv = rref(H.T)
    free = next(j for j in range(H.shape[0]) if j not in piv)
    v = [Fraction(0)] * H.shape[0]
    v[free] = Fraction(1)
    for i, p in enumerate(piv):
        v[p] = -R[i, free]
    assert all(sum(H[j, c] * v[j] for j in range(len(v))) == 0 for c in range(H.shape[1]))
    res = lora["hardmax"]
    row = [str(Fraction(x) + y) for x, y in zip(res["certificate"]["body"]["A"][0], v)]
    ok, msg = check_result(set_at(res, ("certificate", "body", "A", 0), row))
    assert not ok and "span" in msg, msg


def test_lora_positive_tolerance_and_certificate_kinds(lora):
    res = set_at(lora["L5"], ("question", "tolerance"), "1/1000")
    from verify.checker import statement
    res["statement"] = statement(res["question"], "memorized")
    assert check_result(res)[0]
    assert "within 1/1000" in res["statement"]


# --------------------------------------------------------------------------- bounds-table

def test_table_holds_and_reports_the_formulas(table):
    res = table["quick"]
    ok, msg = check_result(res)
    assert ok, msg
    q = {k: v for k, v in res["question"].items() if k != "kind"}
    derived = table_numbers(q)
    for k, v in derived.items():
        assert res["reported"][k] == v, k
    assert res["reported"]["L4_min_prompt_length"] == 4 and res["reported"]["L5_params_bound"] == 4 * 12
    assert res["reported"]["crossover_N"] is None
    assert "info" not in json.dumps(res["certificate"])
    assert check_result(table["other"])[0]


def _nested_paths(body: dict) -> list:
    return [((row, part), body[row][part]) for row, part in NESTED_LABELS if body.get(row)]


def _sampled_body_mutations(res: dict, per_input: int = 2):
    """Every leaf of the body perturbed, except: in the embedded inputs of the nested results only
    ``per_input`` leaves at each end (each such change breaks that input's sha256, which the
    envelope tests cover leaf by leaf), and in the nested certificate bodies two of the four
    perturbations of every leaf (the other two are in each kind's own mutation tests; the fit's
    interval replay makes each one take about a second)."""
    seen: dict = {}
    for name, m in body_mutations(res):
        if "'certificate', 'body'" in name and name.endswith(("#2", "#3")):
            continue
        if "'embedded'" in name:
            key = name[:name.index("'embedded'")]
            seen.setdefault(key, []).append((name, m))
            continue
        yield name, m
    for group in seen.values():
        yield from group[:4 * per_input] + group[-4 * per_input:]


def _nested_mutations(res: dict, other: dict) -> list:
    body = res["certificate"]["body"]
    muts = []
    for (row, part), nres in _nested_paths(body):
        at = ("certificate", "body", row, part)
        muts.append((f"{row}.{part} null", set_at(res, at, None)))
        muts.append((f"{row}.{part} info added", set_at(res, at, dict(nres, info={"method": "x"}))))
        for name, m in envelope_mutations(nres):
            muts.append((f"{row}.{part} {name}", set_at(res, at, m)))
        for (row2, part2), nres2 in _nested_paths(body):
            if (row2, part2) != (row, part):
                muts.append((f"{row}.{part} <- {row2}.{part2}", set_at(res, at, nres2)))
        obody = other["certificate"]["body"]
        if obody.get(row) and obody[row].get(part):
            muts.append((f"{row}.{part} <- other instance", set_at(res, at, obody[row][part])))
            muts.append((f"{row}.{part} certificate <- other instance",
                         set_at(res, at + ("certificate",), obody[row][part]["certificate"])))
    for row in ("L4", "L5", "L1", "L3"):
        muts.append((f"{row} null", set_at(res, ("certificate", "body", row), None)))
    return muts


def _table_mutations(table, lora) -> list:
    res, other = table["quick"], table["other"]
    muts = list(envelope_mutations(res)) + list(_sampled_body_mutations(res)) + _nested_mutations(res, other)
    muts += [("other instance's table", _paste(res, other["certificate"])),
             ("a lora-witness certificate", _paste(res, lora["L5"]["certificate"])),
             ("reported L5 rank bound", dict(res, reported=dict(res["reported"], L5_rank_bound=3))),
             ("reported crossover", dict(res, reported=dict(res["reported"], crossover_N=1)))]
    return muts


def test_table_mutations_are_rejected(table, lora):
    """Every eighth mutation and every swap (about 180; all 1,386 under ``-m slow``)."""
    muts = _table_mutations(table, lora)
    sample = muts[::8] + muts[-4:]
    tried, rejected = assert_all_rejected(TABLE, table["quick"], sample)
    assert tried == rejected and tried > 150


@pytest.mark.slow
def test_table_every_mutation_is_rejected(table, lora):
    tried, rejected = assert_all_rejected(TABLE, table["quick"], _table_mutations(table, lora))
    assert tried == rejected and tried > 500


def test_table_rows_match_applicability(table):
    """L5 must be null exactly when N m > r, L3 exactly when h s >= d."""
    res = table["quick"]
    from verify.checker import statement
    for key, val in (("mlp_width", 3), ("head_size", 2)):   # N m = 4 > 3; h s = 4 >= d = 4
        q = dict(res["question"], **{key: val})
        bad = dict(copy.deepcopy(res), question=q, statement=statement(q, "verified"))
        ok, msg = check_result(bad)
        assert not ok and ("expected null" in msg or "expected" in msg), msg


def test_lora_numbers_match_the_nested_leaves(table):
    """The ranks the table reports are those of its nested LoRA results."""
    res = table["quick"]
    body = res["certificate"]["body"]
    assert res["reported"]["L1_lora_rank"] == body["L1"]["lora"]["reported"]["rank"]
    assert res["reported"]["L5_hardmax_rank"] == body["L5"]["hardmax"]["reported"]["rank"]
    assert res["reported"]["L3_lora_rank"] == 1
    assert sum(1 for _ in leaves(body)) > 100 and perturb(1)
