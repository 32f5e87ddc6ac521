"""The SVD cache on disk: what it holds, how large it is, clearing it, and keeping it under a size limit.

Every decomposed weight leaves one safetensors file under ``$VECTORFIT_CACHE/svd`` (about 510 MB for BERT-base),
so the cache grows with every model. ``VECTORFIT_CACHE_MAX_GB`` bounds it: after each batch of writes the
entries used least recently (their modification time, refreshed on every hit) are removed until the cache fits.
``vectorfit cache info`` and ``vectorfit cache clear`` are the command's view of this module.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as d:
    ...     entry = Path(d) / "ab" / ("ab" + "0" * 62 + ".safetensors")
    ...     entry.parent.mkdir()
    ...     _ = entry.write_bytes(b"x" * 10)
    ...     cache_info(d)["entries"], clear_cache(d), cache_info(d)["bytes"]
    (1, 1, 0)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from .assets import cache_dir
from .errors import ConfigError

__all__ = ["cache_entries", "cache_info", "clear_cache", "enforce_cache_limit", "cache_limit_bytes",
           "svd_cache_dir"]

_LIMIT_ENV = "VECTORFIT_CACHE_MAX_GB"


def svd_cache_dir() -> Path:
    """``$VECTORFIT_CACHE/svd`` (default ``~/.cache/vectorfit/svd``)."""
    return cache_dir() / "svd"


def _root(directory: Union[str, os.PathLike, None]) -> Path:
    return Path(directory) if directory is not None else svd_cache_dir()


def cache_entries(directory: Union[str, os.PathLike, None] = None) -> list[tuple[Path, int, float]]:
    """``(path, bytes, last use)`` of every finished entry, least recently used first (temporary files of writes in
    flight are not entries)."""
    root = _root(directory)
    out = []
    if root.is_dir():
        for path in root.glob("*/*.safetensors"):
            try:
                stat = path.stat()
            except OSError:  # removed meanwhile
                continue
            out.append((path, stat.st_size, stat.st_mtime))
    return sorted(out, key=lambda e: e[2])


def cache_info(directory: Union[str, os.PathLike, None] = None) -> dict:
    """The cache's folder, number of entries, total bytes and limit (``None``: unbounded)."""
    entries = cache_entries(directory)
    return {"directory": str(_root(directory)), "entries": len(entries), "bytes": sum(e[1] for e in entries),
            "limit_bytes": cache_limit_bytes()}


def clear_cache(directory: Union[str, os.PathLike, None] = None) -> int:
    """Remove every entry; returns how many. Decompositions are recomputed (and cached again) when next needed."""
    removed = 0
    for path, _, _ in cache_entries(directory):
        try:
            path.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def cache_limit_bytes() -> Optional[int]:
    """``VECTORFIT_CACHE_MAX_GB`` in bytes, or None when unset; a value that is not a non-negative number is an
    error naming the variable."""
    value = os.environ.get(_LIMIT_ENV, "").strip()
    if not value:
        return None
    try:
        gigabytes = float(value)
    except ValueError:
        gigabytes = -1.0
    if not gigabytes >= 0:
        raise ConfigError(f"{_LIMIT_ENV}={value!r}: expected a size in GB (a non-negative number, e.g. 5 or 0.5)",
                          fields=(_LIMIT_ENV,))
    return int(gigabytes * 1024**3)


def enforce_cache_limit(directory: Union[str, os.PathLike, None] = None,
                        limit_bytes: Optional[int] = None) -> list[Path]:
    """Remove the least recently used entries until the cache holds at most ``limit_bytes`` (default: the
    ``VECTORFIT_CACHE_MAX_GB`` limit; nothing happens without one); returns the removed paths."""
    limit = cache_limit_bytes() if limit_bytes is None else limit_bytes
    if limit is None:
        return []
    entries = cache_entries(directory)
    total = sum(e[1] for e in entries)
    removed = []
    for path, size, _ in entries:
        if total <= limit:
            break
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
        removed.append(path)
    return removed
