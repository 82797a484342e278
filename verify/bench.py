"""Benchmarks (placeholder)."""


def register(apps) -> None:
    """Add the bench commands to the CLI."""
