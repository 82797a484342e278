"""Placeholder: filled in by its issue."""
CLAIMS: list = []
REPLAYERS: dict = {}


def register(apps) -> None:
    """Add this module's commands to the CLI."""
