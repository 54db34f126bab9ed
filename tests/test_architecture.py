"""The floors of docs/ARCHITECTURE.md hold: no module of src/yfpo imports a module on a higher floor, a peer
package on its own floor, or an entry point (CLI), and the import graph has no cycle. Every import counts, those
inside functions included (the graph is read with ast, nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# floor of each top-level part of the package (docs/ARCHITECTURE.md, "Floors"); a module may import modules on
# lower floors and modules of its own part; the parts of one floor are peers and never import each other
FLOORS = {
    "yfpo.version": 0,
    "yfpo.utils": 0,
    "yfpo.config": 0,
    "yfpo.grading": 0,
    "yfpo.resume": 0,
    "yfpo.install": 0,
    "yfpo.log": 0,
    "yfpo.data": 1,
    "yfpo.models": 2,
    "yfpo.engine": 3,
    "yfpo.neurons": 4,
    "yfpo.pairs": 5,
    "yfpo.train": 5,
    "yfpo.eval": 5,
    "yfpo.report": 6,
    "yfpo.pipeline": 7,
    "yfpo.run": 8,  # a thin re-export of yfpo.pipeline for scripts
}
# the ground floor's modules may import each other (acyclically): they are one part
GROUND = {m for m, f in FLOORS.items() if f == 0}


def modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "yfpo").rglob("*.py"):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def is_entry(mod: str) -> bool:
    """Entry points: the package API (yfpo/__init__), the CLI dispatcher and every `cli`/`*_cli` module."""
    last = mod.rsplit(".", 1)[-1]
    return mod == "yfpo" or last == "cli" or last.endswith("_cli")


def part(mod: str) -> str:
    """The top-level part a module belongs to (the ground floor counts as one part)."""
    for p in sorted(FLOORS, key=len, reverse=True):
        if mod == p or mod.startswith(p + "."):
            return "ground" if p in GROUND else p
    raise AssertionError(f"{mod}: not on any floor of FLOORS (add its package to docs/ARCHITECTURE.md and FLOORS)")


def floor(mod: str) -> int:
    for p in sorted(FLOORS, key=len, reverse=True):
        if mod == p or mod.startswith(p + "."):
            return FLOORS[p]
    raise AssertionError(mod)


def import_graph() -> dict[str, dict[str, int]]:
    """{module: {imported yfpo module: line}} for every import statement, at any depth."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for mod, path in mods.items():
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        edges = graph.setdefault(mod, {})
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for name in names:
                target = resolve(name) if name.split(".")[0] == "yfpo" else None
                if target and target != mod:
                    edges.setdefault(target, node.lineno)
    return graph


def test_every_module_is_on_a_floor():
    for mod in modules():
        if not is_entry(mod):
            part(mod)


def test_no_import_points_up_sideways_or_into_an_entry_point():
    bad = []
    for mod, edges in import_graph().items():
        for target, line in edges.items():
            where = f"{mod.replace('.', '/')}.py:{line} imports {target}"
            if is_entry(target) and not is_entry(mod):
                bad.append(f"{where} (an entry point)")
            elif is_entry(mod) or part(mod) == part(target):
                continue
            elif floor(target) > floor(mod):
                bad.append(f"{where} (floor {floor(target)} > {floor(mod)})")
            elif floor(target) == floor(mod):
                bad.append(f"{where} (a peer on floor {floor(mod)})")
    assert not bad, "imports against docs/ARCHITECTURE.md's floors:\n" + "\n".join(bad)


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph.get(m, {})):
            if state.get(t) == 1:
                return path[path.index(t) :] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_the_rule_catches_an_upward_import_and_a_cycle(tmp_path, monkeypatch):
    """The checks above are not vacuous: a fake package with an upward import and a cycle fails both."""
    pkg = tmp_path / "yfpo"
    (pkg / "data").mkdir(parents=True)
    (pkg / "train").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "utils.py").write_text("from yfpo import config\n")
    (pkg / "config.py").write_text("def f():\n    from yfpo.utils import x\n")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "problems.py").write_text("from yfpo.train.trainer import T\n")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "train" / "trainer.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "SRC", tmp_path)
    graph = import_graph()
    assert graph["yfpo.data.problems"] == {"yfpo.train.trainer": 1}
    try:
        test_no_import_points_up_sideways_or_into_an_entry_point()
    except AssertionError as e:
        assert "yfpo/data/problems.py:1 imports yfpo.train.trainer (floor 5 > 1)" in str(e)
    else:
        raise AssertionError("the upward import was not caught")
    try:
        test_the_import_graph_has_no_cycle()
    except AssertionError as e:
        assert "yfpo.config -> yfpo.utils -> yfpo.config" in str(e)
    else:
        raise AssertionError("the cycle was not caught")


MAX_LINES = 80


def test_long_functions_say_why():
    """A function of src/yfpo over MAX_LINES lines says why in its docstring ("Long: ..."), or is split."""
    bad = []
    for mod, path in sorted(modules().items()):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES and "Long:" not in (ast.get_docstring(node) or ""):
                    bad.append(f"{path.relative_to(SRC.parent)}:{node.lineno} {node.name} ({n} lines)")
    assert not bad, f"functions over {MAX_LINES} lines without a reason (Long: ...) in their docstring:\n" + "\n".join(
        bad
    )
