"""``ptverify prove multilayer``: Theorem M on a built causal model (verify/provers/multilayer.py)."""
from __future__ import annotations

from typing import Optional

import typer

from constructions.model import InputError

__all__ = ["register"]


def register(apps) -> None:
    """Add ``ptverify prove multilayer``."""

    @apps["prove"].command("multilayer")
    def prove_multilayer_cmd(
            layers: int = typer.Option(4, "--layers", help="number of layers L"),
            d: int = typer.Option(16, "--d", help="token size d"),
            heads: int = typer.Option(2, "--heads", help="heads per layer"),
            condition: int = typer.Option(1, "--condition", help="1: query-independent scores (any prompt); "
                                          "2: bounded prompts with a Lipschitz bound < 1"),
            prompt_norm: Optional[str] = typer.Option(None, "--prompt-norm", help="condition 2: bound R on every "
                                                      "prompt token's 2-norm (default 1)"),
            seed: int = typer.Option(0, "--seed", help="random seed"),
            json_out: Optional[str] = typer.Option(None, "--json", help="write the result file here"),
            expect: Optional[str] = typer.Option(None, "--expect", help="exit 1 unless the verdict is this")):
        """Theorem M: build a random causal L-layer model meeting the condition and a dataset
        {(x, y), (x', y)}, certify the condition exactly and prove no prompt memorizes it."""
        from verify.cli import emit, fail_input
        from verify.provers.multilayer import prove_multilayer
        try:
            from verify.cli import validate
            validate.seed(seed)
            validate.expect(expect)
            if prompt_norm is not None:
                from fractions import Fraction
                validate.rational(prompt_norm, "--prompt-norm", Fraction(0), Fraction(validate.MAX_PROMPT_NORM),
                                  lo_open=True)
            res = prove_multilayer(layers, d, heads, condition, prompt_norm, seed)
        except InputError as exc:
            fail_input(exc)
        emit(res, json_out, expect)
