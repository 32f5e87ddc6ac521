"""The vf-backends-vision plugin: registered under the ``vectorfit`` entry-point group."""

from __future__ import annotations

from vf_core.plugins import hookimpl

from .families import FAMILIES


@hookimpl
def vectorfit_families():
    return list(FAMILIES)
