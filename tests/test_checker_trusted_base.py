"""The trusted base stands alone: verify/checker/ imports only the standard library and numpy,
and ``python -m verify.checker`` runs from a copy of ``verify/__init__.py`` and
``verify/checker/`` with every other package blocked."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKER = os.path.join(ROOT, "verify", "checker")


def _imports(path: str) -> list[tuple[str, int]]:
    """(top-level module, relative level) of every import in a file, at any depth."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name.split(".")[0], 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append(((node.module or "").split(".")[0], node.level))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant):
                out.append((str(arg.value).split(".")[0], 0))
    return out


def test_checker_imports_only_stdlib_and_numpy():
    allowed = set(sys.stdlib_module_names) | {"numpy", "__future__"}
    bad = []
    files = [os.path.join(CHECKER, f) for f in sorted(os.listdir(CHECKER)) if f.endswith(".py")]
    assert len(files) >= 5
    for path in files:
        for mod, level in _imports(path):
            if level == 0 and mod not in allowed:
                bad.append(f"{os.path.basename(path)} imports {mod}")
            if level > 1:
                bad.append(f"{os.path.basename(path)} imports from outside verify/checker (level {level})")
    assert not bad, bad


def test_verify_package_init_is_import_free():
    mods = _imports(os.path.join(ROOT, "verify", "__init__.py"))
    assert all(m in ("__future__",) for m, _ in mods), mods


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    """Result files written by the real producers (through the CLI)."""
    out = tmp_path_factory.mktemp("results")
    cmds = [["prove", "limitation", "--d", "3", "--seed", "0", "--json", str(out / "l1.json")]]
    for cmd in cmds:
        r = subprocess.run([sys.executable, "-m", "verify", *cmd], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
    return sorted(out.glob("*.json"))


def test_isolated_checker_accepts_produced_results(isolated_checker, produced):
    r = isolated_checker(*produced)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "blocked import" not in r.stderr
    assert r.stdout.count("OK") == len(produced)


def test_isolated_checker_rejects_a_tampered_result(isolated_checker, produced, tmp_path):
    res = json.loads(open(produced[0]).read())
    res["question"]["tolerance"] = "1/10"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(res))
    r = isolated_checker(bad)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAILED" in r.stdout and "Traceback" not in r.stderr


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00garbage", b"[" * 100000, b'{"a": NaN}',
                                     b"1" * 5000, b'"just a string"'])
def test_isolated_checker_never_tracebacks(isolated_checker, tmp_path, content):
    f = tmp_path / "hostile.json"
    f.write_bytes(content)
    r = isolated_checker(f, tmp_path / "missing.json", tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and r.stdout.count("FAILED") == 3
