"""The claim registry is the single source for reproduce, the README table and the tests."""
from __future__ import annotations

import os
import re

from verify.claims import all_claims
from verify.result import Status

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_table_lists_every_claim():
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert "ptverify reproduce" in readme and "pytest" in readme
    for c in all_claims():
        assert re.search(rf"^\| {re.escape(c.id)} \|", readme, re.M), f"claim {c.id} missing from README"


def test_every_claim_names_an_existing_proof_and_test():
    for c in all_claims():
        assert isinstance(c.expected, Status)
        for proof in c.proof.split(","):
            assert os.path.exists(os.path.join(ROOT, proof.strip())), f"{c.id}: {proof} missing"
        test_file = c.test.split("::")[0]
        assert os.path.exists(os.path.join(ROOT, test_file)), f"{c.id}: {test_file} missing"
        if "::" in c.test:
            name = c.test.split("::")[1]
            assert f"def {name}" in open(os.path.join(ROOT, test_file)).read(), f"{c.id}: {c.test} missing"
