"""Every result that ``ptverify reproduce --quick`` writes is accepted by the trusted checker run
alone (numpy only), and rejected after each envelope mutation, certificate swap and a sample of
body mutations (tests/mutations.py).  The per-kind tests mutate every body number; this battery
covers every registered claim."""
from __future__ import annotations

import copy
import json
import os
import re

import pytest
from mutations import assert_all_rejected, body_mutations, envelope_mutations

from verify.checker import check_result
from verify.claims import all_claims
from verify.claims.reproduce import run_reproduce
from verify.result import DECIDED, Status

BODY_SAMPLE = 30
#: an experiment run's prompt entries: the optimizer drives prompts far out, where moving one entry
#: can change the loss by 1e-15, so the moved record is still a true record; tests/test_checker_loss.py
#: mutates them and tells the harmless ones apart with an independent float64 forward pass
FLAT_PROMPT_ENTRY = re.compile(r"body\['runs', \d+, 'prompt'")


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("reproduce"))
    code, rows = run_reproduce(out, quick=True)
    results = {row[0].id: (json.load(open(row[4])), row[5]) for row in rows}
    return out, code, results


def test_every_claim_reaches_its_verdict(reproduced):
    _, code, results = reproduced
    missed = [cid for cid, (_, ok) in results.items() if not ok]
    assert code == 0 and not missed, missed
    assert set(results) == {c.id for c in all_claims()}


def test_isolated_checker_accepts_every_result(reproduced, isolated_checker):
    out, _, results = reproduced
    decided = [os.path.join(out, f"{cid}.json") for cid, (res, _) in results.items()
               if Status(res["status"]) in DECIDED]
    assert len(decided) == len(results)
    r = isolated_checker(*decided)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert r.stdout.count("OK ") == len(decided)


def _sample(mutations, k: int):
    ms = list(mutations)
    if len(ms) <= k:
        return ms
    step = len(ms) / k
    return [ms[int(i * step)] for i in range(k)]


@pytest.mark.parametrize("cid", [c.id for c in all_claims()])
def test_every_mutation_is_rejected(reproduced, cid):
    out, _, results = reproduced
    res, _ = results[cid]
    kind = res["certificate"]["kind"]
    body = [(n, m) for n, m in body_mutations(res) if not FLAT_PROMPT_ENTRY.match(n)]
    muts = list(envelope_mutations(res)) + _sample(body, BODY_SAMPLE)
    # another claim's certificate of a different kind or instance, pasted into this result
    for other, (ores, _) in results.items():
        if other != cid and ores.get("certificate") and ores["certificate"] != res["certificate"]:
            muts.append((f"certificate from {other}", dict(copy.deepcopy(res), certificate=ores["certificate"])))
    assert_all_rejected(f"{kind} (claim battery)", res, muts, base_dir=out)


def test_results_hold_where_they_were_written_only(reproduced, tmp_path):
    """A result with side files moved away from them fails cleanly; moved with them, it holds."""
    out, _, results = reproduced
    for cid, (res, _) in results.items():
        refs = [ref for ref in res["inputs"].values() if "file" in ref]
        if not refs:
            continue
        ok, msg = check_result(res, str(tmp_path))
        assert not ok and "not found" in msg, (cid, msg)
        for ref in refs:
            os.link(os.path.join(out, ref["file"]), tmp_path / ref["file"])
        assert check_result(res, str(tmp_path))[0], cid
        break
