"""Every command printed in README.md, docs/*.md, examples/README.md and the claim registry runs
as printed, from a folder where the repository's ``examples/`` is reachable, with its outputs
going to a temporary folder.

The default run executes each command, or for the few that take minutes (BERT-size proofs, the
full ``reproduce``, the experiment, the benchmark) a documented quick variant of it, or parses
its options against ``--help``; the ``slow`` tests run every one of those exactly as printed.
A command is asserted to exit 0 and, where its table (examples/README.md, the claim registry)
or its ``--expect`` states a verdict, to reach that verdict.

Synopses (``ptverify replay RESULT.json``, ``python -m verify ...``: placeholders in capitals,
``...``, ``[``, ``|``) are not run; their command and options must exist.
"""
from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from typing import Optional

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERDICTS = ("proved", "memorized", "verified", "refuted", "unknown", "timeout", "error")
MARKDOWN = ["README.md", "examples/README.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))

#: commands that take minutes as printed: what the default run does instead (a smaller instance
#: of the same command, same options); the slow tests run the printed command itself
QUICK = [
    (r"^ptverify reproduce$", "ptverify reproduce --quick --only L1,E"),
    (r"^ptverify reproduce --quick( --out \S+)?$", r"ptverify reproduce --quick --only L1,E\1"),
    (r"--d 768 --heads 12 --mlp-width 3072", "--d 3 --heads 1 --mlp-width 6"),
    (r"^ptverify bench limitation$", "ptverify bench limitation --dims 1,2 --naive-timeout 2"),
    (r"^ptverify bench limitation --dims 1,2,3 --naive-timeout 5$",
     "ptverify bench limitation --dims 1,2 --naive-timeout 2"),
    (r"^(ptverify prove multilayer) --layers 4 --d 16 (--heads 2 --condition 1 )", r"\1 --layers 2 --d 4 \2"),
    (r"^(ptverify bounds) --d 8 --m 2 --examples 4 --heads 2 --head-size 2 --mlp-width 16",
     r"\1 --d 4 --m 2 --examples 2 --heads 2 --head-size 1 --mlp-width 8"),
]
#: commands whose quick variant is still too long for the default run: it only checks that their
#: command and options exist (the slow tests run them)
HELP_ONLY = [
    r"^ptverify experiment prompt-vs-lora",
    r"^ptverify universality",
    r"^ptverify prove limitation --d 3 --heads 2 --head-size 2 --mlp-width 6$",
    r"^ptverify reproduce --only \S*M2-z3",
    r"^ptverify bounds",
    r"^ptverify bench limitation",
    r"^ptverify batch ",
    r"^ptverify prove multilayer .*--condition 2",
]


# --------------------------------------------------------------------------- collecting

def _strip_comment(line: str) -> str:
    return re.sub(r"\s+#.*$", "", line.strip())


def _is_command(text: str) -> bool:
    return text.startswith("ptverify ") or text == "ptverify" or text.startswith("python -m verify")


def _is_name(span: str) -> bool:
    """``ptverify check`` in a sentence names a command; it is not one to run."""
    words = span.split()
    words = words[3:] if words[:2] == ["python", "-m"] else words[1:]
    return all(re.match(r"^[a-z][a-z-]*$", w) for w in words)


def commands_in_markdown(text: str) -> list[tuple[str, str]]:
    """``(command, expected verdict or "")`` for every command in a code block or an inline code
    span (not a bare command name); a table row's verdict is its last cell when that cell is a
    verdict."""
    out = []
    fenced = False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            cmd = _strip_comment(line)
            if _is_command(cmd):
                out.append((cmd, ""))
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else []
        verdict = cells[-1] if cells and cells[-1] in VERDICTS else ""
        for span in re.findall(r"`([^`]+)`", line):
            if _is_command(span.strip()) and not _is_name(span.strip()):
                out.append((span.strip(), verdict))
    return out


def registry_commands() -> list[tuple[str, str, str]]:
    from verify.claims import all_claims
    return [(c.command, c.expected.value, c.id) for c in all_claims() if c.command]


def all_commands() -> list[tuple[str, str, str]]:
    """``(command, expected verdict, where)`` for every distinct command (first source wins,
    a stated verdict is kept)."""
    seen: dict[str, tuple[str, str]] = {}
    for rel in MARKDOWN:
        with open(os.path.join(ROOT, rel), encoding="utf-8") as fh:
            for cmd, verdict in commands_in_markdown(fh.read()):
                old = seen.get(cmd)
                if old is None or (verdict and not old[0]):
                    seen[cmd] = (verdict, rel)
    for cmd, verdict, cid in registry_commands():
        old = seen.get(cmd)
        seen[cmd] = (verdict if old is None or not old[0] else old[0], old[1] if old else f"claim {cid}")
    return [(cmd, v, where) for cmd, (v, where) in seen.items()]


_PLACEHOLDER = re.compile(r"^([A-Z][A-Z_]+(/|\.|$)|[A-Z]\.json$)")


def is_synopsis(cmd: str) -> bool:
    if "..." in cmd or "[" in cmd or "|" in cmd or "<" in cmd:
        return True
    return any(_PLACEHOLDER.match(tok) for tok in cmd.split())


def steps(cmd: str) -> list[list[str]]:
    """The argv of each command of a ``a && b`` chain."""
    return [shlex.split(part) for part in cmd.split("&&")]


def quick_variant(cmd: str) -> str:
    for pattern, repl in QUICK:
        cmd = re.sub(pattern, repl, cmd)
    return cmd


def help_only(cmd: str) -> bool:
    return any(re.search(p, cmd) for p in HELP_ONLY)


COMMANDS = all_commands()
RUNNABLE = [c for c in COMMANDS if not is_synopsis(c[0])]
SYNOPSES = [c for c in COMMANDS if is_synopsis(c[0])]
DEFAULT = [c for c in RUNNABLE if not help_only(c[0])]
SLOW = [c for c in RUNNABLE if help_only(c[0]) or quick_variant(c[0]) != c[0]]


# --------------------------------------------------------------------------- running

def _click_command(path: list[str]):
    """The click command of ``ptverify PATH...`` and the arguments after it."""
    import typer

    from verify.cli import app
    cmd = typer.main.get_command(app)
    rest = list(path)
    while rest and hasattr(cmd, "commands") and rest[0] in cmd.commands:
        cmd = cmd.commands[rest.pop(0)]
    return cmd, rest


def _option_names(cmd) -> set[str]:
    names = {"--help", "-h"}
    for p in cmd.params:
        names.update(p.opts)
        names.update(getattr(p, "secondary_opts", []))
    return names


def assert_parses(argv: list[str]) -> None:
    """``argv`` (after ``ptverify``) names a command and only options it has."""
    cmd, rest = _click_command(argv)
    assert not hasattr(cmd, "commands") or not argv or argv[0].startswith("-"), f"{argv}: no such command"
    known = _option_names(cmd)
    for tok in rest:
        if tok.startswith("-") and not re.match(r"^-\d", tok):
            assert tok.split("=")[0] in known, f"ptverify {' '.join(argv)}: unknown option {tok}"


@pytest.fixture(scope="session")
def seed_result(tmp_path_factory):
    """A small ``r.json`` (and its side files) for the commands that replay one."""
    folder = tmp_path_factory.mktemp("seed")
    code, out = _main(["prove", "limitation", "--d", "3", "--json", "r.json"], folder)
    assert code == 0, out
    os.makedirs(folder / "out")
    shutil.copy(folder / "r.json", folder / "out" / "r.json")
    return folder


@pytest.fixture
def workspace(tmp_path, seed_result):
    """A fresh folder holding ``examples`` (a link to the repository's) and the seed result."""
    os.symlink(os.path.join(ROOT, "examples"), tmp_path / "examples")
    for name in os.listdir(seed_result):
        src = os.path.join(seed_result, name)
        (shutil.copy if os.path.isfile(src) else shutil.copytree)(src, tmp_path / name)
    return tmp_path


def _main(argv: list[str], cwd) -> tuple[int, str]:
    """Run ``ptverify ARGV`` in-process in ``cwd``; (exit code, stdout + stderr)."""
    from verify.cli import main
    buf = io.StringIO()
    old, old_argv = os.getcwd(), sys.argv
    os.chdir(cwd)
    sys.argv = ["ptverify"] + list(argv)          # what a real invocation would see
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                main(argv)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(old)
        sys.argv = old_argv
    return code, buf.getvalue()


def run_command(cmd: str, cwd) -> tuple[int, str]:
    """Run a printed command (a ``&&`` chain stops at the first failure)."""
    output = ""
    for argv in steps(cmd):
        if argv[0] == "ptverify":
            code, out = _main(argv[1:], cwd)
        elif argv[:2] == ["python", "-m"]:
            env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
            p = subprocess.run([sys.executable] + argv[1:], cwd=cwd, env=env, capture_output=True, text=True,
                               timeout=600)
            code, out = p.returncode, p.stdout + p.stderr
        else:
            raise AssertionError(f"not a ptverify command: {argv}")
        output += out
        if code != 0:
            return code, output
    return 0, output


def assert_verdict(cmd: str, expected: str, output: str) -> None:
    """The verdict a command's table states is the one it reached."""
    if not expected:
        return
    first = re.search(r"^\S+: (" + "|".join(VERDICTS) + r")\b", output, re.M)
    if first and steps(cmd)[0][1] in ("check", "prove"):
        assert first.group(1) == expected, f"{cmd}: expected {expected}, got {first.group(1)}\n{output}"
    else:
        assert re.search(rf"\b{expected}\b", output), f"{cmd}: {expected!r} not in the output\n{output}"


def _params(cs):
    return [pytest.param(*c, id=c[0][:90]) for c in cs]


# --------------------------------------------------------------------------- the tests

def test_commands_were_found():
    """The collector sees the documents' commands (a broken collector would pass vacuously)."""
    sources = {where for _, _, where in COMMANDS}
    assert {"README.md", "examples/README.md", "docs/cli.md"} <= sources
    assert len(RUNNABLE) >= 30
    ids = [cid for _, _, cid in registry_commands()]
    assert len(ids) >= 20


def test_readme_examples_and_registry_print_no_placeholders():
    """README.md, examples/README.md and the claim registry print only commands that run."""
    bad = [(c, w) for c, _, w in SYNOPSES if w in ("README.md", "examples/README.md") or w.startswith("claim ")]
    bad = [(c, w) for c, w in bad if not c.startswith("python -m verify ...")]
    assert not bad
    for cmd, _, cid in registry_commands():
        assert not is_synopsis(cmd), (cid, cmd)


def test_printed_paths_exist():
    """Every ``examples/...`` file a command names is in the repository."""
    for cmd, _, where in COMMANDS:
        for tok in cmd.split():
            if tok.startswith("examples/"):
                assert os.path.isfile(os.path.join(ROOT, tok)), f"{where}: {cmd}: no file {tok}"


@pytest.mark.parametrize("cmd,expected,where", _params(SYNOPSES))
def test_synopsis_names_real_options(cmd, expected, where):
    for part in cmd.split("&&"):
        words = part.split()
        if words[0] != "ptverify":
            continue                       # python -m verify ...: nothing to parse
        path = []
        for w in words[1:]:
            if not re.match(r"^[a-z][a-z-]*$", w):
                break
            path.append(w)
        opts = re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", " ".join(words[1 + len(path):]))
        assert_parses(path + opts)


@pytest.mark.parametrize("cmd,expected,where", _params(DEFAULT))
def test_command_runs(cmd, expected, where, workspace):
    code, out = run_command(quick_variant(cmd), workspace)
    assert code == 0, f"{where}: `{cmd}` exited {code}\n{out[-3000:]}"
    assert "Traceback" not in out
    assert_verdict(cmd, expected, out)


@pytest.mark.parametrize("cmd,expected,where", _params([c for c in RUNNABLE if help_only(c[0])]))
def test_long_command_options_exist(cmd, expected, where):
    for argv in steps(quick_variant(cmd)):
        if argv[0] == "ptverify":
            assert_parses(argv[1:])


@pytest.mark.slow
@pytest.mark.parametrize("cmd,expected,where", _params(SLOW))
def test_command_runs_as_printed(cmd, expected, where, workspace):
    code, out = run_command(cmd, workspace)
    assert code == 0, f"{where}: `{cmd}` exited {code}\n{out[-3000:]}"
    assert_verdict(cmd, expected, out)


def test_quick_variants_keep_the_command():
    """A quick variant changes sizes only: the same command and the same option names."""
    for cmd, _, _ in RUNNABLE:
        q = quick_variant(cmd)
        if q != cmd:
            a = [argv[:2] for argv in steps(cmd)]
            b = [argv[:2] for argv in steps(q)]
            assert a == b, (cmd, q)
            names = lambda s: {t for t in s.split() if t.startswith("--")}  # noqa: E731
            assert names(cmd) <= names(q), (cmd, q)


def _sections(text: str) -> dict[str, str]:
    """Command name -> its section of docs/cli.md (a heading may name several commands)."""
    parts = re.split(r"^(## .*)$", text, flags=re.M)
    out = {}
    for head, body in zip(parts[1::2], parts[2::2]):
        for name in re.findall(r"`ptverify ([a-z][a-z -]*?)(?: [A-Z][^`]*)?`", head):
            out[name.strip()] = body
    return out


def test_cli_md_documents_every_command_and_option():
    """docs/cli.md has a section per command naming each of its options."""
    import typer

    from verify.cli import app
    with open(os.path.join(ROOT, "docs", "cli.md"), encoding="utf-8") as fh:
        text = fh.read()
    sections = _sections(text)
    shared = text[:text.index("## Where outputs go")]

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, path + [name])
        else:
            yield path, cmd
    found = 0
    for path, cmd in walk(typer.main.get_command(app), []):
        name = " ".join(path)
        assert name in sections, f"docs/cli.md: no section for `ptverify {name}`"
        for p in cmd.params:
            for opt in [o for o in p.opts if o.startswith("-")] or []:
                word = re.compile(rf"(?<![\w-]){re.escape(opt)}(?![\w-])")
                assert word.search(sections[name]) or word.search(shared), \
                    f"docs/cli.md: `ptverify {name}` does not document {opt}"
            found += 1
    assert found >= 40


def _json_blocks(rel: str) -> list:
    with open(os.path.join(ROOT, rel), encoding="utf-8") as fh:
        return [json.loads(b) for b in re.findall(r"```json\n(.*?)```", fh.read(), re.S)]


def test_format_examples_in_docs_are_accepted_by_both_readers(tmp_path):
    """The model and dataset printed in docs/formats.md load with the producers' loader and with
    the trusted checker's reader, and ``check`` decides them."""
    from constructions.model import dataset_from_json, model_from_json
    from verify.checker.inputs import dataset_from_obj, model_from_obj
    blocks = _json_blocks("docs/formats.md")
    models = [b for b in blocks if b.get("format") == "ptverify-model/1"]
    datasets = [b for b in blocks if b.get("format") == "ptverify-dataset/1"]
    assert models and datasets
    m = model_from_json(models[0])
    model_from_obj(models[0])
    dataset_from_json(datasets[0], d=m.d)
    dataset_from_obj(datasets[0], m.d)
    (tmp_path / "m.json").write_text(json.dumps(models[0]))
    (tmp_path / "d.json").write_text(json.dumps(datasets[0]))
    code, out = _main(["check", "--model", "m.json", "--dataset", "d.json", "--timeout", "20"], tmp_path)
    assert code == 0, out
    assert re.search(r"^check: (proved|memorized|unknown)\b", out, re.M), out


def _same_up_to_float_rounding(a, b, path="") -> Optional[str]:
    """None when two JSON values are equal, except binary64 numbers, which may differ by a few ulps
    (float64 forward passes: numpy's exp is vectorized differently on different CPUs); else where."""
    if isinstance(a, float) and isinstance(b, float):
        return None if abs(a - b) <= 1e-13 * max(abs(a), abs(b), 1e-300) else f"{path}: {a!r} != {b!r}"
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{path}: keys {list(a)} != {list(b)}"
        return next((w for k in a for w in [_same_up_to_float_rounding(a[k], b[k], f"{path}.{k}")] if w), None)
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} != {len(b)} entries"
        return next((w for i, (x, y) in enumerate(zip(a, b))
                     for w in [_same_up_to_float_rounding(x, y, f"{path}[{i}]")] if w), None)
    return None if a == b else f"{path}: {a!r} != {b!r}"


def test_examples_are_what_build_py_writes(tmp_path):
    """examples/build.py rebuilds every shipped model and dataset: byte for byte, except the last
    digits of targets that a float64 forward pass planted (numpy's exp differs by an ulp between
    CPUs), which must then agree to 1e-13 relative, everything else exactly."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    subprocess.run([sys.executable, os.path.join(ROOT, "examples", "build.py"), str(tmp_path)], check=True, env=env,
                   timeout=300)
    built = sorted(os.path.relpath(p, tmp_path) for p in glob.glob(str(tmp_path / "*" / "*")))
    shipped = sorted(os.path.relpath(p, os.path.join(ROOT, "examples"))
                     for p in glob.glob(os.path.join(ROOT, "examples", "*", "*")))
    assert built == shipped
    for rel in built:
        with open(tmp_path / rel, "rb") as a, open(os.path.join(ROOT, "examples", rel), "rb") as b:
            x, y = a.read(), b.read()
        if x != y:
            assert rel.endswith(".json"), rel
            assert _same_up_to_float_rounding(json.loads(x), json.loads(y), rel) is None, \
                _same_up_to_float_rounding(json.loads(x), json.loads(y), rel)


def test_examples_readme_lists_every_example_file():
    with open(os.path.join(ROOT, "examples", "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    for path in glob.glob(os.path.join(ROOT, "examples", "*", "*")):
        rel = os.path.relpath(path, ROOT)
        assert rel in text, f"examples/README.md never uses {rel}"


def test_report_commands_run(workspace):
    """Every command a generated report.md prints runs: one that names the run's result files
    (``replay``, the trusted checker) from the report's folder, beside them; the others (the
    claims' commands on examples/) from the repository root."""
    code, out = _main(["reproduce", "--quick", "--only", "L1,E-witness", "--out", "ptverify-out"], workspace)
    assert code == 0, out
    folder = workspace / "ptverify-out"
    with open(folder / "report.md", encoding="utf-8") as fh:
        found = commands_in_markdown(fh.read())
    cmds = list(dict.fromkeys(c for c, _ in found if not is_synopsis(c)))
    replays = [c for c in cmds if any(os.path.isfile(folder / t) for t in c.split() if t.endswith(".json"))]
    assert len([c for c in replays if c.startswith("ptverify replay ")]) >= 2, cmds
    registered = {c for c, _, _ in registry_commands()}
    for cmd in cmds:
        if cmd in registered:
            continue                       # run by test_command_runs / test_command_runs_as_printed
        if help_only(cmd) or (cmd.startswith("ptverify reproduce") and quick_variant(cmd) == cmd
                              and "--quick" not in cmd):
            for argv in steps(quick_variant(cmd)):
                assert_parses(argv[1:])
            continue
        code, out = run_command(quick_variant(cmd), folder if cmd in replays else workspace)
        assert code == 0, f"report.md: `{cmd}` exited {code}\n{out[-2000:]}"


def test_readme_claims_table_is_the_registry(tmp_path):
    """README.md's claims table is exactly what ``ptverify claims --markdown`` prints."""
    code, out = _main(["claims", "--markdown"], tmp_path)
    assert code == 0
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    assert out.strip() in readme, "README.md: regenerate the claims table with `ptverify claims --markdown`"
