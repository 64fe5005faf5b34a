"""The import graph says what docs/DESIGN.md says: the lab (bridge/dev/) sits outside the
service. Imports are read with `ast` (every form: `import a.b as c`, `from a import b`,
relative imports, `importlib.import_module("…")`), then checked again at run time in a fresh
interpreter, which also sees what is imported indirectly."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "bridge"
LAB = PACKAGE / "dev"
# The one place the service may reach the lab: lazily, inside these CLI handlers.
LAZY_LAB_IMPORTS = {("bridge/cli.py", "_simulate"), ("bridge/cli.py", "_demo")}


@dataclass(frozen=True)
class Import:
    file: str  # relative to the repository, e.g. bridge/cli.py
    line: int
    module: str  # absolute dotted name of what is (or may be) imported
    function: str | None  # the innermost enclosing function, None at module level


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Iterator[Import]:
    """Every module `path` imports, or may import: for `from a import b`, both `a` and `a.b`
    (b may be a submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    file = str(path.relative_to(PACKAGE.parent))

    def visit(node: ast.AST, function: str | None) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            inner = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = child.name
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(file, child.lineno, alias.name, inner)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                yield Import(file, child.lineno, base, inner)
                for alias in child.names:
                    yield Import(file, child.lineno, f"{base}.{alias.name}", inner)
            elif isinstance(child, ast.Call) and _is_dynamic_import(child.func):
                argument = child.args[0] if child.args else None
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    yield Import(file, child.lineno, argument.value, inner)
            yield from visit(child, inner)

    yield from visit(tree, None)


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def modules(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def test_no_service_module_imports_the_lab() -> None:
    offending = [
        f"{i.file}:{i.line} imports {i.module}" + (f" (in {i.function})" if i.function else "")
        for path in modules(PACKAGE)
        if not path.is_relative_to(LAB)
        for i in imports(path)
        if within(i.module, "bridge.dev") and (i.file, i.function) not in LAZY_LAB_IMPORTS
    ]
    assert offending == []


def test_the_cli_reaches_the_lab_only_from_its_lab_commands() -> None:
    """The exception above is used (so it is not stale) and nowhere wider."""
    lazy = {
        (i.file, i.function) for i in imports(PACKAGE / "cli.py") if within(i.module, "bridge.dev")
    }
    assert lazy == LAZY_LAB_IMPORTS


def test_the_simulators_import_nothing_of_the_venue_modules() -> None:
    """They verify the bridge's signatures with their own code (wire.py), not the bridge's."""
    offending = [
        f"{i.file}:{i.line} imports {i.module}"
        for path in modules(LAB / "simulator")
        for i in imports(path)
        if within(i.module, "bridge.venues")
    ]
    assert offending == []


def loaded_after(*statements: str) -> list[str]:
    """The `bridge.*` modules a fresh interpreter holds after running `statements`."""
    code = "\n".join(
        [
            "import json, sys",
            *statements,
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('bridge'))))",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    names: list[str] = json.loads(done.stdout)
    return names


def test_importing_the_service_loads_no_lab_module() -> None:
    loaded = loaded_after("import bridge.app", "import bridge.cli", "bridge.cli._parser()")
    assert "bridge.app" in loaded
    assert [m for m in loaded if within(m, "bridge.dev")] == []


def test_importing_the_simulators_loads_no_venue_module() -> None:
    loaded = loaded_after(
        "import bridge.dev.simulator.aquanow",
        "import bridge.dev.simulator.satori",
        "import bridge.dev.simulator.command",
    )
    assert "bridge.dev.simulator.satori" in loaded
    assert [m for m in loaded if within(m, "bridge.venues")] == []
