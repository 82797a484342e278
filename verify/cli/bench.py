"""``ptverify bench limitation``: argument parsing and printing for the benchmark."""
from __future__ import annotations

from typing import Optional

from constructions.model import InputError
from verify.experiments.bench import DEFAULT_DIMS, LARGE_DIMS, NAIVE_FORMS, bench_limitation, print_table

__all__ = ["register"]


def _parse_dims(v: str) -> list[int]:
    items = [x.strip() for x in v.split(",")]
    if not all(x.isascii() and x.isdigit() for x in items):      # no empty item, no 1_0, no non-ASCII digit
        raise InputError("--dims", "comma-separated positive integers such as 1,2,3,8", repr(v)[:60])
    dims = [int(x) for x in items]
    from verify.cli.validate import MAX_BUILD_D
    if not dims or any(x < 1 or x > MAX_BUILD_D for x in dims):
        raise InputError("--dims", f"comma-separated positive integers of at most {MAX_BUILD_D} such as 1,2,3,8",
                         repr(v)[:60])
    return dims


def _parse_heads(v: str):
    from verify.cli.core import parse_positive_or
    from verify.cli.validate import MAX_HEADS
    h = parse_positive_or(v, "--heads", "auto")
    if h != "auto" and h > MAX_HEADS:
        raise InputError("--heads", f"a positive integer of at most {MAX_HEADS} or 'auto'", repr(v)[:40])
    return h


def register(apps) -> None:
    """Add ``ptverify bench limitation`` to the CLI."""
    import typer

    @apps["bench"].command("limitation")
    def bench_limitation_cmd(
        dims: str = typer.Option(",".join(map(str, DEFAULT_DIMS)), "--dims", help="comma-separated token dimensions d"),
        heads: str = typer.Option("auto", "--heads", help="heads per layer, or 'auto' (d // 64, at least 1)"),
        naive_timeout: float = typer.Option(60.0, "--naive-timeout", help="Z3 time limit per naive instance, seconds "
                                            "(e.g. 600 with --naive-max-d 3 measures the ratio at d = 2 and 3)"),
        naive_max_d: Optional[int] = typer.Option(None, "--naive-max-d", help="run the naive encoding only up to this d"),
        naive_form: str = typer.Option("api", "--naive-form", help="how the naive query reaches Z3: 'api' (as built) or "
                                       "'smtlib' (printed as SMT-LIB2 and read back; the same formula, other times)"),
        large: bool = typer.Option(False, "--large", help="add the BERT-large (d 1024, 16 heads) and GPT-2-XL "
                                   "(d 1600, 25 heads) rows (minutes)"),
        prompt_length: int = typer.Option(1, "--prompt-length", help="prompt length K of the naive encoding"),
        mlp_ratio: int = typer.Option(4, "--mlp-ratio", help="MLP width r = ratio * d"),
        seed: int = typer.Option(0, "--seed", help="seed of the random models and datasets"),
        json_out: Optional[str] = typer.Option(None, "--json", help="write the table as JSON here"),
        artifacts: Optional[str] = typer.Option(None, "--artifacts", help="write each naive query as SMT-LIB2 here"),
    ):
        """Time the structured prover against a naive Z3 encoding (ReLU as If terms, products of
        unknowns, no structure) on the same L1 instances for growing d; print the table.

        Per row: the prove command's wall time, peak memory and stage times, the trusted checker's
        time on its result, and growth exponents fitted on d >= 64.  Once the naive encoding times
        out it is skipped on larger d. Timings are measurements, not verdicts."""
        from verify.cli.output import console, fail_input, is_tty
        try:
            dl = _parse_dims(dims)
            if large:
                dl += [x for x in LARGE_DIMS if x not in dl]
            if naive_max_d is not None and naive_max_d < 1:
                raise InputError("--naive-max-d", "a positive integer", str(naive_max_d))
            hv = _parse_heads(heads)
            from verify.cli import validate
            validate.seconds(naive_timeout, "--naive-timeout")
            if naive_form not in NAIVE_FORMS:
                raise InputError("--naive-form", " or ".join(repr(f) for f in NAIVE_FORMS), repr(naive_form)[:80])
            validate.int_range(prompt_length, "--prompt-length", 1, 64)
            validate.int_range(mlp_ratio, "--mlp-ratio", 1, validate.MAX_MLP_WIDTH // max(dl))
            validate.seed(seed)
        except InputError as exc:
            fail_input(exc)
        con = console()
        report = bench_limitation(dl, heads=hv, naive_timeout=naive_timeout, prompt_length=prompt_length, seed=seed,
                                  mlp_ratio=mlp_ratio, artifacts=artifacts, naive_max_d=naive_max_d, naive_form=naive_form,
                                  progress=(lambda msg: con.print(msg)) if is_tty() else None)
        print_table(report, con)
        if json_out:
            from verify.cli.output import write_json_out, wrote
            write_json_out(json_out, report)
            wrote(json_out)
