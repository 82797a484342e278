"""``ptverify reach``: certified ranges of the attention-block coordinates over every admissible
prompt, next to a witness search's reach (verify/provers/reach.py, proofs/reach.md)."""
from __future__ import annotations

from typing import Optional

from constructions.model import InputError

__all__ = ["register"]

#: most witness-search steps accepted
MAX_WITNESS_STEPS = 10 ** 6
#: most prompt rows the witness search optimizes
MAX_WITNESS_ROWS = 64


def register(apps) -> None:
    """Add ``ptverify reach``."""
    import typer

    @apps["root"].command("reach")
    def reach_cmd(
            model: str = typer.Option(..., "--model", help="a single-layer ptverify-model/2 file (.json or .npz)"),
            dataset: str = typer.Option(..., "--dataset", help="a ptverify-dataset/1 file with targets at the "
                                        "attention block (\"at\": \"attention\")"),
            prompt_norm: Optional[str] = typer.Option(None, "--prompt-norm", metavar="R",
                                                      help="admissible prompt rows have 2-norm at most R (default: "
                                                      "any rows)"),
            witness_steps: int = typer.Option(300, "--witness-steps", metavar="N",
                                              help="steps of the witness search per constrained output (0: none)"),
            witness_rows: int = typer.Option(1, "--witness-rows", metavar="M",
                                             help="prompt rows the witness search optimizes"),
            seed: int = typer.Option(0, "--seed", help="seed of the witness search's random starts"),
            json_out: Optional[str] = typer.Option(None, "--json", help="write the result file here "
                                                   "('-': standard output)"),
            expect: Optional[str] = typer.Option(None, "--expect", help="exit 1 unless the status is this")):
        """Certified range of every coordinate of the attention block's pre-norm sum (and, with
        a post-LayerNorm, of LN1 of it) over every prompt of any length whose rows are admissible, per
        constrained output of the dataset; an outer bound (heads decoupled), re-derived by the
        trusted checker (verified).  A float witness search over one or a few prompt rows
        measures how much of each range a prompt actually reaches (not certified).  Prints one
        summary row per constrained output."""
        from fractions import Fraction

        from constructions.model import load_dataset, load_model
        from verify.cli import emit, fail_input
        from verify.cli.output import check_expect, say
        from verify.cli.validate import MAX_PROMPT_NORM, int_range, rational
        from verify.cli.validate import seed as check_seed
        from verify.provers.reach import format_table, run_reach, unsupported_reason
        check_expect(expect)
        try:
            pn = None if prompt_norm is None else rational(prompt_norm, "--prompt-norm", Fraction(0),
                                                           Fraction(MAX_PROMPT_NORM), lo_open=True)
            int_range(witness_steps, "--witness-steps", 0, MAX_WITNESS_STEPS)
            int_range(witness_rows, "--witness-rows", 1, MAX_WITNESS_ROWS)
            check_seed(seed)
            m = load_model(model)
            ds = load_dataset(dataset, d=m.d)
            bad = unsupported_reason(m, ds)
            if bad is not None:
                raise InputError(*bad)
            res = run_reach(m, ds, prompt_norm=pn, witness_steps=witness_steps, witness_rows=witness_rows,
                            seed=seed)
        except InputError as exc:
            fail_input(exc)
        emit(res, json_out, expect, also=lambda: say(format_table(res.to_json())))
