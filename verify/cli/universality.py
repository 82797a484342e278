"""``ptverify universality``: build Theorem U's network and prompt and bound d_p rigorously."""
from __future__ import annotations

import os
from typing import Optional

import typer

from constructions.model import InputError
from verify.provers.universality import TARGETS, parse_number, run_universality, sweep

__all__ = ["register"]


def _print_report(rep: dict) -> None:
    from verify.cli.output import stop_progress
    stop_progress()
    print(f"delta = {rep['delta']} (formula K >= {rep['K_formula']}), C = {rep['C']} quantized functions, "
          f"m_p = {rep['m_p']} (m_p >= n (1/delta)^(dn) = {rep['m_p_formula']})")
    print(f"depth {rep['depth']}, heads {rep['heads_per_layer']}, MLP widths {rep['mlp_widths']}, "
          f"{rep['parameters']} parameters ({rep['nonzero_parameters']} nonzero) + "
          f"{rep['positional_encoding_entries']} positional-encoding entries")
    sp, mc = rep["split"], rep["measured"]
    print(f"error budget: quantization {sp['quantization']:.4g} + ramps {sp['ramps']:.4g} + softmax "
          f"{sp['softmax']:.3g}; rigorous bound {rep['bound']:.5g}, lower bound {rep['lower_bound']:.4g}, "
          f"eps {rep['eps']:.4g}; measured {mc.get('estimate', float('nan')):.4g} "
          f"(95% <= {mc.get('upper_95', float('nan')):.4g}, {mc.get('samples', 0)} samples, "
          f"{mc.get('forward_torch_samples', 0)} through {mc.get('float_pass', 'forward_torch')}, which differs from the "
          f"certified box values by <= {mc.get('float_crosscheck_max_diff', 0.0):.2g})")


def _print_sweep(data: dict, out: str) -> None:
    from verify.cli.output import stop_progress
    stop_progress()
    for r in data["rows"]:
        print(f"eps {r['eps']:<8.4g} {r['status']:<9} bound {r['bound']:.4g}  measured "
              f"{r['measured']:.4g}  m_p {r['m_p']}  ({r['seconds']:.1f} s)")
    print(f"wrote {os.path.join(out, 'universality_sweep.png')} and {os.path.join(out, 'universality_sweep.json')}")


def _grid(delta: Optional[str]) -> Optional[int]:
    if delta is None:
        return None
    q = parse_number(delta, "--delta")
    if q.numerator != 1 or q.denominator < 2:
        raise InputError("--delta", "1/K with an integer K >= 2", delta)
    return q.denominator


def _check_options(d: int, samples: int, seed: int, expect: Optional[str]) -> None:
    from verify.cli import validate as v
    v.int_range(d, "--d", 1, v.MAX_UNIV_D, "the grid has K**(d n) <= 65536 cells")
    v.int_range(samples, "--samples", 0, v.MAX_SAMPLES)
    v.seed(seed)
    v.expect(expect)


def _check_numbers(lipschitz: str, p: str, eps: str, temperature: Optional[str], delta: Optional[str],
                   do_sweep: bool) -> None:
    """The numbers given as text, before any exact arithmetic on them: at most 200 characters,
    decimal exponents of at most 400, and a grid K >= 2 (L + 1) / eps of at most MAX_CELLS cells."""
    from fractions import Fraction

    from verify.cli import validate as v
    from verify.provers.universality import MAX_CELLS
    big = Fraction(10 ** 6)
    L = v.rational(lipschitz, "--lipschitz", Fraction(0), big, lo_open=True)
    v.rational(p, "--p", Fraction(1), Fraction(64), what="a number p with 1 <= p <= 64, such as 2 or 3/2")
    e = Fraction(1) if do_sweep else v.rational(eps, "--eps", Fraction(0), big, lo_open=True)
    if temperature is not None:
        v.rational(temperature, "--softmax-temperature", Fraction(0), big, lo_open=True)
    if delta is not None:
        v.rational(delta, "--delta", Fraction(0), Fraction(1, 2), lo_open=True, what="1/K with an integer K >= 2, such as 1/4")
    if 2 * (L + 1) / e > MAX_CELLS:
        flag = "--lipschitz" if do_sweep else "--eps"
        raise InputError(flag, f"a size with at most {MAX_CELLS} grid cells K^(dn), where K >= 2 (L + 1) / eps",
                         f"K >= {float(2 * (L + 1) / e):.3g}", "Use a larger --eps or a smaller --lipschitz.")


def register(apps) -> None:
    """Add ``ptverify universality``."""

    @apps["root"].command("universality")
    def universality_cmd(
            d: int = typer.Option(1, "--d", help="token size d"),
            n: int = typer.Option(2, "--n", help="number of input tokens n (1 or 2; any n >= 3 with d = 1)"),
            lipschitz: str = typer.Option("1", "--lipschitz", help="Lipschitz constant L of the class F_L"),
            p: str = typer.Option("2", "--p", help="the p of d_p (a rational >= 1)"),
            eps: str = typer.Option("0.25", "--eps", help="target accuracy epsilon"),
            target: str = typer.Option("token-mix", "--target", help=f"target function: {', '.join(sorted(TARGETS))}"),
            softmax_temperature: Optional[str] = typer.Option(
                None, "--softmax-temperature",
                help="use the standard softmax version with scores divided by T (e.g. 1/64); default: hardmax"),
            delta: Optional[str] = typer.Option(None, "--delta", help="override delta = 1/K (e.g. 1/4)"),
            samples: int = typer.Option(4096, "--samples", help="Monte Carlo samples for the measured error"),
            seed: int = typer.Option(0, "--seed", help="seed (the relu-net target, Monte Carlo)"),
            json_out: Optional[str] = typer.Option(None, "--json", help="write the ptverify-result/2 file here"),
            expect: Optional[str] = typer.Option(None, "--expect", help="exit 1 unless the status is this"),
            do_sweep: bool = typer.Option(False, "--sweep", help="plot error and m_p against epsilon (PNG + JSON)"),
            out: str = typer.Option("ptverify-out", "--out", help="output folder for --sweep"),
    ):
        """Build the frozen network g of Theorem U and the prompt P_f of a target f, and bound
        d_p(g([P_f, .]), f) rigorously (verified only when the bound is <= eps)."""
        from verify.cli import emit, fail_input
        try:
            _check_options(d, samples, seed, expect)
            _check_numbers(lipschitz, p, eps, softmax_temperature, delta, do_sweep)
            if do_sweep and (json_out is not None or expect is not None):
                flag = "--json" if json_out is not None else "--expect"
                raise InputError(flag, "no --json or --expect with --sweep (a sweep has no single verdict; "
                                 "it writes OUT/universality_sweep.json)", repr(json_out if json_out is not None
                                                                                else expect))
            if do_sweep:
                _print_sweep(sweep(out, d, n, lipschitz, p, target, seed=seed, temperature=softmax_temperature,
                                   samples=samples), out)
                return
            res = run_universality(d, n, lipschitz, p, eps, target, seed, softmax_temperature, _grid(delta), samples)
        except InputError as exc:
            fail_input(exc)
        if res.extra.get("report"):
            _print_report(res.extra["report"])
        emit(res, json_out, expect)
