"""vf-avf's test fixtures. Shared helpers live in ``avf_helpers`` (never ``from conftest import``: other
packages' tests have a conftest too, and pytest may import this one under a package name)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # for ``import avf_helpers`` (and DDP workers, which inherit it)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own VectorFit cache directory (SVD cache, assets)."""
    monkeypatch.setenv("VECTORFIT_CACHE", str(tmp_path_factory.mktemp("vf-cache")))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and far faster than on an oversubscribed pool); restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_plugins():
    """Forget the cached plugin manager before and after the test (for tests that install or register plugins)."""
    from vf_core.plugins import reset_plugin_manager

    reset_plugin_manager()
    yield
    reset_plugin_manager()
