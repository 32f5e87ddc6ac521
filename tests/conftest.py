"""Fixtures of the repository-wide tests: the ``vectorfit`` command over the installed tasks, the import contracts,
the docs and the example plugin packages. Helpers live in ``vectorfit_test_utils`` (never ``from conftest
import``: every package's tests have a conftest)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # for ``import vectorfit_test_utils``

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def isolated_cache(tmp_path_factory, monkeypatch):
    """A cache directory of the test's own (SVD cache, assets), for tests that need no real model or data."""
    monkeypatch.setenv("VECTORFIT_CACHE", str(tmp_path_factory.mktemp("vf-cache")))


@pytest.fixture
def fresh_plugins():
    """Forget the cached plugin manager before and after the test (for tests that install or register plugins)."""
    from vf_core.plugins import reset_plugin_manager

    reset_plugin_manager()
    yield
    reset_plugin_manager()
