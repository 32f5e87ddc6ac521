"""Fixtures shared by vf-core's tests; the tiny modules live in vf_core_test_utils.py."""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from vf_core_test_utils import TinyNet  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache directory, so the SVD cache never leaks between tests."""
    monkeypatch.setenv("VECTORFIT_CACHE", str(tmp_path_factory.mktemp("vf-cache")))


@pytest.fixture
def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


@pytest.fixture
def tiny_input() -> torch.Tensor:
    return torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
