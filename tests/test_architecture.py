"""ARCHITECTURE.md's import rules, checked on the source tree.

1. No module imports another module's private name (``from .x import _y``): what modules
   share lives in ``interestflow._utils`` (or a package's own private module) under a public
   name. Importing a private *module* (``from . import _native``, ``from ._utils import
   check_int``) is how those internals are reached, and is allowed.
2. ``interestflow.kernels`` does not import the pipeline's stages (only ``interestflow``'s
   internals and its backend resolver): kernels sit below the stages, never beside them.
"""

import ast
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"interestflow": ROOT / "engine", "interestflow.kernels": ROOT / "kernels"}
KERNELS_MAY_IMPORT = {"interestflow", "interestflow._utils", "interestflow.resolve",
                      "interestflow.kernels"}


def _modules():
    """(dotted module name, path) of every source module of the distribution."""
    for pkg, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            if pkg == "interestflow" and rel.parts[0] == "kernels":
                continue  # engine/kernels is a development link to kernels/
            parts = [p for p in rel.parts if p != "__init__"]
            yield ".".join([pkg, *parts]), path


def _is_module(dotted: str) -> bool:
    """Whether ``dotted`` names a module or package of the distribution (a source file or
    folder, or a compiled extension such as ``interestflow._native`` where it was built)."""
    built = re.findall(r"nanobind_add_module\((\w+)", (ROOT / "CMakeLists.txt").read_text())
    if dotted in {f"interestflow.{name}" for name in built}:
        return True
    try:
        if importlib.util.find_spec(dotted) is not None:
            return True
    except (ImportError, ValueError):
        pass
    for pkg, root in PACKAGES.items():
        if dotted == pkg:
            return True
        if dotted.startswith(pkg + "."):
            rel = Path(*dotted[len(pkg) + 1:].split("."))
            if (root / rel).with_suffix(".py").is_file() or (root / rel).is_dir() \
                    or any((root / rel).parent.glob(rel.name + ".*.so")):
                return True
    return False


def _imports(module: str, path: Path):
    """(line, imported-from module, name) of every ``from X import name`` inside the
    distribution, relative imports resolved."""
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = module.split(".") if is_pkg else module.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            src = ".".join(base + ([node.module] if node.module else []))
        else:
            src = node.module or ""
        if src == "interestflow" or src.startswith("interestflow."):
            for alias in node.names:
                yield node.lineno, src, alias.name


def test_no_module_imports_another_modules_private_name():
    bad = []
    for module, path in _modules():
        for line, src, name in _imports(module, path):
            dunder = name.startswith("__") and name.endswith("__")  # __version__
            if name.startswith("_") and not dunder and not _is_module(f"{src}.{name}") \
                    and src != module:
                bad.append(f"{path.relative_to(ROOT)}:{line}: from {src} import {name}")
    assert not bad, ("private names imported across modules (move them to "
                     "interestflow._utils or make them public):\n" + "\n".join(bad))


def test_kernels_import_no_pipeline_stage():
    bad = []
    for module, path in _modules():
        if not module.startswith("interestflow.kernels"):
            continue
        for line, src, _ in _imports(module, path):
            if not any(src == ok or src.startswith("interestflow.kernels.")
                       for ok in KERNELS_MAY_IMPORT):
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {src}")
    assert not bad, "kernels import pipeline stages:\n" + "\n".join(bad)


def test_the_checker_sees_a_private_import(tmp_path):
    """The rule can fail: a planted private import is found."""
    mod = tmp_path / "m.py"
    mod.write_text("from .segments import _unit\nfrom ._utils import check_int\n"
                   "from . import _native\n")
    found = [(src, name) for _, src, name in _imports("interestflow.m", mod)]
    assert found == [("interestflow.segments", "_unit"), ("interestflow._utils", "check_int"),
                     ("interestflow", "_native")]
    assert not _is_module("interestflow.segments._unit")
    assert _is_module("interestflow._utils")
