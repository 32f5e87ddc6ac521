"""Which installed task handles a command: the ``vectorfit_tasks`` hook's records, and their claims.

``vectorfit train --task NAME`` names a task (or an alias several tasks share, ``classification``: the model
then decides between them). Without ``--task`` the task is recognised: the tasks most sure of ``--model`` win,
``--data`` decides between equally sure ones (and when they are all unsure of the data, a task of the same
backend that is sure of it and can load the model wins: a text model on a SQuAD file answers questions), and
between the tasks of one backend that still tie (a text model on a local CSV file: classification or regression)
the backend's first task runs and decides from the data itself when it loads it (numeric labels: regression), as
it always has.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from vf_core.plugins import list_tasks as _collect_tasks
from vf_core.tasks import NO, SURE, Task, TaskRunner

from .errors import CLIError
from .rundir import Run

__all__ = ["list_tasks", "choose_task", "check_data", "get_runner", "is_alias", "task_of_run", "backends"]

NO_BACKEND = ("no backend is installed for the vectorfit command; install vf-backends-nlp[transformers] (text) or"
              " vf-backends-vision[timm] (images), e.g. pip install 'vectorfit[nlp]'")


def list_tasks() -> dict[str, Task]:
    """Every installed task (``vectorfit_tasks`` hook), by name, in registration order. Duplicate names are an
    error naming both providers; so is a task whose alias is another task's name."""
    tasks = _collect_tasks()
    for name, task in tasks.items():
        if not isinstance(task, Task):
            raise CLIError(f"plugin record {name!r} is a {type(task).__name__}, not a vf_core.tasks.Task")
    for task in tasks.values():
        clash = [a for a in task.aliases if a in tasks]
        if clash:
            raise CLIError(f"task {task.name!r} (backend {task.backend!r}) takes alias {clash[0]!r}, which is the name"
                           f" of the task of backend {tasks[clash[0]].backend!r}; one of them must be renamed")
    return tasks


def backends(tasks: dict[str, Task]) -> dict[str, list[Task]]:
    """Backend name -> its tasks, in registration order."""
    out: dict[str, list[Task]] = {}
    for task in tasks.values():
        out.setdefault(task.backend, []).append(task)
    return out


def _claim(fn, spec: Optional[str]) -> int:
    if spec is None:
        return NO
    try:
        return int(fn(spec) or NO)
    except Exception:  # a claim must never break the command
        return NO


def _names(tasks) -> str:
    named = [f"{t.name}" + (f" ({', '.join(t.aliases)})" if t.aliases else "") for t in tasks]
    return ", ".join(named)


def choose_task(tasks: dict[str, Task], model: str, *, data: Optional[str] = None, task: Optional[str] = None,
                backend: Optional[str] = None) -> tuple[Task, bool]:
    """``(task, explicit)`` for ``--model`` (and ``--data``), ``--task`` (a name, an alias, or None/``auto``) and
    ``--backend``; ``explicit`` is True when ``--task`` chose it. Errors say what was expected."""
    if not tasks:
        raise CLIError(NO_BACKEND)
    pool = list(tasks.values())
    if backend:
        pool = [t for t in pool if t.backend == backend]
        if not pool:
            raise CLIError(f"unknown backend {backend!r}; installed: {', '.join(sorted(backends(tasks)))}")
    explicit = bool(task) and task != "auto"
    candidates = pool
    if explicit:
        candidates = [t for t in pool if t.answers_to(task)]
        if not candidates:
            where = f" of backend {backend!r}" if backend else ""
            raise CLIError(f"unknown task {task!r}{where}; installed tasks: {_names(pool)} (see `vectorfit list`)")
    scores = {t.name: _claim(t.claim_model, model) for t in pool}
    best = max(scores[t.name] for t in candidates)
    if best == NO:
        fits = [t.name for t in pool if scores[t.name] > NO]
        if explicit and fits:
            raise CLIError(f"task {task!r} does not train model {model!r}; the tasks that do: {', '.join(fits)}")
        aliases = sorted({a for t in pool for a in t.model_aliases})
        if os.path.sep in model or model.startswith(".") or Path(model).suffix:
            why = "does not exist" if not Path(model).exists() else "is not a model directory any backend reads"
            raise CLIError(f"unknown model {model!r}: the path {why}; give a local model directory, a built-in alias"
                           f" ({', '.join(aliases)}) or a timm model name with --checkpoint")
        raise CLIError(f"unknown model {model!r}: not a built-in alias ({', '.join(aliases)}), a local directory, or a"
                       " model name an installed backend knows; see `vectorfit list`")
    winners = [t for t in candidates if scores[t.name] == best]
    if data and len({t.backend for t in winners}) == 1:
        # the model's favourites are unsure of the data: a task of the same backend that is sure of it and can
        # load the model runs instead (a text model on a SQuAD file: question-answering, not classification)
        if max(_claim(t.claim_data, data) for t in winners) < SURE:
            sure = [t for t in candidates if t.backend == winners[0].backend and scores[t.name] > NO
                    and _claim(t.claim_data, data) == SURE]
            if sure:
                top = max(scores[t.name] for t in sure)
                winners = [t for t in sure if scores[t.name] == top]
    if len(winners) > 1 and data:  # let the data decide between equally sure tasks
        by_data = {t.name: _claim(t.claim_data, data) for t in winners}
        top = max(by_data.values())
        if top > NO:
            winners = [t for t in winners if by_data[t.name] == top]
    owners = sorted({t.backend for t in winners})
    if len(owners) > 1:
        raise CLIError(f"model {model!r} could be loaded by backends {', '.join(owners)}; choose one with --backend")
    return winners[0], explicit


def check_data(tasks: dict[str, Task], task: Task, data: str) -> None:
    """Fail early when ``--data`` belongs to another backend or does not exist. A task that is only unsure of the
    data (``MAYBE``: a name that could be a hub dataset) yields to another backend that is sure of it."""
    claim = _claim(task.claim_data, data)
    if claim == SURE:
        return
    others = [t for t in tasks.values() if t.backend != task.backend and _claim(t.claim_data, data) == SURE]
    if claim > NO and not others:
        return
    if others:
        raise CLIError(f"dataset {data!r} is for the {others[0].backend!r} backend, but the model is a"
                       f" {task.backend!r} model")
    if not Path(data).expanduser().exists():
        aliases = sorted({a for t in backends(tasks).get(task.backend, [task]) for a in t.datasets})
        raise CLIError(f"data {data!r}: no such file or folder, and not a built-in dataset of the {task.backend!r}"
                       f" backend ({', '.join(aliases)})")
    raise CLIError(f"data {data!r} is not a format the {task.name!r} task ({task.backend!r} backend) reads")


def is_alias(spec: str) -> bool:
    """Whether ``spec`` is a built-in model or dataset alias of an installed task."""
    try:
        tasks = list_tasks()
    except Exception:
        return False
    return any(spec in t.model_aliases or spec in t.datasets for t in tasks.values())


def task_of_run(tasks: dict[str, Task], run: Run) -> Task:
    """The task that trained ``run``: its ``task_name``, or (runs made before tasks had names) its backend's task
    for its kind of labels (the aliases ``classification``, ``regression``)."""
    if run.task_name in tasks:
        return tasks[run.task_name]
    same = backends(tasks).get(run.backend)
    if not same:
        raise CLIError(f"the run was trained with the {run.backend!r} backend, which is not installed")
    if run.task_name:
        raise CLIError(f"the run was trained by task {run.task_name!r} of the {run.backend!r} backend, which is not"
                       f" installed (installed: {_names(same)})")
    return next((t for t in same if t.answers_to(run.task)), same[0])


def get_runner(task: Task) -> TaskRunner:
    """The task's runner (its heavy imports happen now); a missing library is one line naming what to install."""
    missing = task.missing()
    if missing:
        hint = f"; {task.install_hint}" if task.install_hint else ""
        raise CLIError(f"the {task.name!r} task ({task.backend!r} backend) needs {', '.join(missing)}, which is not"
                       f" installed{hint}")
    return task.runner()
