"""Layers whose attention adds nothing (W_o W_v = 0 in every head, with W_o and W_v nonzero):
the output at a token is MLP(x) for every prompt, so the question is decided exactly, whatever
the MLP: memorized (exact replay) when every target is MLP(x), else proved by the
``attention-free`` form, with no injectivity assumption."""
from __future__ import annotations

import json
from fractions import Fraction as F

import pytest
from mutations import assert_all_rejected, body_mutations, envelope_mutations

from constructions.model import dataset_from_json, load_model
from verify.checker import check_result
from verify.provers.limitation import check_memorization


def _model(injective: bool) -> dict:
    mlp = ({"W_1": [[0.25, 0], [0, 0.25]], "b_1": [0, 0], "W_2": [[0.5, 0], [0, 0.5]], "b_2": [0, 0]} if injective
           else {"W_1": [[1, 0], [0, 1]], "b_1": [0, 0], "W_2": [[-1, 0], [0, -1]], "b_2": [0, 0]})
    head = {"W_q": [[1, 0], [0, 1]], "W_k": [[1, 0], [0, 1]], "W_v": [[0, 0], [1, 1]], "W_o": [[1, 0], [0, 0]]}
    return {"format": "ptverify-model/1", "d": 2, "layers": [{"attention": {"kind": "softmax", "heads": [head]},
                                                              "mlp": mlp}]}


def _mlp(obj: dict, x: list) -> list:
    m = obj["layers"][0]["mlp"]
    pre = [sum(F(w) * v for w, v in zip(row, x)) + F(b) for row, b in zip(m["W_1"], m["b_1"])]
    hid = [max(p, F(0)) for p in pre]
    return [xi + sum(F(w) * h for w, h in zip(row, hid)) + F(b) for xi, row, b in zip(x, m["W_2"], m["b_2"])]


def _dataset(obj: dict, moved: bool) -> dict:
    X = [[F(1), F(2)], [F(3), F(-1)]]
    Y = [_mlp(obj, x) for x in X]
    if moved:
        Y[1][0] += 5
    return {"format": "ptverify-dataset/1",
            "examples": [{"input": [[str(v) for v in x] for x in X], "output": [[str(v) for v in y] for y in Y]}]}


def _check(injective: bool, moved: bool, tolerance=F(0)):
    import os
    import tempfile
    mobj = _model(injective)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.json")
        with open(path, "w") as fh:
            json.dump(mobj, fh)
        model = load_model(path)
    ds = dataset_from_json(_dataset(mobj, moved))
    return check_memorization(model, ds, tolerance=tolerance, timeout=30)


@pytest.mark.parametrize("injective", [True, False])
def test_targets_equal_to_mlp_are_memorized_exactly(injective):
    res = _check(injective, moved=False)
    assert res.status.value == "memorized", res.message
    ok, msg = check_result(res.to_json())
    assert ok and "exactly" in msg, msg


@pytest.mark.parametrize("injective", [True, False])
def test_a_moved_target_is_proved_without_injectivity(injective):
    res = _check(injective, moved=True)
    assert res.status.value == "proved", res.message
    assert res.certificate["body"]["form"] == "attention-free"
    ok, msg = check_result(res.to_json())
    assert ok, msg
    assert F(res.reported["certified_min_error"]) == 5  # the moved entry is 5 away


def test_tolerance_beyond_the_gap_is_not_proved():
    res = _check(False, moved=True, tolerance=F(5))
    assert res.status.value != "proved"


def test_attention_free_mutations_rejected():
    res = _check(False, moved=True).to_json()
    muts = list(envelope_mutations(res)) + list(body_mutations(res))
    # the same certificate on a model whose attention is live must fail
    live = json.loads(json.dumps(res))
    emb = live["inputs"]["model"]["embedded"]
    emb["layers"][0]["attention"]["heads"][0]["W_v"] = [[1, 0], [1, 1]]
    from verify.checker import canonical_sha256
    live["inputs"]["model"]["sha256"] = canonical_sha256(emb)
    muts.append(("live attention, re-hashed", live))
    assert_all_rejected("limitation-farkas (attention-free)", res, muts)
