"""Exceptions with messages a user can act on (which file, which field, what was expected)."""

from __future__ import annotations


class ResweepError(Exception):
    """Base class of every error resweep raises on purpose."""


class ConfigError(ResweepError):
    """A configuration or study file is invalid.

    ``source`` is the file (or ``"<dict>"``), ``field`` the dotted path of the bad value.
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.message = message
        self.source = source
        self.field = field
        where = []
        if source:
            where.append(str(source))
        if field:
            where.append(f"field '{field}'")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class DataError(ResweepError):
    """A dataset folder or image cannot be used (missing, empty, unreadable, too small)."""


class RegistryError(ResweepError, KeyError):
    """An unknown name was asked of a registry (model, loss, method, task...)."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class WeightsNotFoundError(ResweepError, FileNotFoundError):
    """Pretrained weights are needed but no local file provides them."""


class DivergedError(ResweepError):
    """Training produced a non-finite or exploding loss."""
