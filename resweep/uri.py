"""Paths and URIs of a study's storage (a local folder, ``s3://bucket/prefix``, ...).

One place that appends to a storage location: a URI may carry a query
(``s3://bucket/x?endpoint_override=127.0.0.1:9000&scheme=http``) that must stay at the end,
so ``storage + "/tune"`` is wrong. Light on purpose (stdlib; pyarrow imported when asked).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit


def join_uri(base: str, *parts: str) -> str:
    """``base/parts...`` for a path or a URI, keeping a URI's query (``?endpoint_override=``)."""
    if "://" not in base:
        return str(Path(base, *parts))
    split = urlsplit(base)
    path = "/".join([split.path.rstrip("/"), *[p.strip("/") for p in parts if p.strip("/")]])
    return urlunsplit((split.scheme, split.netloc, path, split.query, split.fragment))


def is_uri(location: str | Path) -> bool:
    """A URI (``s3://``, ``gs://``, ``file://``...) rather than a local path."""
    return "://" in str(location)


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def filesystem(uri: str) -> tuple[Any, str]:
    """``(pyarrow FileSystem, path inside it)`` of a path or URI, as Ray Tune resolves it."""
    import pyarrow.fs as pafs

    if "://" not in uri:
        return pafs.LocalFileSystem(), str(Path(uri).resolve())
    return pafs.FileSystem.from_uri(uri)
