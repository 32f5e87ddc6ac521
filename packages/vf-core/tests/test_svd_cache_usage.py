"""The SVD cache's size: listed, cleared, and bounded by VECTORFIT_CACHE_MAX_GB (least recently used first)."""

from __future__ import annotations

import os
import time

import pytest
import torch

from vf_core import ConfigError
from vf_core.svd import DecompositionCache, decompose
from vf_core.svd_cache_usage import cache_entries, cache_info, cache_limit_bytes, clear_cache, enforce_cache_limit


def _fill(directory, n: int) -> list[str]:
    cache = DecompositionCache(directory)
    keys = []
    for i in range(n):
        torch.manual_seed(i)
        key = f"{i:02d}" + "f" * 62
        cache.put(key, decompose(torch.randn(16, 8)))
        keys.append(key)
    cache.flush()
    return keys


def test_info_and_clear(tmp_path):
    _fill(tmp_path, 3)
    info = cache_info(tmp_path)
    assert info["entries"] == 3 and info["bytes"] == sum(p.stat().st_size for p, _, _ in cache_entries(tmp_path))
    (tmp_path / "00" / "partial.tmp").write_bytes(b"x")  # a write in flight is not an entry
    assert cache_info(tmp_path)["entries"] == 3
    assert clear_cache(tmp_path) == 3
    assert cache_info(tmp_path) == {**info, "entries": 0, "bytes": 0}


def test_limit_removes_the_least_recently_used(tmp_path, monkeypatch):
    keys = _fill(tmp_path, 3)
    cache = DecompositionCache(tmp_path)
    paths = {k: cache._path(k) for k in keys}
    now = time.time()
    for age, key in zip((300, 200, 100), keys):  # key 0 oldest
        os.utime(paths[key], (now - age, now - age))
    assert cache.get(keys[0], torch.device("cpu")) is not None  # a hit makes key 0 the most recent
    size = paths[keys[1]].stat().st_size
    removed = enforce_cache_limit(tmp_path, limit_bytes=2 * size)
    assert removed == [paths[keys[1]]]
    assert paths[keys[0]].is_file() and paths[keys[2]].is_file()
    # through the environment, after a batch of writes
    monkeypatch.setenv("VECTORFIT_CACHE_MAX_GB", str(size / 1024**3))
    _fill(tmp_path, 1)  # rewrites key 0 (the newest), then keeps only what fits: one entry
    assert [p for p, _, _ in cache_entries(tmp_path)] == [paths[keys[0]]]


def test_limit_setting(monkeypatch):
    monkeypatch.delenv("VECTORFIT_CACHE_MAX_GB", raising=False)
    assert cache_limit_bytes() is None and enforce_cache_limit("/nonexistent") == []
    monkeypatch.setenv("VECTORFIT_CACHE_MAX_GB", "0.5")
    assert cache_limit_bytes() == 512 * 1024**2
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv("VECTORFIT_CACHE_MAX_GB", bad)
        with pytest.raises(ConfigError, match="VECTORFIT_CACHE_MAX_GB"):
            cache_limit_bytes()
