"""Shared test configuration: hypothesis profiles and fixtures.

Profiles
--------
``ci``
    Derandomized, no deadline, 25 examples per property; what ``.ci/run`` selects with
    ``pytest --hypothesis-profile=ci``.
``dev``
    No deadline, 20 examples; the default for a plain ``pytest``.

A profile named in the ``HYPOTHESIS_PROFILE`` environment variable, or with pytest's
``--hypothesis-profile`` option, takes precedence over ``dev``.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=20)
# pytest's hypothesis plugin loads a profile given with --hypothesis-profile after this file is
# imported, so loading a default here does not override the command line.
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def tmp_out(tmp_path):
    """An empty output folder (as a ``str``) for result files, SMT-LIB and plots."""
    out = tmp_path / "out"
    out.mkdir()
    return str(out)


def pytest_terminal_summary(terminalreporter):
    """Print the mutation counts per certificate kind (tests/mutations.py)."""
    try:
        from mutations import COUNTS
    except ImportError:  # pragma: no cover
        return
    if COUNTS:
        terminalreporter.write_line("mutations rejected per certificate kind:")
        for kind, (tried, rejected) in sorted(COUNTS.items()):
            terminalreporter.write_line(f"  {kind}: {rejected} of {tried}")
