"""VectorFit's plugin system (pluggy, project and entry-point group ``vectorfit``).

Hook specifications and their reference docs: :mod:`vf_core.plugins.hookspecs`.
"""

from .hookspecs import PROJECT, hookspec
from .manager import (
    collect_named,
    get_plugin_manager,
    hookimpl,
    list_families,
    list_tasks,
    list_weight_layouts,
    reset_plugin_manager,
)

__all__ = [
    "PROJECT",
    "hookspec",
    "hookimpl",
    "get_plugin_manager",
    "reset_plugin_manager",
    "list_families",
    "list_tasks",
    "list_weight_layouts",
    "collect_named",
]
