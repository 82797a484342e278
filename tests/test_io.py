"""Model and dataset files: bad inputs are rejected naming the field, round trips are exact.

The bad-input tests are one table per loader: (case id, mutation of a valid file, the field the
``InputError`` must name).  The CLI tests check that ``ptverify check`` maps the same errors to
exit code 2, names the field on stderr and leaves no result file behind.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from constructions.datasets import l1_dataset, random_model
from constructions.model import (Dataset, InputError, Model, as_fraction, dataset_from_json, dataset_to_json,
                                 load_dataset, load_model, model_from_json, model_to_json, save_dataset,
                                 save_model)


# --------------------------------------------------------------------------- helpers

def _model_json(d: int = 2) -> dict:
    return model_to_json(random_model(d, heads=2, head_size=1, mlp_width=3, seed=0))


def _dataset_json(d: int = 2) -> dict:
    return {"format": "ptverify-dataset/1",
            "examples": [{"input": [[1, 2][:d], ["1/3", 0.5][:d]], "output": [None, ["2/7", -1][:d]]},
                         {"input": [[0.25, 0][:d], ["1/3", 0.5][:d]], "output": [None, [1, "3"][:d]]}]}


def _write_json(path, obj) -> str:
    with open(path, "w") as fh:
        json.dump(obj, fh)   # json writes NaN / Infinity literals, which json.load reads back
    return str(path)


def _set(path):
    """A mutation that sets obj[path...] = value."""
    def make(value):
        def mutate(obj):
            cur = obj
            for k in path[:-1]:
                cur = cur[k]
            cur[path[-1]] = value
        return mutate
    return make


def _delete(path):
    def mutate(obj):
        cur = obj
        for k in path[:-1]:
            cur = cur[k]
        del cur[path[-1]]
    return mutate


H0 = ["layers", 0, "attention", "heads", 0]
MLP = ["layers", 0, "mlp"]

MODEL_CASES = [
    ("wrong-format", _set(["format"])("ptverify-model/3"), "format"),
    ("missing-format", _delete(["format"]), "format"),
    ("d-zero", _set(["d"])(0), "d"),
    ("d-string", _set(["d"])("2"), "d"),
    ("d-bool", _set(["d"])(True), "d"),
    ("causal-not-bool", _set(["causal"])("yes"), "causal"),
    ("no-layers", _set(["layers"])([]), "layers"),
    ("unknown-kind", _set(["layers", 0, "attention", "kind"])("relu"), "layers[0].attention.kind"),
    ("no-heads", _set(["layers", 0, "attention", "heads"])([]), "layers[0].attention.heads"),
    ("missing-W_k", _delete(H0 + ["W_k"]), "layers[0].attention.heads[0].W_k"),
    ("missing-W_2", _delete(MLP + ["W_2"]), "layers[0].mlp.W_2"),
    ("missing-mlp", _delete(["layers", 0, "mlp"]), "layers[0].mlp"),
    ("W_q-row-too-long", _set(H0 + ["W_q"])([[1, 2, 3]]), "layers[0].attention.heads[0].W_q"),
    ("W_k-too-many-rows", _set(H0 + ["W_k"])([[1, 2], [3, 4]]), "layers[0].attention.heads[0].W_k"),
    ("W_o-wrong-columns", _set(H0 + ["W_o"])([[1, 2], [3, 4]]), "layers[0].attention.heads[0].W_o"),
    ("W_1-not-a-matrix", _set(MLP + ["W_1"])([1, 2]), "layers[0].mlp.W_1"),
    ("b_1-wrong-length", _set(MLP + ["b_1"])([0, 0]), "layers[0].mlp.b_1"),
    ("b_2-matrix", _set(MLP + ["b_2"])([[0], [0]]), "layers[0].mlp.b_2"),
    ("W_2-ragged", _set(MLP + ["W_2"])([[1, 2, 3], [1, 2]]), "layers[0].mlp.W_2"),
    ("nan", _set(H0 + ["W_q", 0, 1])(float("nan")), "layers[0].attention.heads[0].W_q[0][1]"),
    ("inf", _set(MLP + ["b_2", 1])(float("inf")), "layers[0].mlp.b_2[1]"),
    ("minus-inf", _set(H0 + ["W_v", 0, 0])(float("-inf")), "layers[0].attention.heads[0].W_v[0][0]"),
    ("not-a-rational", _set(H0 + ["W_v", 0, 0])("three"), "layers[0].attention.heads[0].W_v[0][0]"),
    ("division-by-zero", _set(H0 + ["W_v", 0, 1])("1/0"), "layers[0].attention.heads[0].W_v[0][1]"),
    ("boolean-entry", _set(MLP + ["W_1", 2, 0])(True), "layers[0].mlp.W_1[2][0]"),
    ("null-entry", _set(MLP + ["W_1", 0, 0])(None), "layers[0].mlp.W_1[0][0]"),
    ("second-head-missing-W_o", lambda o: o["layers"][0]["attention"]["heads"][1].pop("W_o"),
     "layers[0].attention.heads[1].W_o"),
]


@pytest.mark.parametrize("case, mutate, field", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_model_json_is_rejected_naming_the_field(tmp_path, case, mutate, field):
    obj = _model_json()
    mutate(obj)
    path = _write_json(tmp_path / "m.json", obj)
    with pytest.raises(InputError) as info:
        load_model(path)
    assert info.value.field == field or info.value.field.startswith(field), (info.value.field, field)
    assert field in str(info.value)
    assert "expected" in str(info.value) and "found" in str(info.value)
    with pytest.raises(InputError) as from_dict:   # the same validator for a dict
        model_from_json(json.loads(open(path).read()))
    assert str(from_dict.value) == str(info.value)


def test_valid_model_json_loads(tmp_path):
    """The table's base file is valid: each failure above comes from its one mutation."""
    m = load_model(_write_json(tmp_path / "m.json", _model_json()))
    assert m.d == 2 and len(m.layers[0].heads) == 2 and m.layers[0].r == 3
    assert _models_equal(m, model_from_json(_model_json()))


@pytest.mark.parametrize("name, content, field", [
    ("m.txt", json.dumps({"format": "ptverify-model/1"}), "--model"),
    ("m.json", "{not json", "--model"),
    ("m.json", "", "--model"),
    ("m.npz", "not a zip archive", "--model"),
    ("m.json", "[1, 2, 3]", "model"),
])
def test_unreadable_model_file_is_rejected(tmp_path, name, content, field):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError) as info:
        load_model(str(path))
    assert info.value.field == field and field in str(info.value)


def test_missing_model_file_is_rejected(tmp_path):
    with pytest.raises(InputError) as info:
        load_model(str(tmp_path / "absent.json"))
    assert info.value.field == "--model"


def _npz_arrays(model: Model) -> dict:
    out = {k: np.asarray(a, dtype=np.float64) for k, a in model.arrays()}
    hdr = {"format": "ptverify-model/1", "d": model.d, "causal": False,
           "kinds": [layer.kind for layer in model.layers], "heads": [len(layer.heads) for layer in model.layers]}
    out["__header__"] = np.frombuffer(json.dumps(hdr).encode(), dtype=np.uint8)
    return out


def _npz_mutations():
    def drop(key):
        return lambda a: a.pop(key)

    def put(key, value):
        def f(a):
            a[key] = value
        return f

    def nan_in(key):
        def f(a):
            a[key] = a[key].copy()
            a[key].reshape(-1)[0] = np.nan
        return f
    k = "layers.0.attention.heads.0."
    return [
        ("missing-array", drop(k + "W_v"), "layers[0].attention.heads[0].W_v"),
        ("wrong-shape", put(k + "W_o", np.zeros((3, 1))), "layers[0].attention.heads[0].W_o"),
        ("nan", nan_in("layers.0.mlp.W_1"), "layers[0].mlp.W_1"),
        ("strings", put("layers.0.mlp.b_2", np.array(["a", "b"])), "layers[0].mlp.b_2"),
        ("no-header", drop("__header__"), "__header__"),
        ("wrong-format", put("__header__", np.frombuffer(json.dumps(
            {"format": "x", "d": 2, "kinds": ["softmax"], "heads": [2]}).encode(), dtype=np.uint8)), "format"),
        ("header-not-an-object", put("__header__", np.frombuffer(b"[1, 2]", dtype=np.uint8)), "__header__"),
        ("header-heads-not-integers", put("__header__", np.frombuffer(json.dumps(
            {"format": "ptverify-model/1", "d": 2, "kinds": ["softmax"], "heads": ["2"]}).encode(),
            dtype=np.uint8)), "__header__"),
    ]


@pytest.mark.parametrize("case, mutate, field", _npz_mutations(), ids=[c[0] for c in _npz_mutations()])
def test_bad_model_npz_is_rejected_naming_the_field(tmp_path, case, mutate, field):
    arrays = _npz_arrays(random_model(2, heads=2, head_size=1, mlp_width=3, seed=0))
    mutate(arrays)
    path = str(tmp_path / "m.npz")
    np.savez(path, **arrays)
    with pytest.raises(InputError) as info:
        load_model(path)
    assert info.value.field.startswith(field) and field in str(info.value)


E0 = ["examples", 0]

DATASET_CASES = [
    ("wrong-format", _set(["format"])("ptverify-model/1"), "format"),
    ("no-examples", _set(["examples"])([]), "examples"),
    ("example-not-object", _set(["examples", 0])([1, 2]), "examples[0]"),
    ("missing-input", _delete(E0 + ["input"]), "examples[0].input"),
    ("empty-input", _set(E0 + ["input"])([]), "examples[0].input"),
    ("ragged-input", _set(E0 + ["input"])([[1, 2], [3]]), "examples[0].input"),
    ("input-vector", _set(E0 + ["input"])([1, 2]), "examples[0].input[0]"),
    ("nan-input", _set(E0 + ["input", 1, 0])(float("nan")), "examples[0].input[1][0]"),
    ("inf-output", _set(["examples", 1, "output", 1, 1])(float("inf")), "examples[1].output[1][1]"),
    ("string-entry", _set(E0 + ["input", 0, 1])("two"), "examples[0].input[0][1]"),
    ("bool-entry", _set(E0 + ["output", 1, 0])(False), "examples[0].output[1][0]"),
    ("output-too-short", _set(E0 + ["output"])([None]), "examples[0].output"),
    ("output-not-list", _set(E0 + ["output"])("none"), "examples[0].output"),
    ("output-token-wrong-d", _set(E0 + ["output", 1])([1, 2, 3]), "examples[0].output[1]"),
    ("second-example-wrong-d", _set(["examples", 1, "input"])([[1, 2, 3], [4, 5, 6]]), "examples[1].input"),
]


@pytest.mark.parametrize("case, mutate, field", DATASET_CASES, ids=[c[0] for c in DATASET_CASES])
def test_bad_dataset_is_rejected_naming_the_field(tmp_path, case, mutate, field):
    obj = _dataset_json()
    mutate(obj)
    path = _write_json(tmp_path / "ds.json", obj)
    with pytest.raises(InputError) as info:
        load_dataset(path)
    assert info.value.field.startswith(field), (info.value.field, field)
    assert field in str(info.value)
    with pytest.raises(InputError) as from_dict:   # the same validator for a dict
        dataset_from_json(json.loads(open(path).read()))
    assert str(from_dict.value) == str(info.value)


def test_valid_dataset_loads_exactly(tmp_path):
    ds = load_dataset(_write_json(tmp_path / "ds.json", _dataset_json()))
    assert len(ds.examples) == 2 and ds.d == 2
    assert ds.examples[0].output[0] is None
    assert list(ds.examples[0].input[1]) == [Fraction(1, 3), Fraction(1, 2)]
    assert list(ds.examples[0].output[1]) == [Fraction(2, 7), -1]


@pytest.mark.parametrize("d", [1, 3])
def test_dataset_d_mismatch_with_the_model(tmp_path, d):
    path = _write_json(tmp_path / "ds.json", _dataset_json(2))
    with pytest.raises(InputError) as info:
        load_dataset(path, d=d)
    assert info.value.field.startswith("examples[0].input")
    assert f"{d} entries" in str(info.value)


@pytest.mark.parametrize("content, field", [
    ("{\"format\": ", "--dataset"),
    ("\"just a string\"", "dataset"),
    (b"\xff\xfe\x00binary", "--dataset"),
])
def test_unreadable_dataset_file_is_rejected(tmp_path, content, field):
    path = tmp_path / "ds.json"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(InputError) as info:
        load_dataset(str(path))
    assert info.value.field == field


# --------------------------------------------------------------------------- round trips

def _exact(a: np.ndarray) -> list:
    return [Fraction(x) for x in as_fraction(np.asarray(a)).reshape(-1)]


def _models_equal(a: Model, b: Model) -> bool:
    ka, kb = dict(a.arrays()), dict(b.arrays())
    return (a.d == b.d and a.causal == b.causal and ka.keys() == kb.keys()
            and all(ka[k].shape == kb[k].shape and _exact(ka[k]) == _exact(kb[k]) for k in ka)
            and [layer.kind for layer in a.layers] == [layer.kind for layer in b.layers])


def _with_thirds(model: Model) -> Model:
    """The model with some entries replaced by non-dyadic rationals (not binary64 values)."""
    m = copy.deepcopy(model)
    h = m.layers[0].heads[0]
    W = as_fraction(h.W_q).copy()
    W[0, 0] = Fraction(1, 3)
    W[-1, -1] = Fraction(-22, 7)
    h.W_q = W
    b = as_fraction(m.layers[0].b_2).copy()
    b[0] = Fraction(10**30 + 1, 3)
    m.layers[0].b_2 = b
    return m


def test_model_json_round_trip_keeps_fractions_exact(tmp_path):
    m = _with_thirds(random_model(3, heads=2, seed=4, layers=2, causal=True))
    path = str(tmp_path / "m.json")
    save_model(m, path)
    back = load_model(path)
    assert _models_equal(m, back)
    assert back.layers[0].heads[0].W_q[0, 0] == Fraction(1, 3)
    assert back.layers[0].heads[0].W_q.dtype == object
    assert back.layers[0].b_2[0] == Fraction(10**30 + 1, 3)


def test_model_npz_round_trip_is_bitwise(tmp_path):
    m = random_model(4, heads=3, seed=7, kind="hardmax")
    path = str(tmp_path / "m.npz")
    save_model(m, path)
    back = load_model(path)
    assert _models_equal(m, back)
    for (k, a), (_, b) in zip(m.arrays(), back.arrays()):
        assert b.dtype == np.float64 and np.array_equal(a, b), k


def test_npz_refuses_non_binary64_rationals_without_writing(tmp_path):
    path = tmp_path / "m.npz"
    with pytest.raises(InputError) as info:
        save_model(_with_thirds(random_model(2, seed=1)), str(path))
    assert "W_q" in info.value.field
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_constructed_dataset_round_trip(tmp_path):
    m = random_model(3, heads=1, seed=2)
    ds = l1_dataset(m, seed=2)
    path = str(tmp_path / "ds.json")
    save_dataset(ds, path)
    back = load_dataset(path, d=3)
    assert len(back.examples) == len(ds.examples)
    for a, b in zip(ds.examples, back.examples):
        assert _exact(a.input) == _exact(b.input)
        assert [y is None for y in a.output] == [y is None for y in b.output]
        for ya, yb in zip(a.output, b.output):
            if ya is not None:
                assert _exact(ya) == _exact(yb)


numbers = st.one_of(
    st.fractions(max_denominator=10**12).filter(lambda q: abs(q) < 10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-10**30, 10**30),
)


@given(st.integers(1, 3), st.integers(1, 3), st.data())
def test_dataset_json_round_trip_is_exact(d, m, data):
    rows = data.draw(st.lists(st.lists(numbers, min_size=d, max_size=d), min_size=m, max_size=m))
    outs = data.draw(st.lists(st.one_of(st.none(), st.lists(numbers, min_size=d, max_size=d)), min_size=m, max_size=m))
    obj = {"format": "ptverify-dataset/1",
           "examples": [{"input": [[_to_json(v) for v in r] for r in rows],
                         "output": [None if o is None else [_to_json(v) for v in o] for o in outs]}]}
    ds = _load_obj(obj)
    assert _exact(ds.examples[0].input) == [Fraction(v) for r in rows for v in r]
    again = _load_obj(dataset_to_json(ds))
    assert _exact(again.examples[0].input) == _exact(ds.examples[0].input)
    for o, y in zip(outs, again.examples[0].output):
        assert (o is None) == (y is None)
        if o is not None:
            assert _exact(y) == [Fraction(v) for v in o]


def _to_json(v):
    return f"{v.numerator}/{v.denominator}" if isinstance(v, Fraction) else v


def _load_obj(obj) -> Dataset:
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ds.json")
        with open(path, "w") as fh:
            json.dump(obj, fh)
        return load_dataset(path)


# --------------------------------------------------------------------------- the check command

def _cli_check_available() -> bool:
    from verify.cli import app
    return any(getattr(c, "name", None) == "check" for c in app.registered_commands)


needs_check = pytest.mark.skipif(not _cli_check_available(), reason="ptverify check is not registered")


def _run_main(argv, capsys):
    from verify.cli import main
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr()


def _good_files(tmp_path):
    m = random_model(2, heads=1, seed=0)
    save_model(m, str(tmp_path / "model.json"))
    save_dataset(l1_dataset(m, seed=0), str(tmp_path / "data.json"))
    return json.loads((tmp_path / "model.json").read_text()), json.loads((tmp_path / "data.json").read_text())


CLI_CASES = [
    ("nan-in-model", "model", lambda m, ds: m["layers"][0]["attention"]["heads"][0]["W_k"][0].__setitem__(0, float("nan")),
     "layers[0].attention.heads[0].W_k[0][0]"),
    ("mis-shaped-W_1", "model", lambda m, ds: m["layers"][0]["mlp"]["W_1"].append([1, 2, 3]),
     "layers[0].mlp.W_1"),
    ("unknown-model-format", "model", lambda m, ds: m.__setitem__("format", "onnx"), "format"),
    ("unknown-dataset-format", "dataset", lambda m, ds: ds.__setitem__("format", "csv"), "format"),
    ("dataset-wrong-d", "dataset", lambda m, ds: ds["examples"][0]["input"][0].append(0.5), "examples[0].input[0]"),
    ("nan-in-dataset", "dataset", lambda m, ds: ds["examples"][1]["output"][1].__setitem__(0, float("nan")),
     "examples[1].output[1][0]"),
]


@needs_check
@pytest.mark.parametrize("case, which, mutate, field", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_check_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, case, which, mutate, field):
    model_obj, ds_obj = _good_files(tmp_path)
    mutate(model_obj, ds_obj)
    _write_json(tmp_path / "model.json", model_obj)
    _write_json(tmp_path / "data.json", ds_obj)
    out = tmp_path / "out"
    out.mkdir()
    code, cap = _run_main(["check", "--model", str(tmp_path / "model.json"), "--dataset", str(tmp_path / "data.json"),
                           "--json", str(out / "r.json")], capsys)
    assert code == 2
    assert field in cap.err
    assert list(out.iterdir()) == [], "a result file was left behind after bad input"


@needs_check
def test_check_good_files_write_the_result(tmp_path, capsys):
    """Positive control for the tests above: the unmutated files give a verdict and a result file."""
    _good_files(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    code, cap = _run_main(["check", "--model", str(tmp_path / "model.json"), "--dataset", str(tmp_path / "data.json"),
                           "--json", str(out / "r.json")], capsys)
    assert code == 0, cap.err
    assert json.loads((out / "r.json").read_text())["status"] == "proved"


@needs_check
@pytest.mark.parametrize("args, field", [
    (["--prompt-length", "0"], "--prompt-length"),
    (["--prompt-length", "many"], "--prompt-length"),
    (["--tolerance", "-1"], "--tolerance"),
])
def test_check_bad_options_exit_2(tmp_path, capsys, args, field):
    _good_files(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    code, cap = _run_main(["check", "--model", str(tmp_path / "model.json"), "--dataset", str(tmp_path / "data.json"),
                           "--json", str(out / "r.json"), *args], capsys)
    assert code == 2 and field in cap.err
    assert list(out.iterdir()) == []


@needs_check
def test_check_unknown_extension_exits_2_as_a_process(tmp_path):
    """The installed entry point (python -m verify) maps bad input to exit code 2 on stderr."""
    _good_files(tmp_path)
    (tmp_path / "model.yaml").write_text((tmp_path / "model.json").read_text())
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-m", "verify", "check", "--model", str(tmp_path / "model.yaml"),
                           "--dataset", str(tmp_path / "data.json"), "--json", str(out / "r.json")],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "--model" in proc.stderr and "model.yaml" in proc.stderr
    assert list(out.iterdir()) == []
