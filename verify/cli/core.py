"""Core commands: ``prove limitation`` and ``check``."""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional

import typer

from constructions.model import InputError

__all__ = ["register", "parse_positive_or", "parse_prompt_length", "parse_tolerance"]


def parse_positive_or(v: str, field: str, keyword: str):
    """A positive integer, or the keyword itself (``any``, ``auto``); else InputError(field)."""
    if v == keyword:
        return keyword
    try:
        if not (v.strip().isascii() and v.strip().isdigit()):     # int() also reads "1_0" and non-ASCII digits
            raise ValueError(v)
        k = int(v)
    except ValueError:
        raise InputError(field, f"a positive integer or '{keyword}'", repr(v)) from None
    if k < 1:
        raise InputError(field, f"a positive integer or '{keyword}'", repr(v))
    return k


def parse_prompt_length(v: str):
    from verify.cli.validate import MAX_PROMPT_LENGTH
    k = parse_positive_or(v, "--prompt-length", "any")
    if k != "any" and k > MAX_PROMPT_LENGTH:
        raise InputError("--prompt-length", f"a positive integer of at most 2**40 = {MAX_PROMPT_LENGTH}, or 'any'",
                         repr(v)[:40])
    return k


def parse_tolerance(v: str) -> Fraction:
    from verify.cli.validate import MAX_TOLERANCE, rational
    return rational(v, "--tolerance", Fraction(0), Fraction(MAX_TOLERANCE))


def _side(json_out: Optional[str]) -> Optional[str]:
    """Where side files go: the folder of the result file (content-addressed names)."""
    from verify.cli.output import STATE
    if not json_out or json_out == "-" or STATE.self_contained:
        return None
    return json_out[:-5] if json_out.endswith(".json") else json_out



def prove_limitation_cmd(
    d: int = typer.Option(3, "--d", help="token dimension"),
    heads: int = typer.Option(1, "--heads", help="number of attention heads"),
    head_size: Optional[int] = typer.Option(None, "--head-size", help="head size s (default d // heads)"),
    mlp_width: Optional[int] = typer.Option(None, "--mlp-width", help="MLP width r (default 2 d)"),
    seed: int = typer.Option(0, "--seed", help="seed of the random model and dataset"),
    margin: float = typer.Option(0.5, "--margin", help="half the separation of the two rays of L1"),
    kind: str = typer.Option("softmax", "--kind", help="softmax (hardmax layers only admit L3 certificates)"),
    timeout: float = typer.Option(120.0, "--timeout", help="time limit in seconds (then: timeout, naming the stage)"),
    json_out: Optional[str] = typer.Option(None, "--json", help="write the result file here ('-': standard output)"),
    artifacts: Optional[str] = typer.Option(None, "--artifacts", help="write every solver query as SMT-LIB2 here"),
    save_model: Optional[str] = typer.Option(None, "--save-model", help="also write the model (.json or .npz)"),
    save_dataset: Optional[str] = typer.Option(None, "--save-dataset", help="also write the dataset (.json)"),
    expect: Optional[str] = typer.Option(None, "--expect", help="exit 1 unless the status is this"),
):
    """Build a random single-layer model meeting the assumptions and the dataset of Theorem L1,
    and prove that no prompt of any length memorizes it (certificate re-verified exactly)."""
    from constructions.model import save_dataset as _sd, save_model as _sm
    from verify.cli import emit, fail_input
    from verify.provers.limitation import prove_limitation
    try:
        _check_build_options(d, heads, head_size, mlp_width, seed, margin, kind, expect)
        if save_model is not None and not save_model.endswith((".json", ".npz")):
            raise InputError("--save-model", "a file name ending in .json or .npz", repr(save_model))
        if save_dataset is not None and not save_dataset.endswith(".json"):
            raise InputError("--save-dataset", "a file name ending in .json", repr(save_dataset))
        res, model, ds = prove_limitation(d=d, heads=heads, head_size=head_size, mlp_width=mlp_width, seed=seed,
                                          kind=kind, margin=margin, artifacts=artifacts, timeout=timeout,
                                          side_files=_side(json_out))
    except InputError as exc:
        fail_input(exc)
    emit(res, json_out, expect, also=lambda: _save_inputs(model, ds, save_model, save_dataset, _sm, _sd))


def _check_build_options(d, heads, head_size, mlp_width, seed, margin, kind, expect) -> None:
    """``prove limitation``'s sizes and values, refused before anything is built (docs/formats.md, Limits)."""
    from verify.cli import validate as v
    v.int_range(d, "--d", 1, v.MAX_BUILD_D)
    v.int_range(heads, "--heads", 1, v.MAX_HEADS)
    if head_size is not None:
        v.int_range(head_size, "--head-size", 1, d, "at most d")
    if mlp_width is not None:
        v.int_range(mlp_width, "--mlp-width", 1, v.MAX_MLP_WIDTH)
    s = head_size if head_size is not None else max(1, d // heads)
    r = mlp_width if mlp_width is not None else 2 * d
    att, n = 4 * heads * s * d, 4 * heads * s * d + 2 * r * d + r + d
    if n > v.MAX_BUILD_PARAMETERS:
        raise InputError("--heads" if att > 2 * r * d else "--mlp-width",
                         "a model of at most 2**28 weights (4 h s d + 2 r d + r + d)",
                         f"{n} weights (d {d}, {heads} heads of size {s}, MLP width {r})")
    v.seed(seed)
    v.positive_float(margin, "--margin", v.MAX_MARGIN)
    if kind not in ("softmax", "hardmax"):
        raise InputError("--kind", "softmax or hardmax", repr(kind))
    v.expect(expect)


def _save_inputs(model, ds, save_model: Optional[str], save_dataset: Optional[str], sm, sd) -> None:
    from verify.cli.output import wrote
    if save_model:
        sm(model, save_model)
        wrote(save_model)
    if save_dataset:
        sd(ds, save_dataset)
        wrote(save_dataset)

def claims_cmd(markdown: bool = typer.Option(False, "--markdown", help="print the README's claims table (markdown)")):
    """List the registered claims: id, title, statement, expected verdict, command, proof and test."""
    from verify.claims import all_claims
    claims = all_claims()
    if markdown:
        print("| claim | what is checked | verdict | command | proof |")
        print("|---|---|---|---|---|")
        for c in claims:
            print(f"| {c.id} | {c.title} | {c.expected.value} | `{c.command}` | {c.proof} |")
        return
    for n, c in enumerate(claims):
        if n:
            print()
        print(f"{c.id}: {c.title}")
        for label, value in (("statement", c.statement), ("expected", c.expected.value), ("command", c.command),
                             ("proof", c.proof), ("test", c.test)):
            print(f"  {label + ':':<11}{value or '-'}")


def check_cmd(
    model: str = typer.Option(..., "--model", help="ptverify-model/1 file (.json or .npz)"),
    dataset: str = typer.Option(..., "--dataset", help="ptverify-dataset/1 file (.json)"),
    prompt_length: str = typer.Option("any", "--prompt-length", help="K (a positive integer) or 'any'"),
    tolerance: str = typer.Option("0", "--tolerance", help="max-norm error allowed (default 0: exact)"),
    timeout: float = typer.Option(60.0, "--timeout", help="time limit in seconds (then: timeout, naming the stage)"),
    prompt_norm: Optional[str] = typer.Option(None, "--prompt-norm",
                                              help="bound R on prompt token 2-norms: multi-layer textbook models (Theorem M, "
                                                   "condition 2) and single real layers (proofs/reach.md)"),
    json_out: Optional[str] = typer.Option(None, "--json", help="write the result file here ('-': standard output)"),
    artifacts: Optional[str] = typer.Option(None, "--artifacts", help="write every solver query as SMT-LIB2 here"),
    witness_out: Optional[str] = typer.Option(None, "--witness-out",
                                              help="if memorized: write the memorizing prompt here (ptverify-witness/1)"),
    expect: Optional[str] = typer.Option(None, "--expect", help="exit 1 unless the status is this"),
):
    """Decide whether some prompt memorizes a dataset under a model (files in the documented
    formats): proved (certificate), memorized (replayed witness) or unknown.  Single-layer
    models use relaxation R, Proposition E and Theorem L3; multi-layer models Theorem M; a real
    layer with targets at the attention block the real-layer pair theorem."""
    from constructions.model import load_dataset, load_model
    from verify.cli import emit, fail_input
    from verify.cli.output import check_expect
    from verify.provers.limitation import check_memorization
    check_expect(expect)
    try:
        pl, tol, pn = parse_prompt_length(prompt_length), parse_tolerance(tolerance), _prompt_norm(prompt_norm)
        if not (math.isfinite(timeout) and timeout > 0):
            raise InputError("--timeout", "a finite number of seconds > 0", str(timeout))
        m = load_model(model)
        ds = load_dataset(dataset, d=m.d)
        if len(m.layers) > 1 and m.is_plain and ds.at == "output":
            from verify.provers.multilayer import check_multilayer
            res = check_multilayer(m, ds, prompt_length=pl, tolerance=tol, timeout=timeout, prompt_norm=pn,
                                   claim="check")
        else:
            if pn is not None and len(m.layers) > 1:
                raise InputError("--prompt-norm", "no value for a multi-layer real (ptverify-model/2) model or "
                                 "targets at the attention block (Theorem M covers plain layers only)", repr(prompt_norm))
            if pn is not None and m.is_plain and ds.at == "output":
                raise InputError("--prompt-norm", "no value for a textbook single-layer model (its limitations hold "
                                 "for prompts of every norm)", repr(prompt_norm))
            res = check_memorization(m, ds, prompt_length=pl, tolerance=tol, timeout=timeout, artifacts=artifacts,
                                     claim="check", side_files=_side(json_out), prompt_norm=pn)
    except InputError as exc:
        fail_input(exc)
    also = (lambda: _witness_out(res, witness_out, model, dataset)) if witness_out else None
    emit(res, json_out, expect, also=also)


def _witness_out(res, path: str, model: str, dataset: str) -> None:
    """``--witness-out``: the memorizing prompt as its own file, or a line saying why there is none."""
    from verify.cli.output import say, write_witness, wrote
    if write_witness(res, path, model, dataset):
        wrote(path)
    else:
        say(f"no witness written to {path}: the verdict is {res.status.value if hasattr(res.status, 'value') else res.status}"
            " (only a 'memorized' verdict has a memorizing prompt)")


def _prompt_norm(v: Optional[str]) -> Optional[Fraction]:
    if v is None:
        return None
    from verify.cli.validate import MAX_PROMPT_NORM, rational
    return rational(v, "--prompt-norm", Fraction(0), Fraction(MAX_PROMPT_NORM), lo_open=True)


def register(apps) -> None:
    """Add ``prove limitation``, ``claims`` and ``check`` to the CLI."""
    apps['prove'].command('limitation')(prove_limitation_cmd)
    apps['root'].command('claims')(claims_cmd)
    apps['root'].command('check')(check_cmd)
