"""The package's import structure: no module-level import cycle, and configs without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module_graph() -> dict[str, set[str]]:
    """module -> resweep modules it imports at module level (imports inside functions and
    under ``if TYPE_CHECKING`` run later or never, so they cannot form an import-time cycle).
    Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first: parents count too."""
    mods: dict[str, set[str]] = {}
    for f in (ROOT / "resweep").rglob("*.py"):
        name = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        deps: set[str] = set()
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("resweep"):
                deps.add(node.module)
                deps |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import module`
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("resweep")}
        mods[name] = deps

    def with_parents(dep: str) -> set[str]:
        parts = dep.split(".")
        return {".".join(parts[:i]) for i in range(2, len(parts) + 1)}

    return {
        m: {p for d in deps for p in with_parents(d) if p in mods and p != m and not m.startswith(p + ".")}
        for m, deps in mods.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                found.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return found


def test_the_checker_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_level_import_cycle() -> None:
    graph = _module_graph()
    assert "resweep.stages.base" in graph and "resweep.methods.eco" in graph
    assert _cycles(graph) == []


def _imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(','.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.strip().split(","))


def test_config_and_method_configs_import_without_torch() -> None:
    loaded = _imported_after("import resweep.config, resweep.methods, resweep.methods.eco_config, resweep.stages")
    assert "resweep.config" in loaded and "resweep.methods.eco_config" in loaded
    assert "torch" not in loaded and "ray" not in loaded
    # nothing but the config is built: the methods' modules load only when a config names them
    assert "resweep.methods.spn" not in loaded and "resweep.methods.eco" not in loaded


def test_validating_a_config_does_not_import_timm_or_torchvision() -> None:
    """Every trial process and CLI call validates a config; `import timm.layers` alone pulls in
    torchvision (~2.5 s here). The model-name check reads the names in resweep.name_tables and
    imports no architecture module."""
    loaded = _imported_after(
        "import sys; sys.path.insert(0, 'tests'); from conftest import tiny_config_dict; "
        "from resweep.config import ExperimentConfig; ExperimentConfig.from_dict(tiny_config_dict())"
    )
    assert "resweep.config" in loaded and "resweep.name_tables" in loaded
    assert [m for m in loaded if m.startswith("resweep.models.")] == []
    assert "timm" not in loaded and "torchvision" not in loaded
