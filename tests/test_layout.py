"""The package's shape (README, "The code, in reading order"): the commands at the top of
infini_jax/, the machinery in folders by role, each importing only from the layers below it
(function-level imports included), no import cycle between modules, files under 500 lines."""

import ast
import glob
import os
from collections import defaultdict

from tests.conftest import ROOT

# Lowest first. A module may import from its own layer and the ones before it; the commands
# (top-level modules not listed here, and bench/) may import anything below them.
LAYERS = [
    ("errors", "defaults"),
    ("ops",),
    ("storage", "cli"),
    ("model",),
    ("data",),
    ("sections", "config"),
    ("parallel",),
    ("interop",),
    ("eval",),
    ("training",),
    ("planning",),
    ("sweeps",),
]
COMMANDS = ("train", "evaluate", "generate", "convert", "lm_eval", "plan", "sweep", "show")
MAX_LINES = 500


def _rank(room: str) -> int:
    for i, names in enumerate(LAYERS):
        if room in names:
            return i
    return len(LAYERS)  # a command


def _modules() -> dict[str, str]:
    """Dotted module name → path, for every module of the package."""
    out = {}
    for path in glob.glob(os.path.join(ROOT, "infini_jax", "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        out[rel.removesuffix(".__init__")] = path
    return out


def _imports(path: str, modules: dict[str, str]) -> set[str]:
    """The package modules `path` imports (anywhere in it), as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("infini_jax"):
                continue
            for alias in node.names:  # `from infini_jax.x import y`: y may be a module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("infini_jax")}
    return {m for m in found if m in modules and m != "infini_jax"}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_top_level_module_is_a_command_or_a_base_layer():
    tops = {
        os.path.basename(p)[:-3]
        for p in glob.glob(os.path.join(ROOT, "infini_jax", "*.py"))
        if not p.endswith("__init__.py")
    }
    base = {name for names in LAYERS for name in names}
    assert tops <= base | set(COMMANDS), sorted(tops - base - set(COMMANDS))
    for name in COMMANDS:
        source = open(os.path.join(ROOT, "infini_jax", f"{name}.py")).read()
        assert "def main(" in source and '__name__ == "__main__"' in source, name


def test_no_module_imports_from_a_higher_layer():
    modules = _modules()
    upward = []
    for module, path in modules.items():
        room = _room(module)
        for target in _imports(path, modules):
            if _room(target) != room and _rank(_room(target)) > _rank(room):
                upward.append(f"{module} imports {target}")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycle_between_modules():
    modules = _modules()
    graph = {m: _imports(p, modules) - {m} for m, p in modules.items()}
    # A package imports its submodules' names: the package → submodule edge is its face, not
    # a dependency of the submodule, so a submodule importing its package is what counts.
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    state, cycles = defaultdict(int), []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state[nxt] == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif state[nxt] == 0:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_files_stay_under_500_lines():
    long = [
        f"{os.path.relpath(p, ROOT)}: {n}"
        for p in glob.glob(os.path.join(ROOT, "infini_jax", "**", "*.py"), recursive=True)
        if (n := sum(1 for _ in open(p))) >= MAX_LINES
    ]
    assert not long, long
