"""The backend's plugin: registered under the ``vectorfit`` entry-point group."""

from __future__ import annotations

from vf_core.plugins import hookimpl


@hookimpl
def vectorfit_families():
    return []
