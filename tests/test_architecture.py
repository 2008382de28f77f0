"""The package's imports run one way: the guide modules are facades over private rooms,
nothing private imports a guide module, and no import circle closes anywhere.

Read from the source with ``ast``, so that every import counts: at the top of a module,
under ``if TYPE_CHECKING:`` and inside functions alike.
"""

from __future__ import annotations

import ast
import graphlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = "peak_resilience"
SOURCE = Path(__file__).resolve().parents[1] / "python" / ROOT

#: The modules the guide names: each is a docstring, imports and ``__all__``. So is the
#: package itself.
GUIDE_MODULES = ("resilience", "rate_limiter", "metrics", "resilience_helpers", "config", "http")
FACADES = frozenset({ROOT, *(f"{ROOT}.{name}" for name in GUIDE_MODULES)})


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    #: Every module of the package this one imports (with the packages they run first).
    imports: set[str] = field(default_factory=set)
    #: Those imported inside a function.
    imports_in_functions: set[str] = field(default_factory=set)

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def is_private(self) -> bool:
        return any(part.startswith("_") for part in self.name.split(".")[1:])


def _module_name(path: Path) -> str:
    parts = [ROOT, *path.relative_to(SOURCE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _read_package() -> dict[str, Module]:
    modules = {}
    for path in sorted(SOURCE.rglob("*.py")):
        name = _module_name(path)
        modules[name] = Module(name, path, ast.parse(path.read_text(), str(path)))
    return modules


MODULES = _read_package()
#: The native extension: a module of the package without Python source.
KNOWN = set(MODULES) | {f"{ROOT}._native"}


def _with_parents(name: str) -> set[str]:
    """``name`` and the packages Python runs before it (the package itself runs first
    whatever is imported, so it is no edge)."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts) + 1)}


def _targets(module: Module, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The package's modules one import statement runs."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.name.split(".")
            if not module.is_package:
                package = package[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, *([base] if base else [])])
        # ``from P import m`` runs module P.m when there is one; else it takes a name of P.
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in KNOWN else base
            for alias in node.names
        ]
    found: set[str] = set()
    for name in names:
        if name == ROOT or name.startswith(ROOT + "."):
            while name not in KNOWN and "." in name:
                name = name.rpartition(".")[0]
            found |= _with_parents(name) if name != ROOT else {ROOT}
    found.discard(module.name)
    return found


def _collect(module: Module, node: ast.AST, in_function: bool) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            targets = _targets(module, child)
            module.imports |= targets
            if in_function:
                module.imports_in_functions |= targets
        inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
        _collect(module, child, inside)


for _module in MODULES.values():
    _collect(_module, _module.tree, in_function=False)


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, module in MODULES.items():
        imports = module.imports
        if name == ROOT:
            # The package's own facade, which every import runs first, re-exports its
            # modules: that is not a dependency of theirs on it.
            imports = set()
        graph[name] = imports
    return graph


def test_the_package_is_read_whole() -> None:
    assert {f"{ROOT}.{name}" for name in GUIDE_MODULES} <= set(MODULES)
    assert f"{ROOT}._breaker" in MODULES[f"{ROOT}.resilience"].imports


def test_no_import_circle() -> None:
    try:
        graphlib.TopologicalSorter(_graph()).prepare()
    except graphlib.CycleError as circle:
        pytest.fail(f"import circle: {' -> '.join(reversed(circle.args[1]))}")


def test_nothing_private_imports_a_guide_module() -> None:
    upward = sorted(
        f"{name} -> {target}"
        for name, module in MODULES.items()
        if module.is_private
        for target in module.imports & FACADES
    )
    assert upward == []


#: Modules that import a backend's machinery inside the function that uses it, for
#: start-up time (issue 19): a memory object pays for neither Redis nor shared files. The
#: circle test above still counts these imports.
DEFERRED_FOR_START_UP = frozenset({f"{ROOT}._backends.place", f"{ROOT}._backends.redis.awaited"})


def test_no_module_of_the_package_is_imported_inside_a_function() -> None:
    # An import inside a function is for an optional dependency or start-up time, never
    # to get around a circle: the package's own modules are imported at the top.
    inside = sorted(
        f"{name} -> {target}"
        for name, module in MODULES.items()
        if name not in DEFERRED_FOR_START_UP
        for target in module.imports_in_functions
    )
    assert inside == []


def _lazy_table(statement: ast.stmt) -> dict[str, list[str]] | None:
    """The table of ``__getattr__ = lazy(__name__, {module: (names...)})``, else None."""
    if not (
        isinstance(statement, ast.Assign)
        and [getattr(t, "id", None) for t in statement.targets] == ["__getattr__"]
        and isinstance(statement.value, ast.Call)
        and getattr(statement.value.func, "id", None) == "lazy"
        and len(statement.value.args) == 2
        and getattr(statement.value.args[0], "id", None) == "__name__"
    ):
        return None
    return {m: list(names) for m, names in ast.literal_eval(statement.value.args[1]).items()}


def _is_type_checking_block(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.If)
        and getattr(statement.test, "id", None) == "TYPE_CHECKING"
        and not statement.orelse
        and all(isinstance(s, ast.ImportFrom) for s in statement.body)
    )


#: What makes a facade lazy, imported beside its names but not exported.
_LAZY_MACHINERY = {"TYPE_CHECKING", "lazy"}


@pytest.mark.parametrize("name", sorted(FACADES))
def test_a_guide_module_is_only_imports_and_all(name: str) -> None:
    # One exception, for import time (issue 19): a facade may import its names on first
    # use. It then lists them under ``if TYPE_CHECKING:`` and gives exactly the same
    # names, by module, to ``__getattr__ = lazy(__name__, {...})``.
    body = MODULES[name].tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    imported: set[str] = set()
    deferred: dict[str, list[str]] = {}
    exported: list[str] | None = None
    table: dict[str, list[str]] | None = None
    for statement in body:
        if isinstance(statement, ast.ImportFrom) and statement.module != "__future__":
            imported |= {alias.asname or alias.name for alias in statement.names}
        elif isinstance(statement, ast.ImportFrom):
            continue
        elif _is_type_checking_block(statement):
            for imports in statement.body:
                assert isinstance(imports, ast.ImportFrom) and imports.module
                deferred.setdefault(imports.module, []).extend(a.name for a in imports.names)
                imported |= {alias.asname or alias.name for alias in imports.names}
        elif (
            isinstance(statement, ast.Assign)
            and [getattr(t, "id", None) for t in statement.targets] == ["__all__"]
            and exported is None
        ):
            exported = list(ast.literal_eval(statement.value))
        elif table is None and (table := _lazy_table(statement)) is not None:
            continue
        else:
            pytest.fail(f"{name} line {statement.lineno}: a facade holds imports and __all__")
    assert exported is not None, f"{name} has no __all__"
    if table is not None or deferred:
        assert table == deferred, "the lazy table is what the facade imports for typing"
        imported -= _LAZY_MACHINERY
    assert sorted(exported) == sorted(imported), "__all__ is what the facade imports"


@pytest.mark.parametrize(
    "name", sorted(n for n, m in MODULES.items() if m.is_package and m.is_private)
)
def test_a_private_package_is_its_docstring(name: str) -> None:
    # A package's __init__ runs before any of its modules: one that imported them could
    # close a circle at run time that no module's own imports show.
    body = MODULES[name].tree.body
    assert len(body) == 1 and isinstance(body[0], ast.Expr), f"{name}: a docstring only"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_says_what_it_is(name: str) -> None:
    assert ast.get_docstring(MODULES[name].tree), f"{name} has no docstring"
