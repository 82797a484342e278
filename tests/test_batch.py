"""``ptverify batch``: records, summary, crash/hang survival, re-run skipping, bad manifests, and
the Dask runner on a LocalCluster giving the same verdicts as one local worker."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from verify.batch.jobs import load_record, read_manifest
from verify.batch.runner import run_batch

REAL_JOBS = [
    {"id": "l1", "command": "prove-limitation", "d": 2, "seed": 1},
    {"id": "l1b", "command": "prove-limitation", "d": 1, "seed": 2, "timeout": 20},
    {"id": "m1", "command": "prove-multilayer", "layers": 2, "d": 2, "heads": 1, "seed": 0},
    {"id": "bad", "command": "check", "model": "missing-model.json", "dataset": "missing-dataset.json"},
]
CHAOS_JOBS = [
    {"id": "crash", "command": "selftest-crash"},
    {"id": "hang", "command": "selftest-sleep", "seconds": 600, "job_timeout": 3},
]


def _manifest(folder, jobs, name="manifest.jsonl"):
    path = os.path.join(folder, name)
    with open(path, "w") as fh:
        fh.write("# a comment line\n\n")
        for j in jobs:
            fh.write(json.dumps(j) + "\n")
    return path


@pytest.fixture
def selftest(monkeypatch):
    monkeypatch.setenv("PTVERIFY_BATCH_SELFTEST", "1")


def _verdicts(out, jobs):
    recs = {j["id"]: load_record(out, j["id"]) for j in jobs}
    return {k: (r["status"], r["verdict"]) for k, r in recs.items()}


def test_local_batch_records_summary_crash_hang_and_rerun(tmp_path, selftest):
    man = _manifest(str(tmp_path), REAL_JOBS + CHAOS_JOBS)
    out = str(tmp_path / "out")
    s = run_batch(read_manifest(man), out, workers=2, job_timeout=120)
    v = _verdicts(out, REAL_JOBS + CHAOS_JOBS)
    assert v["l1"] == ("ok", "proved") and v["m1"] == ("ok", "proved")
    assert v["crash"][0] == "error" and v["hang"][0] == "timeout"
    assert v["bad"][0] == "error"
    bad = load_record(out, "bad")
    assert bad["exit_code"] == 2 and "--model" in bad["message"]
    # every proved result file is there and re-checked by the trusted checker
    from verify.checker import check_file
    assert check_file(os.path.join(out, load_record(out, "l1")["result"]))[0]
    assert s["jobs"] == 6 and s["statuses"]["error"] == 2 and s["statuses"]["timeout"] == 1
    assert {f["id"] for f in s["failures"]} == {"bad", "crash", "hang"}
    assert s["seconds"]["p50"] is not None
    assert json.load(open(os.path.join(out, "summary.json")))["jobs"] == 6
    # a re-run skips every job that has a record
    s2 = run_batch(read_manifest(man), out, workers=1, job_timeout=120)
    assert s2["ran"] == 0 and s2["skipped"] == 6 and s2["verdicts"] == s["verdicts"]
    # a replay job on a result of the first run
    man2 = _manifest(str(tmp_path), [{"id": "r1", "command": "replay", "result": os.path.join(out, "results", "l1.json")}],
                     "replay.jsonl")
    run_batch(read_manifest(man2), out, workers=1)
    assert load_record(out, "r1")["verdict"] == "replay-ok"


@pytest.mark.parametrize("line,field", [
    ('{"id": "a", "command": "prove"}', "command"),
    ('{"command": "check"}', "id"),
    ('{"id": "a b", "command": "check"}', "id"),
    ('[1, 2]', "MANIFEST line 3"),
    ('{"id": "x", "command": "check", "timeout": [1]}', "timeout"),
    ('{"id": "x", "command": "check", "job_timeout": -1}', "job_timeout"),
    ('{"id": "x", "command": "selftest-crash"}', "command"),
    ('{"id": "x", "command": "check", "args": ["--json", "elsewhere.json"]}', "args"),
    ('{"id": "x", "command": "check", "args": ["--artifacts=q"]}', "args"),
])
def test_bad_manifest_lines_name_the_field(tmp_path, monkeypatch, line, field):
    monkeypatch.delenv("PTVERIFY_BATCH_SELFTEST", raising=False)
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "ok", "command": "prove-limitation", "d": 1}\n\n' + line + "\n")
    from constructions.model import InputError
    with pytest.raises(InputError) as exc:
        read_manifest(str(path))
    assert "line 3" in str(exc.value) and field in str(exc.value)


def test_bad_manifest_exit_2_nothing_run(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "ok", "command": "prove-limitation", "d": 1}\n{"id": "a", "command": "prove"}\n')
    r = subprocess.run([sys.executable, "-m", "verify", "batch", str(path), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "MANIFEST line 2: command" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o" / "jobs" / "ok.json").exists()


def test_duplicate_ids_refused(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a", "command": "replay", "result": "r.json"}\n' * 2)
    from constructions.model import InputError
    with pytest.raises(InputError, match="line 2: id"):
        read_manifest(str(path))


def test_cli_batch_exit_codes_and_table(tmp_path, selftest):
    man = _manifest(str(tmp_path), [REAL_JOBS[0], CHAOS_JOBS[0]])
    out = str(tmp_path / "o")
    r = subprocess.run([sys.executable, "-m", "verify", "batch", man, "--out", out, "--workers", "1"],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr          # one job failed
    assert "proved" in r.stdout and "crash" in r.stdout
    man = _manifest(str(tmp_path), [REAL_JOBS[0]], "ok.jsonl")
    r = subprocess.run([sys.executable, "-m", "verify", "batch", man, "--out", out], capture_output=True, text=True)
    assert r.returncode == 0 and "already done" in r.stdout


def test_dask_local_cluster_same_verdicts_survives_crash_and_hang(tmp_path, selftest):
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster
    jobs = REAL_JOBS[:3] + CHAOS_JOBS
    man = _manifest(str(tmp_path), jobs)
    local_out, dask_out = str(tmp_path / "local"), str(tmp_path / "dask")
    run_batch(read_manifest(man), local_out, workers=1, job_timeout=120)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        s = run_batch(read_manifest(man), dask_out, scheduler=cluster.scheduler_address, job_timeout=120)
    assert _verdicts(dask_out, jobs) == _verdicts(local_out, jobs)
    assert s["statuses"] == {"ok": 3, "error": 1, "timeout": 1} and s["runner"].startswith("dask")
