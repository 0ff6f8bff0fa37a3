"""The import rule of docs/ARCHITECTURE.md ("Layers"), checked on every import statement in the package, the ones inside
functions too: modeling imports nothing of ours; core imports only modeling; data imports core and modeling; a task
(pretrain, each finetune recipe) imports core, data, modeling and itself, never another task; only the entry points
(cli, demo, embed) compose tasks. And the module graph has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Source folder -> the package name it installs as (pyproject.toml [tool.setuptools] package-dir).
ROOTS = {"cmbert": "cmbert", "modeling": "cmbert.modeling", "pretrain": "cmbert.pretrain",
         "finetune": "cmbert.finetune"}
ENTRY_POINTS = {"cmbert", "cmbert.__main__", "cmbert.cli", "cmbert.demo", "cmbert.embed"}
OURS = ("cmbert", "modeling", "pretrain", "finetune", "configs")


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = [*ROOTS[rel.parts[0]].split("."), *rel.parts[1:]]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, list[tuple[str, int]]]:
    """Module -> [(imported module of ours, line)], every `import` and `from ... import` anywhere in its body; `from
    pkg import name` counts as `pkg.name` when that is a module of ours."""
    found = {}
    for folder in ROOTS:
        for path in sorted((REPO / folder).rglob("*.py")):
            found[module_name(path)] = (path, ast.parse(path.read_text(encoding="utf-8")))
    graph = {}
    for name, (path, tree) in found.items():
        edges = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in found else node.module
                           for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                raise AssertionError(f"{path}:{node.lineno}: relative import; write the absolute cmbert.* name")
            else:
                continue
            edges += [(t, node.lineno) for t in targets if t.split(".")[0] in OURS]
        graph[name] = edges
    return graph


def layer(module: str) -> str:
    """modeling, core, data, entry, or the task's package (cmbert.pretrain, cmbert.finetune.icd, ...)."""
    if module in ENTRY_POINTS:
        return "entry"
    parts = module.split(".")
    if parts[1] in ("modeling", "core", "data", "configs"):
        return parts[1]
    if parts[1] == "finetune" and len(parts) > 2:
        return ".".join(parts[:3])
    return ".".join(parts[:2])  # cmbert.pretrain, and cmbert.finetune's own __init__


ALLOWED = {"modeling": {"modeling"}, "core": {"modeling", "core"}, "data": {"modeling", "core", "data"}}


def test_every_import_names_the_cmbert_package():
    bare = [f"{m}:{line} imports {t}" for m, edges in imports().items() for t, line in edges
            if not t.startswith("cmbert")]
    assert not bare, "old top-level names (use cmbert.modeling, cmbert.pretrain, ...):\n" + "\n".join(bare)


def test_layers_and_no_task_imports_another():
    wrong = []
    for module, edges in imports().items():
        source = layer(module)
        if source == "entry":
            continue
        for target, line in edges:
            target_layer = layer(target)
            ok = ALLOWED.get(source, {"modeling", "core", "data", source})
            if target_layer not in ok and not (source == "cmbert.finetune" and target_layer.startswith(source)):
                wrong.append(f"{module}:{line} ({source}) imports {target} ({target_layer})")
    assert not wrong, "imports against the layer rule:\n" + "\n".join(wrong)


def test_no_import_cycle():
    graph = {m: sorted({t for t, _ in edges if t in imports_cache()}) for m, edges in imports_cache().items()}
    # A package's __init__ importing its own submodules is how a package exposes names, not a cycle between modules.
    graph = {m: [t for t in ts if not t.startswith(m + ".")] for m, ts in graph.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == "open":
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


_CACHE: dict = {}


def imports_cache() -> dict:
    if not _CACHE:
        _CACHE.update(imports())
    return _CACHE
