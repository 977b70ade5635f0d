"""The import graph of the whole package against the layer table (``resweep.layers.LAYERS``).

Every ``import``/``from ... import`` statement counts, wherever it is: at module level, inside
a function (it runs later, but the module still depends on what it imports), and under
``if TYPE_CHECKING:``. The layer rule holds for all of them: a type-only import of a higher
layer would still make a lower layer know of it (STYLE: a type-only import of a *lower* layer
is fine). The cycle rule leaves type-only imports out: they never run, and with the layer rule
in force they can only point sideways, within one layer (``config_methods`` annotates with
``ExperimentConfig``, which holds its ``MethodConfig``s). Importing ``a.b.c`` runs
``a/__init__`` and ``a/b/__init__`` first, so parent packages count as imported too. Names
held as ``"module:attr"`` strings in :mod:`resweep.name_tables` are data, imported by the
registry on first use: not edges.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from resweep.layers import LAYERS, layer_of

ROOT = Path(__file__).resolve().parents[1]

#: upward imports still to remove: (importer, imported) -> why it is still there. The test
#: fails on an upward import missing here and on an entry that is no longer needed.
KNOWN_UPWARD: dict[tuple[str, str], str] = {
    ("resweep.engine.setup", "resweep.stages"): "a Trainer given no artifacts makes its stages itself "
    "(prepare_local, for `resweep train` and tests); the callers should make them and pass them in",
    ("resweep.methods.mae_loss", "resweep.stages.mae_pretrain"): "builds MaePretrainStage (could "
    "go by kind through parse_stage, as eco_config does) and loads the encoder with its loader",
    ("resweep.methods.mae_loss_video", "resweep.stages.mae_video_pretrain"): "as mae_loss, for video",
    ("resweep.stages.on_ray", "resweep.study.layout"): "ARTIFACTS_FILE: the stage layer writes the "
    "study's artifacts table into the study folder",
    ("resweep.trainables.train", "resweep.study.progress"): "the progress line of `resweep train`",
    ("resweep.trainables.tune_trial", "resweep.study.layout"): "the study folder of a trial: "
    "the driver-trial contract should sit below trainables",
    ("resweep.trainables.tune_trial", "resweep.study.trial_spec"): "TrialSpec, the message from the "
    "driver to a trial: as above",
}


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    type_only: bool


def _module_name(path: Path, root: Path) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_edges(root: Path, package: str = "resweep") -> tuple[set[str], list[Edge]]:
    """Every module of ``package`` under ``root`` and every import between two of them."""
    files = {_module_name(f, root): f for f in (root / package).rglob("*.py")}
    edges: list[Edge] = []
    for name, path in sorted(files.items()):
        tree = ast.parse(path.read_text(), filename=str(path))
        type_only_lines = _type_checking_lines(tree)
        this_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from .x import y
                    base = this_package.split(".")[: len(this_package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [module] + [f"{module}.{alias.name}" for alias in node.names]  # from pkg import mod
            else:
                continue
            imported: set[str] = set()
            for target in targets:
                parts = target.split(".")
                imported |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}  # parents run first
            for other in sorted(imported):
                if other in files and other != name and not name.startswith(other + "."):
                    edges.append(Edge(name, other, node.lineno, node.lineno in type_only_lines))
    return set(files), edges


def upward_imports(edges: list[Edge]) -> list[Edge]:
    """Imports against the layer order; a package reached only as the parent of a submodule
    that the same statement imports is left out (the submodule's edge says it)."""
    deeper = {(e.importer, e.line, e.imported.rpartition(".")[0]) for e in edges}
    return [
        e for e in edges
        if (a := layer_of(e.importer)) is not None and (b := layer_of(e.imported)) is not None and b < a
        and (e.importer, e.line, e.imported) not in deeper
    ]


def cycles(modules: set[str], edges: list[Edge]) -> list[list[str]]:
    """The groups of two or more modules that import each other round a loop (strongly
    connected components; type-only imports left out), each sorted."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        if not e.type_only:
            graph[e.importer].add(e.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return sorted(found)


def _describe(edge: Edge) -> str:
    kind = " (type-only)" if edge.type_only else ""
    above, below = layer_of(edge.imported), layer_of(edge.importer)
    assert above is not None and below is not None
    return f"{edge.importer}:{edge.line}{kind} imports {edge.imported} (layer {above + 1} above {below + 1})"


# --------------------------------------------------------------------------- the checker itself
def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_finds_upward_imports_and_cycles(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "resweep/__init__.py": "",
        "resweep/config.py": "def f():\n    from resweep.engine.optim import OPTIMIZERS\n",
        "resweep/engine/__init__.py": "",
        "resweep/engine/optim.py": "from resweep.config import OptimConfig\n",
        "resweep/engine/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from resweep.engine.b import B\n",
        "resweep/engine/b.py": "from . import a\n",
        "resweep/data/__init__.py": "",
        "resweep/data/x.py": "from resweep.errors import E\nimport resweep.stages\n",
        "resweep/errors.py": "",
        "resweep/stages/__init__.py": "",
        "resweep/stages/s.py": "",
    })
    modules, edges = import_edges(root)
    up = {(e.importer, e.imported) for e in upward_imports(edges)}
    # inside a function counts; a package's __init__ is imported with its submodule
    assert up == {("resweep.config", "resweep.engine.optim"), ("resweep.data.x", "resweep.stages")}
    # config <-> optim is a loop (through a function); a.py <-> b.py is type-only one way: none
    assert cycles(modules, edges) == [["resweep.config", "resweep.engine.optim"]]
    assert ("resweep.engine.b", "resweep.engine.a") in {(e.importer, e.imported) for e in edges}  # relative


def test_every_module_has_a_layer() -> None:
    modules, _ = import_edges(ROOT)
    assert "resweep.stages.base" in modules and "resweep.methods.eco" in modules
    assert [m for m in sorted(modules) if m != "resweep" and layer_of(m) is None] == []
    members = [m for layer in LAYERS for m in layer]
    assert len(members) == len(set(members)), "a module or package is in two layers"


# --------------------------------------------------------------------------- the package
def test_no_import_from_a_lower_layer_to_a_higher_one() -> None:
    _, edges = import_edges(ROOT)
    up = upward_imports(edges)
    new = [_describe(e) for e in up if (e.importer, e.imported) not in KNOWN_UPWARD]
    assert new == [], "imports against the layer order (resweep/layers.py):\n" + "\n".join(new)
    stale = sorted(set(KNOWN_UPWARD) - {(e.importer, e.imported) for e in up})
    assert stale == [], f"no longer imported upward; remove from KNOWN_UPWARD: {stale}"


def test_no_import_cycle_between_modules() -> None:
    modules, edges = import_edges(ROOT)
    found = cycles(modules, edges)
    assert found == [], "modules that import each other (imports inside functions count):\n" + "\n".join(
        " <-> ".join(group) for group in found
    )


def test_analysis_reads_study_folders_through_layout_only() -> None:
    """STYLE: analysis/ never imports study/ internals beyond ``study.layout``."""
    _, edges = import_edges(ROOT)
    bad = [
        _describe(e) for e in edges
        if e.importer.startswith("resweep.analysis") and e.imported.startswith("resweep.study.")
        and e.imported != "resweep.study.layout"
    ]
    assert bad == []


# --------------------------------------------------------------------------- the name tables
def test_name_tables_match_what_the_implementations_register() -> None:
    """Each built-in name resolves to what its module registers under it, and no module of the
    package registers a name its table lacks (the config would not know it until imported)."""
    import importlib
    import pkgutil

    import resweep
    from resweep import name_tables as nt

    for module in pkgutil.walk_packages(resweep.__path__, "resweep."):
        if module.name.split(".")[1] in ("degradations", "engine", "losses", "methods", "models", "stages"):
            importlib.import_module(module.name)

    def origin(obj: object) -> str:  # the module that registered an entry
        inner = getattr(obj, "factory", None) or getattr(obj, "produce", None) or obj
        return str(getattr(inner, "__module__", ""))

    method_targets = {name: method for name, (_, method) in nt.BUILTIN_METHODS.items()}
    config_targets = {name: config for name, (config, _) in nt.BUILTIN_METHODS.items()}
    for table, builtins in (
        (nt.TASKS, nt.BUILTIN_TASKS),
        (nt.OPTIMIZERS, nt.BUILTIN_OPTIMIZERS),
        (nt.PIXEL_LOSSES, nt.BUILTIN_PIXEL_LOSSES),
        (nt.STAGES, nt.BUILTIN_STAGES),
        (nt.MODELS, nt.BUILTIN_MODELS),
        (nt.METHODS, method_targets),
        (nt.METHOD_CONFIGS, config_targets),
    ):
        for name, target in builtins.items():
            module, _, attr = target.partition(":")
            entry = table.get(name)
            expected = getattr(importlib.import_module(module), attr)
            assert entry is expected or getattr(entry, "factory", None) is expected or getattr(entry, "produce", None) is expected, (
                f"{table.kind} '{name}': {target} is not what its module registered ({entry!r})"
            )
            assert getattr(entry, "kind", name) == name or table is nt.STAGES
        unlisted = [n for n in table.names() if origin(table.get(n)).startswith("resweep.") and n not in builtins]
        assert unlisted == [], f"{table.kind} names registered in the package but missing from resweep.name_tables: {unlisted}"
