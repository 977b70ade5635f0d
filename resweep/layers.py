"""The layers of the package, top to bottom: the one statement of who may import whom.

Each layer imports only the layers below it (at module level or inside a function; a type-only
import under ``if TYPE_CHECKING:`` too), and no two modules import each other, directly or
round a loop. ``tests/test_layers.py`` reads every module with ``ast`` and holds the code to
this table (its ``KNOWN_UPWARD`` names the upward imports still to remove). Within a layer,
modules import each other freely as long as no loop forms.

Names a config may use (task kinds, optimisers, pixel losses, methods, stage kinds, models)
live in :mod:`resweep.name_tables`, at the bottom: the config checks names there, the
implementations above fill the tables in, so nothing below the config imports it back.
"""

from __future__ import annotations

#: top to bottom; a layer is a tuple of modules or packages (a package holds its submodules)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("resweep.cli",),  # the face
    # the driver (specs, Tune/Optuna, results on disk) and the reader of study folders
    ("resweep.study", "resweep.analysis", "resweep.presets", "resweep.search_spaces"),
    ("resweep.trainables",),  # the Ray side of one trial or run
    ("resweep.stages",),  # artifacts shared by a sweep
    ("resweep.engine",),  # the training loop: no Ray, no particular method
    ("resweep.methods",),  # one file per method
    ("resweep.losses", "resweep.models", "resweep.data", "resweep.degradations", "resweep.metrics"),
    # typed configs, with the bases that methods' knobs and stage kinds' definitions subclass
    ("resweep.config", "resweep.config_sections", "resweep.config_io", "resweep.config_methods", "resweep.config_stages"),
    # name tables and small helpers
    (
        "resweep.name_tables",
        "resweep.registry",
        "resweep.errors",
        "resweep.fileio",
        "resweep.uri",
        "resweep.file_names",
        "resweep.status",
        "resweep.layers",
    ),
)


def layer_of(module: str) -> int | None:
    """Index in ``LAYERS`` (0: top) of a ``resweep.*`` module; the longest matching entry
    wins. ``None`` for the package root and for modules outside the table."""
    best: tuple[int, int] | None = None
    for index, members in enumerate(LAYERS):
        for member in members:
            if (module == member or module.startswith(member + ".")) and (best is None or len(member) > best[1]):
                best = (index, len(member))
    return None if best is None else best[0]
