"""The independent certificate checker (exact arithmetic only)."""
REPLAYERS: dict = {}
