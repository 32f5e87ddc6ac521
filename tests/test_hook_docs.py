"""docs/hooks.md documents every hook of vf_core.plugins.hookspecs, with its current signature."""

from __future__ import annotations

import inspect
import re

import pytest

from vf_core.plugins import hookspecs

from vectorfit_test_utils import REPO

DOC = REPO / "docs" / "hooks.md"


def _hooks() -> dict:
    return {name: fn for name, fn in vars(hookspecs).items()
            if callable(fn) and getattr(fn, f"{hookspecs.PROJECT}_spec", None) is not None}


def _signature(fn) -> str:
    """``(model: Any, families: Sequence[Family]) -> Optional[str]``: annotations without string quotes."""
    return re.sub(r"[\"']", "", str(inspect.signature(fn)))


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_hookspecs_are_found():
    assert "vectorfit_families" in _hooks()


@pytest.mark.parametrize("name", sorted(_hooks()))
def test_hook_is_documented_with_its_signature(doc, name):
    fn = _hooks()[name]
    assert f"## `{name}`" in doc, f"docs/hooks.md has no section '## `{name}`'"
    expected = f"def {name}{_signature(fn)}"
    assert expected in doc, f"docs/hooks.md does not show the signature {expected!r}"
    section = doc.split(f"## `{name}`", 1)[1].split("\n## ", 1)[0]
    if fn.vectorfit_spec.get("firstresult"):
        assert "firstresult" in section, f"docs/hooks.md must say that {name} is firstresult"


def test_doc_names_no_stale_hook(doc):
    documented = set(re.findall(r"^## `(vectorfit_\w+)`", doc, flags=re.M))
    stale = documented - set(_hooks())
    assert not stale, f"docs/hooks.md documents hooks that hookspecs.py no longer has: {sorted(stale)}"
