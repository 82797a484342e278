"""The objects ptverify reasons about: models, their encodings, datasets, LoRA updates and the
universality network.  This package never imports :mod:`verify`."""
from .model import (Dataset, Example, Head, InputError, Layer, Model, load_dataset, load_model,
                    save_dataset, save_model)

__all__ = ["Dataset", "Example", "Head", "InputError", "Layer", "Model", "load_dataset",
           "load_model", "save_dataset", "save_model"]
