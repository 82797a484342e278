"""Portable results (side files named by their hash, a self-contained write, replay after a move)
and ``report.md`` (certificate kinds, replay commands and links that resolve, embedded plots,
checks as tables, provenance, statements, vacuity warnings, a reused output folder)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil

import pytest

from constructions.model import InputError, dataset_from_json, load_dataset, load_model
from verify.claims import Claim, get_claim
from verify.claims.reproduce import MANIFEST, run_reproduce
from verify.cli import main
from verify.result import Status, load_result, side_refs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EX = os.path.join(ROOT, "examples")
FAST = ["L2", "L3", "E-witness", "L5"]
#: a 1 x 1 PNG
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")


def cli(argv: list, cwd=None) -> int:
    old = os.getcwd()
    try:
        if cwd:
            os.chdir(cwd)
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        os.chdir(old)
    return 0


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# --------------------------------------------------------------------------- portable results

@pytest.fixture(scope="module")
def side_result():
    """An L2 proof whose model and dataset are side files (inline limit 0), in a temporary folder."""
    from verify.provers import limitation
    from verify.provers.limitation import check_memorization
    mp = pytest.MonkeyPatch()
    mp.setattr(limitation, "_INLINE_LIMIT", 0)
    try:
        m = load_model(os.path.join(EX, "L2", "model.json"))
        res = check_memorization(m, load_dataset(os.path.join(EX, "L2", "dataset.json"), m.d),
                                 claim="check", search_witness=False)
    finally:
        mp.undo()
    assert res.status == Status.PROVED
    return res


def test_side_files_are_staged_outside_the_results_folder_until_written(tmp_path, monkeypatch):
    """An interrupted run must leave nothing beside its --json path: side files are staged in a
    private temporary folder and copied next to the result only when it is written."""
    from verify.provers import limitation
    from verify.provers.limitation import check_memorization
    monkeypatch.setattr(limitation, "_INLINE_LIMIT", 0)
    m = load_model(os.path.join(EX, "L2", "model.json"))
    path = str(tmp_path / "r.json")
    res = check_memorization(m, load_dataset(os.path.join(EX, "L2", "dataset.json"), m.d),
                             claim="check", search_witness=False, side_files=path)
    assert res.status == Status.PROVED and os.listdir(tmp_path) == []
    files = res.write(path)
    assert len(files) == 3 and sorted(os.listdir(tmp_path)) == sorted(os.path.basename(f) for f in files)


def test_write_lists_every_file_and_names_side_files_by_hash(side_result, tmp_path):
    path = str(tmp_path / "r.json")
    files = side_result.write(path)
    assert files[0] == path and len(files) == 3
    refs = side_refs(json.load(open(path)))
    assert sorted(os.path.join(str(tmp_path), ref["file"]) for _, ref in refs) == sorted(files[1:])
    for _, ref in refs:
        f = tmp_path / ref["file"]
        assert sha(f) == ref["sha256"] and ref["file"] == ref["sha256"][:16] + os.path.splitext(ref["file"])[1]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
    assert side_result.write(path) == files            # rewriting keeps the same content-addressed names


def test_moved_result_replays_with_its_side_files_and_fails_as_bad_input_without(side_result, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    files = side_result.write(str(a / "r.json"))
    shutil.move(files[0], b / "r.json")
    capsys.readouterr()
    assert cli(["replay", str(b / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    missing = os.path.basename(files[1])
    assert err.startswith("ptverify: error: inputs.") and missing in err and "\n" not in err
    assert "move the side files along or write with --self-contained" in err.lower()
    with pytest.raises(InputError):
        load_result(str(b / "r.json"))
    for f in files[1:]:
        shutil.move(f, b)
    assert cli(["replay", str(b / "r.json")]) == 0
    assert "replay: OK" in capsys.readouterr().out


def test_self_contained_result_moves_alone(side_result, tmp_path, capsys):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    files = side_result.write(str(tmp_path / "a" / "r.json"), self_contained=True)
    assert files == [str(tmp_path / "a" / "r.json")] and os.listdir(tmp_path / "a") == ["r.json"]
    obj = json.load(open(files[0]))
    assert side_refs(obj) == [] and all("embedded" in ref for ref in obj["inputs"].values())
    shutil.move(files[0], tmp_path / "b" / "r.json")
    assert cli(["replay", str(tmp_path / "b" / "r.json")]) == 0
    assert "replay: OK" in capsys.readouterr().out


def test_all_null_dataset_is_flagged_vacuous(tmp_path):
    from verify.provers.limitation import check_memorization
    m = load_model(os.path.join(EX, "L2", "model.json"))
    dj = json.load(open(os.path.join(EX, "L2", "dataset.json")))
    for ex in dj["examples"]:
        ex["output"] = [None] * len(ex["output"])
    res = check_memorization(m, dataset_from_json(dj, m.d), claim="check", side_files=str(tmp_path / "r.json"))
    res.write(str(tmp_path / "r.json"))
    warnings = json.load(open(tmp_path / "r.json"))["info"]["warnings"]
    assert any("vacuous" in w for w in warnings)


# --------------------------------------------------------------------------- the report

def _plot_claim() -> Claim:
    """L3 again, writing a plot as a claim with figures does."""
    l3 = get_claim("L3")

    def run(params, outdir):
        os.makedirs(os.path.join(outdir, "plots"), exist_ok=True)
        with open(os.path.join(outdir, "plots", "fig.png"), "wb") as fh:
            fh.write(PNG)
        return l3.run(params, outdir)
    return Claim("PLOT", "a claim with a plot", "plot", Status.PROVED, run, quick=l3.quick, default=l3.default)


def _unexpected_claim() -> Claim:
    """E-witness (memorized) registered as if a limitation were expected."""
    ew = get_claim("E-witness")
    return Claim("NEG", "expects proved, gets memorized", "NEGATIVE-STATEMENT: no prompt memorizes it",
                 Status.PROVED, ew.run, quick=ew.quick, default=ew.default)


def _vacuous_claim() -> Claim:
    def run(params, outdir):
        from verify.provers.limitation import check_memorization
        m = load_model(os.path.join(EX, "E", "model.json"))
        dj = json.load(open(os.path.join(EX, "E", "dataset.json")))
        for ex in dj["examples"]:
            ex["output"] = [None] * len(ex["output"])
        return check_memorization(m, dataset_from_json(dj, m.d), claim="NULL", side_files=os.path.join(outdir, "x"))
    return Claim("NULL", "an all-null dataset", "anything", Status.MEMORIZED, run)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "out"
    claims = [get_claim(c) for c in FAST] + [_plot_claim(), _unexpected_claim(), _vacuous_claim()]
    code, rows = run_reproduce(str(out), quick=True, only=FAST + ["PLOT", "NEG", "NULL"], claims=claims,
                               command="ptverify reproduce --quick")
    return out, code, rows, (out / "report.md").read_text()


def _section(text: str, cid: str) -> str:
    return text.split(f"\n## {cid}: ", 1)[1].split("\n## ", 1)[0]


def test_report_summary_names_verdicts_and_certificate_kinds(report):
    out, code, rows, text = report
    assert code == 1 and [r[0].id for r in rows if not r[5]] == ["NEG"]
    assert "| claim | instance | expected | verdict | certificate | seconds | result |" in text
    kinds = {"L2": "limitation-farkas", "L3": "limitation-farkas", "E-witness": "prompt-witness",
             "L5": "lora-witness", "NEG": "prompt-witness"}
    for cid, kind in kinds.items():
        assert re.search(rf"^\| {re.escape(cid)} \|.*\| `{kind}` \|.*\[{re.escape(cid)}\.json\]\({re.escape(cid)}\.json\) \|$",
                         text, re.M), cid
        assert f"Certificate kind: `{kind}`" in _section(text, cid)


def test_report_links_resolve_and_plots_are_embedded(report):
    out, _, _, text = report
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert len(links) > 10
    for link in links:
        assert not link.startswith(("/", "http")) and (out / link).is_file(), link
    assert re.search(r"^!\[PLOT: fig\.png\]\(plots/fig\.png\)$", text, re.M)
    assert "[smt2/L2/" in _section(text, "L2")        # the SMT-LIB2 queries are linked


def test_report_checks_are_tables_and_provenance_is_recorded(report):
    _, _, _, text = report
    assert "{'" not in text and "True" not in text
    assert "| check | value |\n|---|---|\n| " in _section(text, "L2")
    prov = text.split("## Provenance", 1)[1].split("\n## ", 1)[0]
    fields = dict(re.findall(r"^\| ([^|]+?) \| (.+?) \|$", prov, re.M))
    for key in ("ptverify", "git commit", "python", "z3", "torch", "numpy", "date (UTC)", "machine", "command"):
        assert fields.get(key, "").strip(), key
    assert re.fullmatch(r"[0-9a-f]{40}( \(with uncommitted changes\))?|not a git checkout.*", fields["git commit"])
    assert fields["command"] == "`ptverify reproduce --quick`" and "CPUs" in fields["machine"]


def test_memorized_result_never_carries_the_negative_statement(report):
    _, _, _, text = report
    sec = _section(text, "NEG")
    assert "NEGATIVE-STATEMENT" not in sec and "not established by this run" in sec
    assert "a prompt of any length memorizes the dataset exactly" in sec
    assert "no prompt" not in sec.lower()


def test_report_warns_of_a_vacuous_dataset(report):
    out, _, _, text = report
    assert "> **Warning:** vacuous check" in _section(text, "NULL")
    assert any("vacuous" in w for w in json.load(open(out / "NULL.json"))["info"]["warnings"])


def test_report_commands_run_as_printed(report, capsys):
    """Every `ptverify replay` command exits 0, and the "check it yourself" commands of the fast
    claims exit 0, run from the report's folder."""
    out, _, _, text = report
    replays = re.findall(r"`(ptverify replay [^`]+)`", text)
    assert len(replays) >= 7
    checks = [re.search(r"Check it yourself[^`]*`([^`]+)`", _section(text, c)).group(1) for c in ("L2", "L3", "E-witness")]
    for cmd in replays + checks:
        argv = shlex.split(cmd)
        assert argv[0] == "ptverify"
        assert cli(argv[1:], cwd=str(out)) == 0, (cmd, capsys.readouterr())
    from verify.checker.__main__ import main as checker_main
    argv = shlex.split(re.search(r"`python -m verify\.checker ([^`]+)`", text).group(1))
    assert "L2.json" in argv and "NEG.json" in argv
    old = os.getcwd()
    try:
        os.chdir(out)
        assert checker_main(argv) == 0
    finally:
        os.chdir(old)


def test_reused_out_folder_keeps_no_stale_result_and_no_user_file_is_touched(report, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(report[0], out)
    (out / "mine.txt").write_text("user notes")
    (out / "L5.json").write_text((out / "L5.json").read_text() + " ")      # edited since: kept
    code, rows = run_reproduce(str(out), quick=True, only=["L3"], command="ptverify reproduce --only L3")
    text = (out / "report.md").read_text()
    assert code == 0 and [r[0].id for r in rows] == ["L3"]
    for gone in ("L2.json", "E-witness.json", "NEG.json", "plots/fig.png", "smt2"):
        assert not (out / gone).exists(), gone
    assert (out / "mine.txt").read_text() == "user notes" and (out / "L5.json").exists()
    assert "## L2:" not in text and "[L2.json]" not in text and "Removed first" in text and "`L5.json`" in text
    listed = {e["path"] for e in json.load(open(out / MANIFEST))["files"]}
    assert "L3.json" in listed and "report.md" in listed and "mine.txt" not in listed


def test_out_under_a_file_is_bad_input(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="--out"):
        run_reproduce(str(tmp_path / "f" / "sub"), quick=True, only=["L3"])
    assert os.listdir(tmp_path) == ["f"]


def test_manifest_never_deletes_outside_the_folder_or_through_a_link(tmp_path):
    """A forged manifest naming files outside the folder, a symbolic link or a changed file
    deletes none of them."""
    out, outside = tmp_path / "out", tmp_path / "precious.txt"
    out.mkdir()
    outside.write_text("keep")
    (out / "link.json").symlink_to(outside)
    (out / "edited.json").write_text("user edit")
    entries = [{"path": p, "sha256": sha(outside)} for p in ("../precious.txt", str(outside), "link.json")]
    entries.append({"path": "edited.json", "sha256": "0" * 64})
    (out / MANIFEST).write_text(json.dumps({"format": "ptverify-manifest/1", "files": entries, "dirs": [".."]}))
    assert run_reproduce(str(out), quick=True, only=["L3"], command="x")[0] == 0
    assert outside.read_text() == "keep" and (out / "link.json").is_symlink() and (out / "edited.json").exists()
    assert "`edited.json`" in (out / "report.md").read_text()


def test_reproduce_command_writes_the_report(tmp_path, capsys):
    assert cli(["reproduce", "--quick", "--only", "L3", "--out", str(tmp_path / "o")]) == 0
    text = (tmp_path / "o" / "report.md").read_text()
    assert "## L3:" in text and "`ptverify replay L3.json`" in text


def test_a_file_that_existed_before_and_changed_meanwhile_is_not_claimed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    l3 = get_claim("L3")

    def run(params, outdir):            # someone edits a file in the folder during the run
        (out / "notes.txt").write_text("mine, edited")
        return l3.run(params, outdir)
    claim = Claim("L3", l3.title, l3.statement, Status.PROVED, run, quick=l3.quick)
    run_reproduce(str(out), quick=True, claims=[claim], command="x")
    run_reproduce(str(out), quick=True, claims=[claim], command="x")
    assert (out / "notes.txt").read_text() == "mine, edited"
    listed = {e["path"] for e in json.load(open(out / MANIFEST))["files"]}
    assert "notes.txt" not in listed and "L3.json" in listed
