"""The package's layers, enforced: an import may only point down (or sideways inside a layer), and no
chain of imports comes back to where it started. Imports inside functions count too.

Layers, bottom to top (docs/architecture.md draws them):
  base (errors, registry, checkpoints, the artifact store, image pixels, shared names, presets, trial definitions)
  library folders (wordnet, data, clip, relax, losses, models, attribute)
  engine (training loop, optimiser, their settings)
  teachers, distill and the KD methods (Lightning modules; they take plain values)
  config (the experiment schema: only stages and the command line map it onto the layers below)
  stages
  report
  command line
"""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "relaxkd"

LAYERS = [
    (
        "base",
        {
            "errors",
            "registry",
            "checkpoints",
            "artifacts",
            "buildlock",
            "console",
            "images",
            "names",
            "presets",
            "records",
            "safe_yaml",
            "schema",
            "trials",
            "versions",
        },
    ),
    ("library", {"wordnet", "data", "clip", "relax", "losses", "models", "attribute"}),
    ("engine", {"engine"}),
    ("teachers, distill and methods", {"teachers", "distill", "methods"}),
    ("config", {"config", "config_io", "configdoc", "preflight", "launcher_config"}),
    ("stages", {"stages"}),
    ("report", {"report"}),
    ("launch", {"launch"}),
    ("command line", {"cli", "commands", "__main__", "__init__"}),
]
LAYER_OF = {part: i for i, (_, parts) in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The relaxkd modules ``path`` imports anywhere in its body (``from pkg import mod`` names the module)."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {name for name in found if name in known}


def part(module: str) -> str:
    """The top-level part of the package a module belongs to (``relaxkd.stages.plan`` -> ``stages``)."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def test_every_module_has_a_layer():
    missing = {part(m) for m in modules()} - set(LAYER_OF)
    assert not missing, f"add {sorted(missing)} to LAYERS (and to docs/architecture.md)"


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return [
        f"{src} ({LAYERS[LAYER_OF[part(src)]][0]}) imports {dst} ({LAYERS[LAYER_OF[part(dst)]][0]})"
        for src, targets in sorted(edges.items())
        for dst in sorted(targets)
        if LAYER_OF[part(dst)] > LAYER_OF[part(src)]
    ]


def import_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    return cycles


def test_imports_only_point_down_the_layers():
    found = upward_imports(graph())
    assert not found, "\n".join(found)


def test_no_import_cycles():
    found = import_cycles(graph())
    assert not found, "\n".join(" -> ".join(c) for c in found)


def test_the_checks_see_imports_inside_functions_upward_imports_and_cycles(tmp_path, monkeypatch):
    bad = tmp_path / "relaxkd" / "data" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("def f():\n    from relaxkd.stages.context import Context\n    from . import other\n")
    monkeypatch.setattr(__import__(__name__), "SRC", tmp_path)
    known = {"relaxkd.stages.context": Path("x"), "relaxkd.data.bad": bad, "relaxkd.data.other": Path("y")}
    edges = {"relaxkd.data.bad": imports(bad, known), "relaxkd.stages.context": {"relaxkd.data.other"},
             "relaxkd.data.other": {"relaxkd.data.bad"}}
    assert edges["relaxkd.data.bad"] == {"relaxkd.stages.context", "relaxkd.data.other"}
    assert upward_imports(edges) == ["relaxkd.data.bad (library) imports relaxkd.stages.context (stages)"]
    assert import_cycles(edges) == [["relaxkd.data.bad", "relaxkd.data.other", "relaxkd.data.bad"]]
