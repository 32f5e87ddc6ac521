"""Checks every backend runs against the repository: the nox family matrix and the backends page.

Example (in a backend's tests)::

    from vf_core.testing.repository import check_docs_mention_families, check_nox_matrix

    def test_nox_family_matrix_lists_exactly_this_backends_families():
        check_nox_matrix("nlp")
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["repository_root", "check_nox_matrix", "check_docs_mention_families"]


def repository_root() -> Path:
    """The monorepo's root (the folder holding ``packages/``), from this file's place in a source checkout."""
    return Path(__file__).resolve().parents[5]


def _skip(reason: str) -> None:
    import pytest

    pytest.skip(reason)


def check_nox_matrix(backend: str) -> None:
    """``noxfile.py``'s ``family(...)`` sessions for ``backend`` are exactly its registered families."""
    import pytest

    from ..plugins import list_families

    pytest.importorskip("nox")
    path = repository_root() / "noxfile.py"
    if not path.is_file():
        _skip("noxfile.py not found (package installed outside the repository)")
    spec = importlib.util.spec_from_file_location("_vectorfit_noxfile", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    declared = {name for name, key in module.declared_families().items() if key == backend}
    assert declared == {name for name, f in list_families().items() if f.backend == backend}


def check_docs_mention_families(backend: str) -> None:
    """``docs/backends.md`` names every family ``backend`` declares."""
    from ..plugins import list_families

    doc = repository_root() / "docs" / "backends.md"
    if not doc.is_file():
        _skip("docs/backends.md not found (package installed outside the repository)")
    text = doc.read_text(encoding="utf-8")
    missing = [name for name, f in list_families().items() if f.backend == backend and f"`{name}`" not in text]
    assert not missing, f"docs/backends.md does not mention the families {missing}"
