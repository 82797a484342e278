"""The exact check scripts that accompany proofs/*.md exit 0 and report no failure.

Each script asserts its own statements (exact rationals, rigorous enclosures or sympy) and exits
non-zero on the first inconsistency; proofs/lemma_d_sympy.py is run by tests/test_encodings.py.
"""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = ["l1_rays_check.py", "prop_e_checks.py", "universality_equivariance.py",
           "l4_hardmax_jump.py"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_proof_script_passes(name):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(ROOT / "proofs" / name)], capture_output=True, text=True,
                          timeout=300, cwd=str(ROOT), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAILED" not in proc.stdout and "0 failure(s)" in proc.stdout
