"""The layout of ``constructions/``: it never imports ``verify``, every module states its public
names in ``__all__``, no private name crosses a module boundary, and functions stay short.

Imports are read with :mod:`ast` at any depth (inside functions too), so a lazy import counts.
"""
from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "constructions"
MODULES = sorted(PACKAGE.rglob("*.py"))
#: the style's limit on one function (lines from ``def`` to its last line)
MAX_FUNCTION_LINES = 60


def _module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, root: pathlib.Path = ROOT):
    """``(line, module, names)`` of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, []
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield node.lineno, module, [a.name for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__"):
            for a in node.args[:1]:
                if isinstance(a, ast.Constant) and isinstance(a.value, str):
                    yield node.lineno, a.value, []


def test_constructions_never_imports_verify():
    offenders = [f"{p.relative_to(ROOT)}:{line}: {module or 'a relative import above the package'} {names}"
                 for p in MODULES for line, module, names in _imports(p)
                 if module in ("", "verify") or module.startswith("verify.")]
    assert len(MODULES) > 5
    assert offenders == [], "constructions/ must not import verify/: " + "; ".join(offenders)


def test_the_import_reader_sees_lazy_and_relative_imports(tmp_path):
    """The reader above has teeth: an import inside a function, and a relative one, are read."""
    pkg = tmp_path / "constructions"
    pkg.mkdir()
    f = pkg / "x.py"
    f.write_text("from .model import Model\nfrom .. import verify\n\n"
                 "def g():\n    from verify.result import Result\n    return Result\n")
    found = [(m, n) for _, m, n in _imports(f, tmp_path)]
    assert ("constructions.model", ["Model"]) in found and ("verify.result", ["Result"]) in found
    assert ("", ["verify"]) in found


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_every_module_states_its_public_names(path):
    module = importlib.import_module(_module_name(path))
    names = getattr(module, "__all__", None)
    assert isinstance(names, list) and names, f"{path.name}: no __all__"
    assert len(set(names)) == len(names), f"{path.name}: __all__ repeats a name"
    assert [n for n in names if not hasattr(module, n)] == [], f"{path.name}: __all__ names what is not there"
    assert [n for n in names if n.startswith("_")] == [], f"{path.name}: a private name in __all__"
    tree = ast.parse(path.read_text())
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    defined += [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
    public = [n for n in defined if not n.startswith("_")]
    assert [n for n in public if n not in names] == [], f"{path.name}: public names missing from __all__"


def _python_files():
    for top in ("constructions", "verify", "tests", "proofs"):
        yield from sorted((ROOT / top).rglob("*.py"))


def test_no_private_name_of_constructions_is_imported_elsewhere():
    """A name ``_x`` of a constructions module is used only inside that module."""
    offenders = []
    for path in _python_files():
        for line, module, names in _imports(path):
            if module.startswith("constructions") and module != _module_name(path):
                offenders += [f"{path.relative_to(ROOT)}:{line}: {module}.{n}" for n in names if n.startswith("_")]
    assert offenders == [], "; ".join(offenders)


def test_the_package_reexports_its_main_names():
    import constructions
    for name in ("Model", "Dataset", "load_model", "model_from_json", "dataset_from_json", "generic_forward",
                 "forward_exact", "forward_rational", "forward_torch", "forward_z3", "forward_sympy",
                 "build_network", "apply_lora"):
        assert name in constructions.__all__ and hasattr(constructions, name), name


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_functions_are_short(path):
    tree = ast.parse(path.read_text())
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 >= MAX_FUNCTION_LINES]
    assert long == [], f"{path.name}: " + ", ".join(long)
