"""The import graph of fp, redrawn from the source: no cycles, no import from a lower layer up into
the engine or the tools, plugins on the public API only,
and a family of prefixed modules made one package.

Edges are every ``import``/``from ... import`` in a module, function-level ones included, except
those under ``if TYPE_CHECKING:`` (annotations only, never executed).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"fp": ROOT / "framework" / "fp", "fp_builtins": ROOT / "plugins" / "fp_builtins"}

#: what a plugin may import from fp: the facade and the contract modules (CONTRIBUTING.md)
PLUGIN_API = ("fp", "fp.errors", "fp.nn", "fp.attention", "fp.run", "fp.measure", "fp.data.dataset",
              "fp.data", "fp.schedule", "fp.hookspecs", "fp.validation", "fp.discover")

#: layers, lowest first; a module imports only from its own layer or those below it
LAYERS = (
    ("contract", ("fp.errors", "fp.device", "fp.precision", "fp.atomic", "fp.nn", "fp.attention", "fp.validation", "fp.hookspecs", "fp.run",
                  "fp.measure", "fp.data.dataset", "fp.schedule", "fp.discover", "fp.registry", "fp.gin_adapter",
                  "fp.data")),
    ("host", ("fp.manager",)),
    ("scoring and pruning", ("fp.timing", "fp.scoring", "fp.pruning")),
    ("config", ("fp.config",)),
    ("engine", ("fp.engine",)),
    ("tools", ("fp.tools",)),
    ("command line and facade", ("fp.cli", "fp")),
)

def module_files() -> dict[str, Path]:
    modules = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = package.split(".") + list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def owner(name: str) -> str | None:
    """The module of ours that ``name`` (a module or a module's attribute) lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            # `from fp import hookspecs` imports the submodule; `from fp import score` the package
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                     for a in node.names]
        else:
            continue
        found.update(target for target in map(owner, names) if target and target != module)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def layer_of(module: str) -> int | None:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    return best[0] if best else None


def test_the_graph_is_read_from_the_code():
    assert "fp.engine.trainer" in GRAPH["fp.engine.experiment"]
    assert "fp.nn" in GRAPH["fp.scoring.gradients"]
    assert "fp.config" in GRAPH["fp"]  # a function-level import counts
    assert "fp.manager" not in GRAPH["fp.run"]  # a TYPE_CHECKING one does not


def test_there_are_no_import_cycles():
    assert cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith("fp_builtins")))
def test_no_module_imports_from_a_higher_layer(module):
    rank = layer_of(module)
    assert rank is not None, f"{module} belongs to no layer of LAYERS"
    upward = {target: LAYERS[layer_of(target)][0] for target in GRAPH[module]
              if not target.startswith("fp_builtins") and layer_of(target) > rank}
    assert upward == {}, f"{module} ({LAYERS[rank][0]}) imports from higher layers"


def test_plugins_use_only_the_public_api_and_their_own_package():
    wrong = {}
    for module in (m for m in MODULES if m.startswith("fp_builtins.")):
        own = ".".join(module.split(".")[:2])  # fp_builtins.<package or module>
        for target in GRAPH[module]:
            if target.startswith("fp_builtins"):
                allowed = target == own or target.startswith(own + ".")
            else:
                allowed = any(target == api or target.startswith(api + ".") for api in PLUGIN_API)
            if not allowed:
                wrong.setdefault(module, []).append(target)
    assert wrong == {}


def families(folder: Path) -> dict[str, list[str]]:
    """Modules of one folder grouped by their first word (``gpu_run``, ``gpu_parts`` -> ``gpu``)."""
    found: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.py")):
        if path.stem != "__init__":
            found.setdefault(path.stem.lstrip("_").split("_")[0], []).append(path.stem)
    return found


def test_a_family_of_modules_is_a_package():
    """The rule that cuts fp into packages: modules sharing a first word (``sweep``,
    ``sweep_grid``, ``sweep_jobs``) are one concept, so they are one package (``sweep/``: its
    ``__init__``, ``grid``, ``jobs``), never siblings told apart by a prefix."""
    folders = [SOURCES["fp"], *(p for p in SOURCES["fp"].rglob("*") if p.is_dir()
                                and (p / "__init__.py").exists())]
    prefixed = {str(folder.relative_to(ROOT)): group for folder in folders
                for group in families(folder).values() if len(group) > 1}
    assert prefixed == {}


def test_the_family_rule_finds_a_family(tmp_path):
    for name in ("gpu_run.py", "gpu_parts.py", "grid.py", "__init__.py"):
        (tmp_path / name).write_text("")
    assert families(tmp_path) == {"gpu": ["gpu_parts", "gpu_run"], "grid": ["grid"]}
