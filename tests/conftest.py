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
import shutil
import subprocess
import sys
import textwrap

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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKER = os.path.join(ROOT, "verify", "checker")

BOOT = textwrap.dedent("""
    import sys
    ALLOWED = set(sys.stdlib_module_names) | {"numpy", "verify"}
    class Block:
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top not in ALLOWED:
                raise ImportError(f"blocked import of {name!r}")
            return None
    sys.meta_path.insert(0, Block())
    sys.path.insert(0, sys.argv[1])
    sys.argv = ["verify.checker"] + sys.argv[2:]
    import runpy
    runpy.run_module("verify.checker", run_name="__main__", alter_sys=True)
""")


@pytest.fixture(scope="session")
def isolated_checker(tmp_path_factory):
    """A copy of verify/__init__.py and verify/checker/ alone, and a launcher that blocks
    every import but the standard library and numpy."""
    base = tmp_path_factory.mktemp("trusted")
    pkg = base / "verify"
    pkg.mkdir()
    shutil.copy(os.path.join(ROOT, "verify", "__init__.py"), pkg / "__init__.py")
    shutil.copytree(CHECKER, pkg / "checker", ignore=shutil.ignore_patterns("__pycache__"))
    boot = base / "boot.py"
    boot.write_text(BOOT)

    def run(*files):
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"}
        return subprocess.run([sys.executable, "-I", str(boot), str(base), *map(str, files)],
                              capture_output=True, text=True, env=env, timeout=600, cwd=str(base))
    return run



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
