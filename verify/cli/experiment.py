"""``ptverify experiment prompt-vs-lora``: the experiment, its table and plot, and its result file."""
from __future__ import annotations

import os
from typing import Optional

__all__ = ["register"]


def register(apps) -> None:
    """Add ``ptverify experiment prompt-vs-lora``."""
    import typer

    @apps["experiment"].command("prompt-vs-lora")
    def prompt_vs_lora(out: str = typer.Option(..., "--out", help="output folder for the plot, JSON, table and result.json"),
                       quick: bool = typer.Option(False, "--quick", help="small version (well under a minute)"),
                       seed: int = typer.Option(0, "--seed", help="seed"),
                       json_out: Optional[str] = typer.Option(None, "--json", help="also write the ptverify-result/2 file here"),
                       expect: Optional[str] = typer.Option(None, "--expect", help="exit 1 unless this status is reached")):
        """Gradient prompt tuning (lengths 1..32) vs LoRA (ranks 1, 2, 4 on W_2, W_v, W_q), float64.

        OUT/result.json is the EXP result: every prompt run on the L1 dataset against the certified
        loss bound; `ptverify replay OUT/result.json` re-checks it."""
        from constructions.model import InputError
        from verify.claims.experiment import run_experiment_result
        from verify.cli import emit, fail_input
        from verify.cli.output import say, stop_progress, write_result
        from verify.progress import current
        try:
            from verify.cli import validate
            validate.seed(seed)
            validate.expect(expect)
        except InputError as exc:
            fail_input(exc)
        obj, res = run_experiment_result(out, quick, seed, progress=current().stage)
        files = write_result(res, os.path.join(out, "result.json"))
        stop_progress()
        with open(os.path.join(out, "prompt_vs_lora.md"), encoding="utf-8") as fh:
            say(fh.read())
        for path in [obj["plot"], os.path.join(out, "prompt_vs_lora.json"), os.path.join(out, "prompt_vs_lora.md")] + files:
            say(f"wrote {path}")
        emit(res, json_out, expect)
