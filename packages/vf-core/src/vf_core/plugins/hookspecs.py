"""The hooks a VectorFit plugin may implement. This module is the reference of every hook.

A plugin is any module or object with functions decorated by :data:`vf_core.plugins.hookimpl`, registered
through the ``vectorfit`` entry-point group of its distribution::

    [project.entry-points.vectorfit]
    my_plugin = "my_package.plugin"

Every hook name starts with ``vectorfit_``. The plugin manager calls ``check_pending()`` after loading, so a
misspelled hook name in a plugin fails loudly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from ..families import Family
    from ..layouts import WeightLayout
    from ..tasks import Task

PROJECT = "vectorfit"

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def vectorfit_families() -> Sequence["Family"]:
    """Declare architecture families: for each, which modules play the roles ``q, k, v, o, f1, f2``.

    :return: a sequence of :class:`vf_core.families.Family` records. Family names must be unique across
        all plugins; a duplicate raises :class:`vf_core.PluginError` naming both providers.
    """


@hookspec(firstresult=True)
def vectorfit_identify_family(model: Any, families: Sequence["Family"]) -> Optional[str]:
    """Recognise the architecture family of ``model``.

    Stops at the first non-None result. The built-in fallback (``trylast``) returns the first family whose
    :meth:`~vf_core.families.Family.identifies` accepts the model.

    :param model: the user's model (an ``nn.Module``).
    :param families: every declared family.
    :return: a family name, or None if this plugin does not know the model.
    """


@hookspec(firstresult=True)
def vectorfit_select_targets(model: Any, config: Any, family: Optional["Family"], heads: Sequence[str]
                             ) -> Optional[Sequence[Any]]:
    """Choose the modules to decompose.

    Stops at the first non-None result. The built-in generic plugin (``trylast``) selects from
    ``config.target_modules`` (names, ``.``-suffixes, a regex, or a role dict) or from the family's roles.

    :param model: the user's model.
    :param config: the :class:`vf_core.VectorFitConfig`.
    :param family: the recognised :class:`vf_core.families.Family`, or None.
    :param heads: full names of the ``modules_to_save`` (never targeted).
    :return: a list of :class:`vf_core.targets.Target` in model order, or None to let other plugins decide.
    """


@hookspec
def vectorfit_weight_layouts() -> Sequence[type["WeightLayout"]]:
    """Declare layer types that can be decomposed (``nn.Linear``, GPT-2's ``Conv1D``, ``nn.Conv2d``...).

    :return: :class:`vf_core.layouts.WeightLayout` subclasses. Each says whether it handles a module and how
        to read its weight as a ``(d_out, d_in)`` matrix. Later registrations are tried first.
    """


@hookspec
def vectorfit_freezing_policies() -> Sequence[Any]:
    """Contribute freezing policies (used by ``vf-avf``'s ``VectorFreezer``).

    :return: ``vf_avf.PolicyRecord(name, config_class, factory, summary)`` records: ``config_class``
        subclasses ``vf_avf.AVFConfig`` with ``policy: Literal[name]``; ``factory(config, vectors,
        total_steps)`` returns a ``vf_avf.FreezingPolicy``. Policy names must be unique across plugins.
    """


@hookspec
def vectorfit_tasks() -> Sequence["Task"]:
    """Contribute training tasks to the ``vectorfit`` command (``vectorfit train --task NAME``).

    :return: a sequence of :class:`vf_core.tasks.Task` records: a name, the backend, which models and data the
        task accepts, how it builds, batches and scores them, its headline metric, its default settings and a
        runner factory. Task names must be unique across all plugins; a duplicate raises
        :class:`vf_core.PluginError` naming both providers.
    """
