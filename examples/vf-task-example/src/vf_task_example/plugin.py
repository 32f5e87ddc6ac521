"""The module the ``vectorfit`` entry point names: it implements two hooks, a family and a task."""

from vf_core.plugins import hookimpl

from .task import FAMILY, TASK


@hookimpl
def vectorfit_families():
    return [FAMILY]


@hookimpl
def vectorfit_tasks():
    return [TASK]
