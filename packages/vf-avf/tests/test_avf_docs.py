"""Every module's docstring example runs (the runnable examples the style guide asks for)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import vf_avf

MODULES = sorted(m.name for m in pkgutil.walk_packages(vf_avf.__path__, "vf_avf."))
NEEDS = {"vf_avf.integrations.trainer": "transformers", "vf_avf.plot": "matplotlib"}


@pytest.mark.parametrize("name", ["vf_avf"] + MODULES)
def test_docstring_examples_run(name):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    module = importlib.import_module(name)
    assert module.__doc__ and "https://arxiv.org/abs/2503.19530" in module.__doc__, "docstring with the paper link"
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0, "a runnable example"
