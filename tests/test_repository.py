"""The repository against the registry: the nox matrix and docs/backends.md list exactly the families the installed
backends declare, read from the registry (``list_families``), so a new family is checked without new test code."""

from __future__ import annotations

import importlib.util

import pytest
from vf_core.plugins import list_families

from vectorfit_test_utils import REPO


@pytest.fixture(scope="module")
def noxfile():
    pytest.importorskip("nox")
    spec = importlib.util.spec_from_file_location("_vectorfit_noxfile", REPO / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _backends() -> list[str]:
    return sorted({f.backend for f in list_families().values()})


def test_the_backends_declare_families():
    assert {"nlp", "vision", "diffusion"} <= set(_backends())


@pytest.mark.parametrize("backend", _backends())
def test_nox_family_matrix_lists_exactly_the_backends_families(noxfile, backend):
    declared = {name for name, key in noxfile.declared_families().items() if key == backend}
    assert declared == {name for name, f in list_families().items() if f.backend == backend}


@pytest.mark.parametrize("backend", _backends())
def test_docs_describe_every_family(backend):
    text = (REPO / "docs" / "backends.md").read_text(encoding="utf-8")
    missing = [name for name, f in list_families().items() if f.backend == backend and f"`{name}`" not in text]
    assert not missing, f"docs/backends.md does not mention the {backend} families {missing}"


def test_nox_sessions_cover_every_package(noxfile):
    folders = sorted(p.parent.name for p in (REPO / "packages").glob("*/pyproject.toml"))
    assert sorted(noxfile.PACKAGES.values()) == folders
