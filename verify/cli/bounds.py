"""``ptverify bounds``: the prompt-vs-LoRA parameter table (verify/provers/bounds.py)."""
from __future__ import annotations

from typing import Optional

import typer

from constructions.model import InputError

__all__ = ["register"]


def _sizes_from_model(path: str) -> dict:
    """d, h, s, r of a single-layer model file (the --verify instances are seeded models of those sizes)."""
    from constructions.model import load_model
    mdl = load_model(path)
    if len(mdl.layers) != 1:
        raise InputError("--model", "a single-layer model", f"{len(mdl.layers)} layers")
    lay = mdl.layers[0]
    sizes = {hh.W_q.shape[0] for hh in lay.heads}
    if len(sizes) != 1:
        raise InputError("--model", "heads of one size", f"sizes {sorted(sizes)}")
    return {"path": path, "d": mdl.d, "heads": len(lay.heads), "head_size": sizes.pop(), "mlp_width": lay.W_1.shape[0]}


def _check_sizes(d, m, n, heads, head_size, mlp_width, verify: bool, seed: int, expect) -> None:
    """Sizes up to 2**20 for the table; --verify builds instances, so d <= 256, h <= 64, r <= 4096 and
    m N <= 4096 there (docs/formats.md, Limits)."""
    from verify.cli import validate as v
    big = v.MAX_BOUNDS_SIZE
    lims = {"--d": (d, v.MAX_BOUNDS_VERIFY_D), "--m": (m, big), "--examples": (n, big), "--heads": (heads, 64),
            "--head-size": (head_size, v.MAX_BOUNDS_VERIFY_D), "--mlp-width": (mlp_width, 4096)}
    for flag, (val, hi_verify) in lims.items():
        v.int_range(val, flag, 1, hi_verify if verify else big, "with --verify" if verify else "")
    if verify and m * n > 4096:
        raise InputError("--examples", "m N <= 4096 with --verify", f"m N = {m * n}")
    v.seed(seed)
    v.expect(expect)


def _print_table(tab: dict) -> None:
    from rich.table import Table

    from verify.cli import console
    t = Table(title=f"prompt vs LoRA parameters (d={tab['d']}, m={tab['m']}, N={tab['N']}, h={tab['heads']}, "
                    f"s={tab['head_size']}, r={tab['mlp_width']})")
    for col in ("row", "dataset", "prompt", "LoRA"):
        t.add_column(col)
    for row in tab["rows"]:
        t.add_row(row["row"], row["dataset"], row["prompt"]["text"] if row["prompt"] else "-",
                  row["lora"]["text"] if row["lora"] else "-")
    console().print(t)


def register(apps) -> None:
    """Add ``ptverify bounds``."""

    @apps["root"].command("bounds")
    def bounds_cmd(ctx: typer.Context,
                   d: int = typer.Option(8, "--d", help="token dimension d"),
                   m: int = typer.Option(2, "--m", help="tokens per example m"),
                   examples: int = typer.Option(4, "--examples", help="number of examples N"),
                   heads: int = typer.Option(2, "--heads", help="attention heads h"),
                   head_size: int = typer.Option(2, "--head-size", help="head size s"),
                   mlp_width: int = typer.Option(16, "--mlp-width", help="MLP width r"),
                   model: Optional[str] = typer.Option(
                       None, "--model", help="take d, h, s, r from a single-layer model file (the --verify "
                                             "instances are seeded models of those sizes)"),
                   verify: bool = typer.Option(False, "--verify", help="check every row on seeded random instances"),
                   seed: int = typer.Option(0, "--seed", help="seed of the instances"),
                   timeout: float = typer.Option(30.0, "--timeout", help="seconds per core-prover call"),
                   json_out: Optional[str] = typer.Option(None, "--json", help="write the result file here"),
                   expect: Optional[str] = typer.Option(None, "--expect", help="exit 1 unless this status is reached")):
        """Parameter table: prompt tokens needed (L4) vs LoRA rank sufficient (L5), L1/L3 rows, crossover."""
        from verify.cli import emit, fail_input
        from verify.provers.bounds import run_bounds
        try:
            sizes = {"d": "--d", "heads": "--heads", "head_size": "--head-size", "mlp_width": "--mlp-width"}
            given = [flag for name, flag in sizes.items()
                     if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"]
            if model is not None and given:       # the model's sizes would silently replace them
                raise InputError(given[0], "no size option with --model (the model gives d, h, s and r)",
                                 f"{given[0]} and --model")
            info = _sizes_from_model(model) if model is not None else None
            if info:
                d, heads, head_size, mlp_width = info["d"], info["heads"], info["head_size"], info["mlp_width"]
            _check_sizes(d, m, examples, heads, head_size, mlp_width, verify, seed, expect)
            res = run_bounds(d, m, examples, heads, head_size, mlp_width, seed=seed, verify=verify,
                             timeout=timeout, model_info=info)
        except InputError as exc:
            fail_input(exc)
        _print_table(res.extra["table"])
        emit(res, json_out, expect)
