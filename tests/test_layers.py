"""The package's layers: nothing imports upward, and imports form no cycle.

    cli, runner, launch                                   top: compose, dispatch, ranks
    tasks
    trainers, evaluation, decoding, online, diffusion, selection
    generation, rewards, diagnostics
    objectives, lm, models
    data
    runtime, results, registry, errors, config            leaf services

Every ``import prefrun.x`` counts, also those inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "prefrun"
LAYERS = [
    {"runtime", "results", "registry", "errors", "config"},
    {"data"},
    {"objectives", "lm", "models"},
    {"generation", "rewards", "diagnostics"},
    {"trainers", "evaluation", "decoding", "online", "diffusion", "selection"},
    {"tasks"},
    {"cli", "runner", "launch", "__main__", "__init__"},
]


def _layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else "__init__"
    for i, names in enumerate(LAYERS):
        if part in names:
            return i
    raise AssertionError(f"{module}: its package {part!r} is in no layer; add it to LAYERS and to this docstring")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1] if len(parts) > 2 else [*parts[:-1], "__init__"]
        out[".".join(parts) if parts != ["prefrun", "__init__"] else "prefrun.__init__"] = path
    return out


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("prefrun")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prefrun") and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from prefrun.x import module`
    return found


def test_no_module_imports_from_a_higher_layer():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        for target in _imports(path, top_level_only=False):
            if target in modules or target.rsplit(".", 1)[0] in modules:
                target = target if target in modules else target.rsplit(".", 1)[0]
                if target != "prefrun.__init__" and _layer(target) > _layer(name):
                    upward.append(f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_imports_form_no_cycle():
    modules = _modules()
    graph = {
        name: {t if t in modules else t.rsplit(".", 1)[0] for t in _imports(path, top_level_only=False)}
        & set(modules) - {name}
        for name, path in modules.items()
    }
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_layer_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The check is real: a data module importing the CLI is reported."""
    fake = tmp_path / "prefrun"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "bad.py").write_text("from prefrun.cli import main\n")
    (fake / "cli.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    try:
        test_no_module_imports_from_a_higher_layer()
    except AssertionError as e:
        assert "prefrun.data.bad (layer 1) imports prefrun.cli (layer 6)" in str(e)
    else:
        raise AssertionError("an upward import went unnoticed")
