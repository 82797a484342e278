"""Core commands: prove limitation, check, bench limitation."""


def register(apps) -> None:
    """Add the core commands to the CLI."""
