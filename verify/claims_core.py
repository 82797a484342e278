"""Core claims (L1, L2, L3, E)."""
CLAIMS: list = []
