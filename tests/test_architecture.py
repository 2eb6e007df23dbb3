"""Dependencies point one way: no import cycle among the modules of ``inf30`` and ``infmae``, and no
module imports another module's ``_private`` names. Read from the source with ``ast`` (function-level
imports included: a lazy import is still a dependency)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("inf30", "infmae")


def _modules() -> dict[str, Path]:
    """Every module of the packages: dotted name -> file."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = f
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported project module, names taken from it, line) for each import statement of ``name``."""
    is_pkg = path.name == "__init__.py"
    base = name if is_pkg else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] in PACKAGES]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] not in PACKAGES:
                continue
            names = [a.name for a in node.names]
            # `from inf30 import plots`: the submodules named are the dependencies
            subs = [n for n in names if f"{target}.{n}" in MODULES]
            out += [(f"{target}.{n}", [], node.lineno) for n in subs]
            rest = [n for n in names if n not in subs]
            if rest or not subs:
                out.append((target, rest, node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for target, _names, _line in _imports(name, path):
            while target not in MODULES and "." in target:  # `import inf30.scrape.core.x` -> nearest module
                target = target.rpartition(".")[0]
            if target in MODULES and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    """The checker itself: a planted a -> b -> c -> a cycle is reported, a chain is not."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_import_reader_sees_relative_and_lazy_imports(tmp_path):
    """The reader resolves relative imports and finds imports inside functions."""
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from .archive import _budget\n    import inf30.video\n")
    got = {(t, tuple(n)) for t, n, _ in _imports("inf30.x", f)}
    assert got == {("inf30.archive", ("_budget",)), ("inf30.video", ())}


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_no_private_names_imported_across_modules():
    """``from inf30.build import _locked`` (or ``import x`` then ``x._y``) couples two modules through a
    name that one of them may change at will; shared helpers are public."""
    bad = []
    for name, path in MODULES.items():
        for target, names, line in _imports(name, path):
            bad += [f"{name}:{line} imports {target}.{n}" for n in names if n.startswith("_") and n != "__version__"]
        tree = ast.parse(path.read_text())
        aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                   for a in node.names
                   if (isinstance(node, ast.Import) and a.name.split(".")[0] in PACKAGES)
                   or (isinstance(node, ast.ImportFrom) and f"{node.module}.{a.name}" in MODULES)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in aliases):
                bad.append(f"{name}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert bad == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("inf30")))
def test_every_inf30_module_imports(module):
    importlib.import_module(module)


def test_infmae_reads_datasets_through_inf30_dataset():
    """``infmae`` opens datasets through :mod:`inf30.dataset` only, not the publish/manifest internals."""
    reach = {f"{name} -> {t}.{n}" for name, path in MODULES.items() if name.startswith("infmae")
             for t, names, _l in _imports(name, path) if t in ("inf30.manifest", "inf30.publish")
             for n in names or ["*"] if n != "resolve_token"}  # the Hub token rule, not a dataset read
    assert reach == set()
