"""The objects ptverify reasons about: models, their encodings, datasets, LoRA updates and the
universality network.  This package never imports :mod:`verify`.

Modules
-------
``arrays``        numbers and arrays of the file formats, exact views (:class:`InputError`)
``model``         model and dataset types; the one reader/validator of their files and dicts
``intervals``     rigorous rational intervals and ``exp`` enclosures
``algebras``      the scalar algebras of the generic forward pass (rational, interval, sympy, Z3)
``forward``       the one generic forward pass over algebras, and the one torch forward
``realforward``   rigorous forward passes of real layers (exact rationals or Arb balls), witness replay
``datasets``      builders of random models and of the datasets of Theorems L1, L3, E
``lora``          LoRA updates, exact linear algebra and the construction of Theorem L5
``multilayer``    builders for Theorem M (conditions 1 and 2, collisions, counterexamples)
``universality``  the network, prompts and targets of Theorem U
"""
from .algebras import NotExact, Z3Algebra
from .datasets import l1_dataset, l3_dataset, planted_dataset, random_model
from .forward import (forward_exact, forward_rational, forward_sympy, forward_torch, forward_z3,
                      generic_forward, mlp_exact)
from .intervals import Iv, exp_enclosure
from .lora import LoRAUpdate, apply_lora, lora_w2_exact
from .model import (Dataset, Example, Head, InputError, Layer, Model, dataset_from_json, load_dataset,
                    load_model, model_from_json, save_dataset, save_model)
from .universality import build_network

__all__ = [
    "Dataset", "Example", "Head", "InputError", "Layer", "Model",
    "model_from_json", "dataset_from_json", "load_model", "load_dataset", "save_model", "save_dataset",
    "generic_forward", "forward_rational", "forward_exact", "forward_sympy", "forward_z3", "forward_torch",
    "mlp_exact", "Iv", "exp_enclosure", "NotExact", "Z3Algebra",
    "random_model", "l1_dataset", "l3_dataset", "planted_dataset",
    "LoRAUpdate", "apply_lora", "lora_w2_exact", "build_network",
]
