"""The package's layout rules, kept by the suite: stage packages, public seams, small modules, no cycles.

Read from the source with ``ast`` (nothing is imported), so a rule broken anywhere fails here by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "anonray"
STAGE_PACKAGES = ("ingest", "decode", "detect", "track", "render", "qa", "records", "store", "runtime",
                  "corrections")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
MAX_DOCSTRING_LINES = 12
LAZY_IMPORTS_ALLOWED = {
    "anonray/cli.py": "each command loads its stage only when it runs: `anonray --help` and `verify` stay light",
    "anonray/fault_hooks.py": "test support is loaded only where a test switched the hooks on",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def all_sources() -> list[Path]:
    return product_modules() + sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (ROOT / relative).with_suffix(".py").is_file() or (ROOT / relative / "__init__.py").is_file()


def top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module loads: its body, try blocks and ifs, but not ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.append(node)
            elif isinstance(node, ast.If) and not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
    visit(tree.body)
    return found


def imported_modules(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The anonray modules an import statement loads (a package's __init__ included)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        names = [base] + [f"{base}.{a.name}" for a in node.names if is_module(f"{base}.{a.name}")]
    loaded = set()
    for name in names:
        if name.split(".")[0] != "anonray":
            continue
        parts = name.split(".")
        loaded.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))
    return sorted(n for n in loaded if is_module(n))


def test_stage_packages_hold_modules():
    for name in STAGE_PACKAGES:
        folder = PACKAGE / name
        assert (folder / "__init__.py").is_file(), f"anonray/{name}/ is not a package"
        assert [p for p in folder.glob("*.py") if p.name != "__init__.py"], f"anonray/{name}/ has no module"


def test_no_module_imports_a_private_name():
    offences = []
    for path in all_sources():
        tree = parse(path)
        modules_bound = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("anonray"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        offences.append(f"{path.relative_to(ROOT)}: from {node.module} import {alias.name}")
                    if is_module(f"{node.module}.{alias.name}"):
                        modules_bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("anonray") and alias.asname:
                        modules_bound[alias.asname] = alias.name
        for node in ast.walk(tree):
            used = None
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                used = (node.value.id, node.attr)  # module._name
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "setattr" \
                    and len(node.args) >= 2 and isinstance(node.args[0], ast.Name) \
                    and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                used = (node.args[0].id, node.args[1].value)  # monkeypatch.setattr(module, "_name", ...)
            if used and used[0] in modules_bound and used[1].startswith("_") and not used[1].startswith("__"):
                offences.append(f"{path.relative_to(ROOT)}:{node.lineno}: {modules_bound[used[0]]}.{used[1]}")
    assert not offences, "private names used across modules:\n" + "\n".join(offences)


def test_no_import_cycle_at_module_level():
    graph = {module_name(p): {m for node in top_level_imports(parse(p)) for m in imported_modules(node)}
             - {module_name(p)} for p in product_modules()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name):] + [name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for target in sorted(graph.get(name, ())):
            if not name.startswith(target + "."):  # a package's __init__ runs before its modules anyway
                visit(target, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_product_modules_import_anonray_only_at_the_top():
    offences = []
    for path in product_modules():
        relative = str(path.relative_to(ROOT))
        if relative in LAZY_IMPORTS_ALLOWED:
            continue
        functions = [n for n in ast.walk(parse(path)) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        for node in (n for f in functions for n in ast.walk(f)):
            if isinstance(node, ast.Import | ast.ImportFrom) and imported_modules(node):
                offences.append(f"{relative}:{node.lineno}")
    assert not offences, "anonray imported inside a function (a cycle dodged?):\n" + "\n".join(offences)


def test_modules_functions_and_docstrings_stay_small():
    offences = []
    for path in product_modules():
        relative, source = path.relative_to(ROOT), path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            offences.append(f"{relative}: {len(source.splitlines())} lines")
        tree = ast.parse(source)
        doc = ast.get_docstring(tree, clean=False)
        if doc and len(doc.splitlines()) > MAX_DOCSTRING_LINES:
            offences.append(f"{relative}: module docstring of {len(doc.splitlines())} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    offences.append(f"{relative}:{node.lineno}: {node.name} has {length} lines")
    assert not offences, "\n".join(offences)


def test_test_support_stays_out_of_the_product_modules():
    offences = []
    for path in product_modules():
        relative = path.relative_to(ROOT)
        if relative.parts[1] == "testing" or str(relative) in LAZY_IMPORTS_ALLOWED:
            continue
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Import | ast.ImportFrom) and "anonray.testing" in imported_modules(node):
                offences.append(str(relative))
    assert not offences, "product modules importing anonray.testing: " + ", ".join(offences)
