"""``ptverify audit MODEL``: certified per-layer quantities and theorem hypotheses
(verify/provers/audit.py, proofs/audit.md)."""
from __future__ import annotations

from typing import Optional

from constructions.model import InputError

__all__ = ["register"]


def register(apps) -> None:
    """Add ``ptverify audit``."""
    import typer

    @apps["root"].command("audit")
    def audit_cmd(
            model: str = typer.Argument(..., metavar="MODEL", help="a ptverify-model file (.json or .npz)"),
            layers: Optional[str] = typer.Option(None, "--layers", help="the layers to audit: all (default), I, "
                                                 "I:J (half-open) or a comma list such as 0,2:4"),
            checker_only: bool = typer.Option(False, "--checker-only", help="only the trusted checker's own norm "
                                              "bounds (no exact Gram test; looser, and no python-flint needed)"),
            json_out: Optional[str] = typer.Option(None, "--json", help="write the audit (ptverify-audit/1) here")):
        """Audit a model: per layer, certified upper bounds on ||W_1||_2, ||W_2||_2, the MLP
        branch's and block's Lipschitz constants (activation slope, LayerNorm worst case),
        ||W_o^j W_v^j||_2 per head and for the whole layer, the rank of the stacked W_o and the
        overlaps of head output spaces, LayerNorm gamma entries that are zero; then which theorem's
        hypotheses hold on the layer (L1, L2, L3, Proposition E, Theorem M, the real-layer pair
        theorem) or by how much they fail.  Prints a table; no verdict is produced."""
        from constructions.model import load_model
        from verify.cli import fail_input
        from verify.cli.output import say, write_json_out, wrote
        from verify.provers.audit import audit_model, format_table, parse_layers
        try:
            m = load_model(model, "MODEL")
            idx = parse_layers(layers, len(m.layers))
        except InputError as exc:
            fail_input(exc)
        report = audit_model(m, idx, tight=not checker_only)
        report["model"] = model
        if json_out:
            write_json_out(json_out, report)
        say(format_table(report))
        say(f"{len(idx)} layer(s) audited in {report['seconds']:.1f} s")
        if json_out and json_out != "-":
            wrote(json_out)
