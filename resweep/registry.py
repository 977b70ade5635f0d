"""A small name -> factory registry, shared by models, losses, methods, tasks, optimisers and stages.

Entries are either registered objects (``@REGISTRY.register("name")``) or lazy ones
(``REGISTRY.register_lazy("name", "package.module:attr")``): a lazy entry is a name known
without importing its module (so configs validate names without importing torch), imported
on first ``get``. A registry is the single source of truth for the names it holds: configs
validate against ``names()`` instead of repeating them in a ``Literal``.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from resweep.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (usually classes or factories).

    ``register`` is a decorator; ``get`` raises :class:`RegistryError` naming the close
    matches, so a typo in a config says what was meant.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = {}  # name -> "module:attr", imported on first get

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if key is None:
                raise ValueError(f"cannot infer a {self.kind} name for {obj!r}")
            if key in self._items and self._items[key] is not obj:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = obj
            self._lazy.pop(key, None)  # the module of a lazy entry registers it on import
            return obj

        return decorator

    def register_lazy(self, name: str, target: str) -> None:
        """Know ``name`` now, import ``target`` (``"package.module:attr"``) on first ``get``."""
        if ":" not in target:
            raise ValueError(f"{self.kind} '{name}': lazy target must be 'module:attr', got {target!r}")
        if name in self._items or self._lazy.get(name, target) != target:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._lazy[name] = target

    def get(self, name: str) -> T:
        if name in self._items:
            return self._items[name]
        if name in self._lazy:
            module, _, attr = self._lazy[name].partition(":")
            imported = importlib.import_module(module)
            if name not in self._items:  # the module did not register it on import
                self._items[name] = getattr(imported, attr)
            self._lazy.pop(name, None)
            return self._items[name]
        close = difflib.get_close_matches(name, self.names(), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise RegistryError(f"unknown {self.kind} '{name}'.{hint} Known: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return sorted({*self._items, *self._lazy})

    def check(self, name: str) -> str:
        """``name`` if known, else a ``ValueError`` for a pydantic validator (lists the known ones)."""
        if name not in self:
            close = difflib.get_close_matches(name, self.names(), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"unknown {self.kind} '{name}'{hint}; known: {', '.join(self.names())}")
        return name

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
