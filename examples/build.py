"""Rebuild the example models and datasets in this folder with the project's own builders.

    python examples/build.py            # overwrites examples/*/
    python examples/build.py OUTDIR     # writes the same tree under OUTDIR instead

Every file is deterministic (fixed seeds, dyadic weights), so a rebuild reproduces the same
bytes.  examples/README.md gives each example's command and expected verdict.
"""
from __future__ import annotations

import os
import sys
from fractions import Fraction

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
OUT = HERE

from constructions.datasets import (l1_dataset, l3_dataset, long_prompt_dataset, planted_dataset,  # noqa: E402
                                    prop_e_dataset, random_model)
from constructions.model import Dataset, Example, save_dataset, save_model  # noqa: E402
from constructions.multilayer import collision_dataset, condition1_model, encoder_counterexample  # noqa: E402


def _write(folder: str, model=None, dataset=None, model_name="model.json", dataset_name="dataset.json"):
    path = os.path.join(OUT, folder)
    os.makedirs(path, exist_ok=True)
    if model is not None:
        save_model(model, os.path.join(path, model_name))
    if dataset is not None:
        save_dataset(dataset, os.path.join(path, dataset_name))


def build_single_layer() -> None:
    # L1: what `ptverify prove limitation --d 3 --save-model ... --save-dataset ...` writes
    m = random_model(3, heads=1, seed=0)
    _write("L1", m, l1_dataset(m, seed=0))
    _write("L1", m, model_name="model.npz")
    # L2: three examples sharing x_0, two heads (the claim's default instance)
    m = random_model(8, heads=2, head_size=4, seed=0)
    _write("L2", m, l1_dataset(m, seed=0, examples=3))
    # L3: h s < d, a target off the attention subspace (the claim's default instance)
    m = random_model(16, heads=2, head_size=4, seed=0)
    _write("L3", m, l3_dataset(m, seed=0))
    # Proposition E: one zero-score head; alpha = 3/2 (no prompt) and alpha = 2 (a 2-token prompt)
    m = random_model(4, heads=1, seed=0, zero_scores=True)
    _write("E", m, prop_e_dataset(m, Fraction(3, 2), seed=0))
    _write("E", dataset=prop_e_dataset(m, Fraction(2), seed=0), dataset_name="dataset-alpha2.json")
    # E-length: targets planted by a 4-token prompt (float64), refuted for length 1
    m = random_model(3, heads=1, seed=5)
    _write("E-length", m, long_prompt_dataset(m, prompt_length=4, seed=5)[0])
    # planted: a dataset produced by a known one-token prompt (float64 targets)
    m = random_model(3, heads=1, seed=0)
    _write("planted", m, planted_dataset(m, seed=0, examples=2)[0])
    # hardmax: exact forward pass, so the planted targets are exact rationals; and an L3 dataset
    m = random_model(4, heads=1, head_size=2, seed=0, kind="hardmax")
    _write("hardmax", m, planted_dataset(m, seed=0, examples=2)[0], dataset_name="planted.json")
    _write("hardmax", dataset=l3_dataset(m, seed=0), dataset_name="l3.json")


def build_multilayer() -> None:
    # Theorem M, condition 1: a causal 2-layer model and the collision dataset {(x, y), (x', y)}
    m = condition1_model(4, heads=2, layers=2, seed=0)
    _write("multilayer", m, collision_dataset(m, seed=0)[0])
    # causal vs encoder: the same exact rational weights ("3/5"), with and without "causal"
    y = [Fraction(3, 8), Fraction(1, 8)]
    ds = Dataset([Example(input=_rows([[Fraction(1, 2), Fraction(-1, 4)]]), output=[_rows([y])[0]]),
                  Example(input=_rows([[Fraction(-3, 4), Fraction(1, 8)]]), output=[_rows([y])[0]])])
    _write("causal", encoder_counterexample(causal=True), ds)
    _write("causal", encoder_counterexample(causal=False), model_name="model-encoder.json")


#: a ptverify batch manifest over the examples (paths relative to its own folder)
MANIFEST = [
    {"id": "L1", "command": "check", "model": "../L1/model.json", "dataset": "../L1/dataset.json"},
    {"id": "E-witness", "command": "check", "model": "../E/model.json", "dataset": "../E/dataset-alpha2.json"},
    {"id": "planted", "command": "check", "model": "../planted/model.json", "dataset": "../planted/dataset.json",
     "tolerance": "1e-9"},
    {"id": "multilayer", "command": "check", "model": "../multilayer/model.json",
     "dataset": "../multilayer/dataset.json"},
    {"id": "built", "command": "prove-limitation", "d": 3, "seed": 4},
]


def build_batch() -> None:
    import json
    path = os.path.join(OUT, "batch")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "manifest.jsonl"), "w") as fh:
        fh.write("".join(json.dumps(job) + "\n" for job in MANIFEST))


def _rows(rows):
    import numpy as np
    return np.array(rows, dtype=object)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        OUT = os.path.abspath(sys.argv[1])
    build_single_layer()
    build_multilayer()
    build_batch()
