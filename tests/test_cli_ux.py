"""The command line as a user meets it: --version, -h, readable help, one error style, output paths
checked before any work (--json, --save-model, --out, --witness-out, ...), --json - on standard
output, --timeout, progress on a terminal (silent when piped, -q, -v), --witness-out, claims."""
from __future__ import annotations

import json
import re
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from verify.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
EX = ROOT / "examples"
L1 = ["--model", str(EX / "L1" / "model.json"), "--dataset", str(EX / "L1" / "dataset.json")]
E_WITNESS = ["--model", str(EX / "E" / "model.json"), "--dataset", str(EX / "E" / "dataset-alpha2.json")]


def run(argv, capsys):
    """(exit code, stdout, stderr) of ``ptverify argv`` in-process."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    code = exc.value.code
    return (0 if code is None else code), out, err


def _commands():
    """Every command path of the CLI, e.g. ["check"], ["prove", "limitation"]."""
    import typer.main

    from verify.cli import app
    found = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, path + [name])
        else:
            found.append((path, cmd))
    walk(typer.main.get_command(app), [])
    return found


COMMANDS = _commands()


# --------------------------------------------------------------------------- version, help, errors

def test_version_names_ptverify_and_its_solvers(capsys):
    import verify
    for flag in ("--version", "-V"):
        code, out, err = run([flag], capsys)
        assert code == 0 and err == ""
        assert out.startswith(f"ptverify {verify.__version__} (") and "z3 " in out and "numpy " in out


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS] + [[], ["prove"]], ids=lambda p: " ".join(p) or "root")
def test_h_is_help_and_help_is_readable(path, capsys):
    code, out, err = run(path + ["-h"], capsys)
    assert code == 0 and out.startswith("Usage: ptverify")
    code2, out2, _ = run(path + ["--help"], capsys)
    assert code2 == 0 and out2 == out
    assert "<bool>" not in out and "[OPTIONS]" in out
    options = [line for line in out.splitlines() if line.lstrip().startswith("-")]
    assert not [line for line in options if re.search(r"<(int|str|float)>", line)], out    # INTEGER, TEXT, NUMBER


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_option_has_help_and_common_options(path, cmd):
    opts = [p for p in cmd.params if p.param_type_name == "option"]
    assert [p.name for p in opts if not (p.help or "").strip()] == []
    names = {o for p in opts for o in p.opts}
    assert {"-q", "--quiet", "-v", "--verbose"} <= names
    if "--json" in names:
        assert "--self-contained" in names


@pytest.mark.parametrize("argv,needle", [
    (["check", "--bogus"], "--bogus"),
    (["check"], "--model"),
    (["no-such-command"], "no-such-command"),
    (["check", *L1, "--timeout", "soon"], "--timeout"),
    (["prove", "limitation", "--d"], "--d"),
    (["replay"], "RESULT"),
])
def test_usage_errors_are_one_line_exit_2(argv, needle, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ptverify: error: ") and needle in lines[0] and "--help" in lines[0]


def test_bad_values_use_the_same_style(capsys):
    code, out, err = run(["check", *L1, "--expect", "provd"], capsys)
    assert code == 2 and err.startswith("ptverify: error: --expect")


# --------------------------------------------------------------------------- output paths

@pytest.fixture
def no_solve(monkeypatch):
    """Any solve fails the test: output checks must come first."""
    import verify.claims.reproduce
    import verify.provers.limitation

    def boom(*a, **k):
        raise AssertionError("the solve started before the output paths were checked")
    monkeypatch.setattr(verify.provers.limitation, "check_memorization", boom)
    monkeypatch.setattr(verify.provers.limitation, "prove_limitation", boom)
    monkeypatch.setattr(verify.claims.reproduce, "run_reproduce", boom)


def _inputs(tmp_path):
    m, d = tmp_path / "m.json", tmp_path / "d.json"
    shutil.copy(EX / "L1" / "model.json", m)
    shutil.copy(EX / "L1" / "dataset.json", d)
    return m, d


def test_json_onto_an_input_is_refused_before_solving(tmp_path, capsys, no_solve):
    m, d = _inputs(tmp_path)
    before = d.read_bytes()
    for target, named in ((d, "--dataset"), (m, "--model"), (tmp_path / "." / "d.json", "--dataset")):
        code, out, err = run(["check", "--model", m, "--dataset", d, "--json", target], capsys)
        assert code == 2 and err.startswith("ptverify: error: --json:") and named in err
    link = tmp_path / "link.json"
    link.symlink_to(d)
    code, _, err = run(["check", "--model", m, "--dataset", d, "--json", link], capsys)
    assert code == 2 and "--dataset" in err
    code, _, err = run(["check", "--model", m, "--dataset", d, "--witness-out", m], capsys)
    assert code == 2 and err.startswith("ptverify: error: --witness-out:")
    assert d.read_bytes() == before


@pytest.mark.parametrize("argv,option", [
    (["check", "--model", "{m}", "--dataset", "{d}", "--json", "{tmp}"], "--json"),
    (["check", "--model", "{m}", "--dataset", "{d}", "--json", "{m}/r.json"], "--json"),
    (["check", "--model", "{m}", "--dataset", "{d}", "--json", "{m}/a/b/r.json"], "--json"),
    (["check", "--model", "{m}", "--dataset", "{d}", "--artifacts", "{m}/smt"], "--artifacts"),
    (["check", "--model", "{m}", "--dataset", "{d}", "--json", "-", "--witness-out", "-"], "--witness-out"),
    (["prove", "limitation", "--save-model", "{tmp}/x.json", "--save-dataset", "{tmp}/x.json"], "--save-dataset"),
    (["prove", "limitation", "--json", "{tmp}/r.json", "--save-model", "{tmp}/r.json"], "--save-model"),
    (["prove", "limitation", "--save-model", "{d}/m.npz"], "--save-model"),
    (["check", "--model", "{m}", "--dataset", "{d}", "--json", "{tmp}/" + "r" * 300 + ".json"], "--json"),
    (["reproduce", "--out", "{m}/out"], "--out"),
    (["reproduce", "--out", "{m}"], "--out"),
    (["experiment", "prompt-vs-lora", "--out", "{m}/out"], "--out"),
])
def test_unusable_output_paths_exit_2_before_any_work(argv, option, tmp_path, capsys, no_solve):
    m, d = _inputs(tmp_path)
    argv = [a.format(m=m, d=d, tmp=tmp_path) for a in argv]
    listing = sorted(os.listdir(tmp_path))
    code, out, err = run(argv, capsys)
    assert code == 2, err
    assert err.startswith(f"ptverify: error: {option}:") and len(err.strip().splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == listing        # nothing written


def test_json_dash_is_pure_json_on_stdout(capsys):
    code, out, err = run(["check", *L1, "--json", "-"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["format"] == "ptverify-result/2" and data["status"] == "proved"
    assert "check: proved" in err                        # the human summary moved to stderr
    assert not os.path.exists("-")
    assert all("embedded" in ref for ref in data["inputs"].values())   # nothing can go along stdout


def test_json_file_says_what_it_wrote_and_replays(tmp_path, capsys):
    r = tmp_path / "sub" / "r.json"
    code, out, _ = run(["check", *L1, "--json", r], capsys)
    assert code == 0 and f"wrote {r}" in out
    assert run(["replay", r], capsys)[0] == 0


def test_side_files_are_named_and_self_contained_embeds_them(tmp_path, monkeypatch, capsys):
    import verify.provers.limitation as lim
    monkeypatch.setattr(lim, "_INLINE_LIMIT", 10)         # the L1 example then needs side files
    r = tmp_path / "a" / "r.json"
    code, out, _ = run(["check", *L1, "--json", r], capsys)
    data = json.loads(r.read_text())
    sides = sorted(ref["file"] for ref in data["inputs"].values() if "file" in ref)
    assert code == 0 and sides and sorted(os.listdir(r.parent)) == sorted(["r.json"] + sides)
    assert f"wrote {r} (and side file" in out and all(s in out for s in sides)
    assert run(["replay", r], capsys)[0] == 0
    r2 = tmp_path / "b" / "r.json"
    code, out, _ = run(["check", *L1, "--json", r2, "--self-contained"], capsys)
    data = json.loads(r2.read_text())
    assert code == 0 and all("embedded" in ref and "file" not in ref for ref in data["inputs"].values())
    assert os.listdir(r2.parent) == ["r.json"] and "side file" not in out
    assert run(["replay", r2], capsys)[0] == 0
    code, out, _ = run(["check", *L1, "--json", "-"], capsys)
    assert code == 0 and all("embedded" in ref for ref in json.loads(out)["inputs"].values())


def test_quiet_prints_nothing_but_errors(tmp_path, capsys):
    code, out, err = run(["check", *L1, "-q", "--json", tmp_path / "r.json"], capsys)
    assert code == 0 and out == "" and err == "" and (tmp_path / "r.json").exists()
    code, out, err = run(["check", *L1, "-q", "--expect", "memorized"], capsys)
    assert code == 1 and out == "" and err.startswith("ptverify: error: --expect")


# --------------------------------------------------------------------------- timeouts

TIMEOUT_COMMANDS = [["prove", "limitation"], ["check", *L1], ["bounds"]]


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf", "1e400"])
@pytest.mark.parametrize("cmd", TIMEOUT_COMMANDS, ids=lambda c: c[0])
def test_every_timeout_is_validated_the_same_way(cmd, value, capsys, no_solve):
    code, out, err = run(cmd + ["--timeout", value], capsys)
    assert code == 2 and err.startswith("ptverify: error: --timeout: expected a finite number of seconds > 0")


@pytest.mark.parametrize("argv", [
    ["prove", "limitation", "--d", "64"],
    ["prove", "limitation", "--d", "8", "--heads", "2"],
    ["check", *L1],
    ["check", "--model", str(EX / "L3" / "model.json"), "--dataset", str(EX / "L3" / "dataset.json")],
    ["check", *E_WITNESS],
], ids=["prove-d64", "prove-d8h2", "check-L1", "check-L3", "check-E"])
def test_a_timeout_names_its_stage(argv, tmp_path, capsys):
    r = tmp_path / "r.json"
    code, out, err = run(argv + ["--timeout", "0.001", "--json", r], capsys)
    assert code == 0
    data = json.loads(r.read_text())
    info = data["info"]
    assert data["status"] == "timeout" and data["certificate"] is None
    assert info["stage"] and info["stage"] in info["message"] and info["stage"] in info["method"]
    assert info["log"] and "feasible" not in info["message"]
    assert f"stage '{info['stage']}'" in out.splitlines()[0] and "timeout" in out.splitlines()[0]


def test_bounds_rows_that_ran_out_of_time_make_a_timeout():
    from verify.provers.bounds import _timed_out
    from verify.result import Result, Status
    res = Result(claim="L4L5", status=Status.UNKNOWN, method="m", message="rows not verified: L1")
    info = {"L1": {"prompt": {"status": "timeout", "message": "ran out of time in stage 'MLP preimages'"}}}
    _timed_out(res, info, ["L1"], 0.001)
    assert res.status == Status.TIMEOUT and res.extra["stage"] == "row L1, prompt check: MLP preimages"
    assert res.extra["log"] and res.extra["stage"] in res.message
    res2 = Result(claim="L4L5", status=Status.UNKNOWN, method="m")
    _timed_out(res2, {"L1": {"prompt": {"status": "unknown"}}}, ["L1"], 1.0)
    assert res2.status == Status.UNKNOWN


# --------------------------------------------------------------------------- progress

class Recorder:
    """A stand-in for the terminal reporter that records what it is told."""
    made: list = []

    def __init__(self, live, verbose):
        self.live, self.verbose, self.calls = live, verbose, []
        Recorder.made.append(self)

    def start(self):
        self.calls.append(("start",))

    def stop(self):
        self.calls.append(("stop",))

    def outer(self, text):
        self.calls.append(("outer", text))

    def stage(self, name):
        self.calls.append(("stage", name))

    def step(self, i, n, what):
        self.calls.append(("step", i, n, what))

    def log(self, line):
        self.calls.append(("log", line))


@pytest.fixture
def terminal(monkeypatch):
    import verify.cli.output as output
    Recorder.made = []
    monkeypatch.setattr(output, "stderr_is_tty", lambda: True)
    monkeypatch.setattr(output, "TerminalProgress", Recorder)
    return Recorder


def test_progress_on_a_terminal_names_stages_and_heads(terminal, capsys):
    code, out, _ = run(["prove", "limitation", "--d", "4", "--heads", "2"], capsys)
    assert code == 0 and "L1: proved" in out
    (rep,) = terminal.made
    assert rep.live and not rep.verbose
    stages = [c[1] for c in rep.calls if c[0] == "stage"]
    assert "MLP preimages" in stages and "relaxation R" in stages
    assert ("step", 1, 2, "head") in rep.calls
    assert rep.calls[-1] == ("stop",)


def test_quiet_installs_no_reporter_and_verbose_adds_the_log(terminal, capsys):
    run(["check", *L1, "-q"], capsys)
    assert terminal.made == []
    run(["check", *L1, "-v"], capsys)
    (rep,) = terminal.made
    assert rep.verbose and any(c[0] == "log" for c in rep.calls)


def test_piped_runs_show_no_progress(monkeypatch, capsys):
    import verify.cli.output as output
    monkeypatch.setattr(output, "TerminalProgress", Recorder)
    Recorder.made = []
    code, out, err = run(["check", *L1], capsys)
    assert code == 0 and Recorder.made == [] and err == ""


def test_multilayer_reports_layer_i_of_l(terminal, capsys):
    code, out, _ = run(["prove", "multilayer", "--layers", "3", "--d", "4"], capsys)
    assert code == 0
    (rep,) = terminal.made
    assert ("step", 3, 3, "layer") in rep.calls and any("spectral norm" in c[1] for c in rep.calls if c[0] == "stage")


def test_reproduce_reports_claim_i_of_n(terminal):
    from verify.cli import _claim_started
    from verify.progress import use
    rep = Recorder(True, False)
    with use(rep):
        _claim_started("claim 2 of 9: L3: Theorem L3: no prompt leaves the attention subspace ...")
    assert ("outer", "claim 2 of 9: L3") in rep.calls


def test_progress_protocol_defaults_and_scopes():
    from verify import progress
    assert progress.current() is progress.NULL and progress.ensure(None) is progress.NULL
    rep = Recorder(True, False)
    with progress.use(rep):
        with progress.scope("claim 1 of 2 (L1)"):
            progress.current().stage("relaxation R")
            progress.current().step(1, 3, "head block")
        log = progress.LogList()
        log.append("a line")
    assert ("stage", "claim 1 of 2 (L1) > relaxation R") in rep.calls and ("step", 1, 3, "head block") in rep.calls
    assert ("log", "a line") in rep.calls and log == ["a line"] and progress.current() is progress.NULL


def test_terminal_reporter_draws_on_stderr_only(capsys):
    from verify.cli.output import TerminalProgress
    rep = TerminalProgress(live=True, verbose=True)
    rep.start()
    rep.stage("relaxation R")
    rep.step(1, 3, "head block")
    rep.log("a log line")
    rep.stop()
    out, err = capsys.readouterr()
    assert out == "" and "a log line" in err


@pytest.mark.skipif(shutil.which("script") is None or sys.platform != "linux", reason="needs util-linux script")
def test_a_real_terminal_sees_progress_and_a_pipe_does_not(tmp_path):
    exe = shutil.which("ptverify") or f"{sys.executable} -m verify"
    cmd = f"{exe} prove limitation --d 4 --heads 2"
    tty = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    stages = ("MLP preimages", "relaxation R", "Farkas dual", "trusted checker", "head 1 of 2")
    assert tty.returncode == 0 and any(s in tty.stdout for s in stages), tty.stdout[-2000:]
    piped = subprocess.run(cmd.split(), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert piped.stderr == "" and "L1:" in piped.stdout


# --------------------------------------------------------------------------- witness, claims

def test_witness_out_writes_the_memorizing_prompt(tmp_path, capsys):
    from fractions import Fraction
    w = tmp_path / "w.json"
    code, out, _ = run(["check", *E_WITNESS, "--witness-out", w, "--json", tmp_path / "r.json"], capsys)
    assert code == 0 and f"wrote {w}" in out
    obj = json.loads(w.read_text())
    assert obj["format"] == "ptverify-witness/1" and obj["length"] == len(obj["prompt"]) >= 1
    result = json.loads((tmp_path / "r.json").read_text())
    assert obj["prompt"] == result["certificate"]["body"]["prompt"]
    assert obj["prompt_float"] == [[float(Fraction(v)) for v in row] for row in obj["prompt"]]
    assert obj["model"]["sha256"] == result["inputs"]["model"]["sha256"]


def test_no_witness_file_unless_memorized(tmp_path, capsys):
    w = tmp_path / "w.json"
    code, out, _ = run(["check", *L1, "--witness-out", w], capsys)
    assert code == 0 and not w.exists() and "no witness written" in out and "proved" in out


def test_claims_prints_every_promised_column(capsys):
    from verify.claims import all_claims
    code, out, _ = run(["claims"], capsys)
    assert code == 0
    for c in all_claims():
        block = out.split(f"{c.id}: {c.title}", 1)[1].split("\n\n", 1)[0]
        for label, value in (("statement", c.statement), ("expected", c.expected.value), ("command", c.command),
                             ("proof", c.proof), ("test", c.test)):
            assert f"{label}:" in block and (value or "-") in block, (c.id, label)


def test_a_closed_standard_output_is_not_exit_1(monkeypatch):
    """``ptverify claims | head -1``: the reader closes the pipe.  click turns a broken pipe into
    exit 1, which is reserved for an unmet --expect; ptverify exits as SIGPIPE would (141)."""
    import io
    import sys

    from verify.cli import main

    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            raise io.UnsupportedOperation("no file descriptor")

    monkeypatch.setattr(sys, "stdout", Closed())
    with pytest.raises(SystemExit) as exc:
        main(["claims", "--markdown"])
    assert exc.value.code == 141
