"""vf-avf's plugin: contributes the built-in freezing policies."""

from __future__ import annotations

from vf_core.plugins import hookimpl


@hookimpl
def vectorfit_freezing_policies():
    return []
