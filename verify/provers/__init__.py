"""Producers of results and certificates: provers, bounds, the loss bound (untrusted)."""
