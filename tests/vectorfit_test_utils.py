"""Helpers shared by the repository-wide tests."""

from __future__ import annotations

from pathlib import Path

#: the repository's root (this file is tests/vectorfit_test_utils.py)
REPO = Path(__file__).resolve().parents[1]
