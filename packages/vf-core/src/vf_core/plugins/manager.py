"""The plugin manager: built-ins plus everything installed under the ``vectorfit`` entry-point group.

Example:
    >>> from vf_core.plugins import get_plugin_manager, list_families
    >>> pm = get_plugin_manager()
    >>> isinstance(list_families(), dict)
    True

Set ``VECTORFIT_DISABLE_PLUGINS="name1,name2"`` to keep named entry points from loading.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import pluggy

from ..errors import PluginError
from . import hookspecs
from .hookspecs import PROJECT

__all__ = ["hookimpl", "get_plugin_manager", "reset_plugin_manager", "list_families", "list_weight_layouts",
           "list_tasks", "collect_named"]

hookimpl = pluggy.HookimplMarker(PROJECT)


@functools.lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    """The cached plugin manager (every entry point of the ``vectorfit`` group), with every hook name checked.

    vf-core registers no plugin of its own: its fallbacks (the standard layer layouts, recognising a family by
    its declaration, the generic target selection) are called directly by the modules that ask a hook, when no
    plugin answers. So this package imports nothing of vf-core but its errors.
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for blocked in filter(None, (s.strip() for s in os.environ.get("VECTORFIT_DISABLE_PLUGINS", "").split(","))):
        pm.set_blocked(blocked)
    try:
        pm.load_setuptools_entrypoints(PROJECT)
    except Exception as exc:  # a broken third-party plugin must say who it is
        raise PluginError(f"a plugin in the {PROJECT!r} entry-point group failed to load: {exc!r}") from exc
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements a hook that does not exist: {exc}") from exc
    return pm


def reset_plugin_manager() -> None:
    """Forget the cached manager (after installing or registering plugins at run time) and its registries."""
    get_plugin_manager.cache_clear()


def _provider(pm: pluggy.PluginManager, impl: Any) -> str:
    return pm.get_name(impl.plugin) or repr(impl.plugin)


def collect_named(hook_name: str, key=lambda rec: rec.name) -> dict[str, Any]:
    """Call a hook that returns records and index them by name, rejecting duplicates across plugins."""
    pm = get_plugin_manager()
    hook = getattr(pm.hook, hook_name)
    seen: dict[str, tuple[Any, str]] = {}
    for impl in reversed(hook.get_hookimpls()):  # registration order
        records = impl.function() or ()
        for record in records:
            name = key(record)
            provider = _provider(pm, impl)
            if name in seen:
                raise PluginError(
                    f"{hook_name}: {name!r} is provided by both {seen[name][1]!r} and {provider!r};"
                    f" uninstall one of them or block it with VECTORFIT_DISABLE_PLUGINS"
                )
            seen[name] = (record, provider)
    return {name: rec for name, (rec, _) in seen.items()}


def list_families() -> dict:
    """Every declared :class:`~vf_core.families.Family`, by name."""
    return collect_named("vectorfit_families")


def list_tasks() -> dict:
    """Every installed :class:`~vf_core.tasks.Task` (``vectorfit_tasks`` hook), by name, in registration order."""
    return collect_named("vectorfit_tasks")


def list_weight_layouts() -> list:
    """The layer types plugins declare, most recently registered first (vf-core's own standard layouts,
    :data:`vf_core.layouts.BUILTIN_LAYOUTS`, are not among them: :func:`vf_core.layouts.layout_for` tries them
    after these)."""
    pm = get_plugin_manager()
    layouts: list = []
    for group in pm.hook.vectorfit_weight_layouts():
        layouts.extend(group or ())
    return layouts
