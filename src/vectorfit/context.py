"""What the command hands a task's runner: :class:`RunContext`, vf-core's :class:`~vf_core.tasks.TaskContext`.

A backend's runner knows its models, data and engine; everything the methods and the run folder need is the
same for every task, lives in this distribution, and reaches the runner through the context: applying the
method (the PEFT baselines included, so peft stays out of the backends), parameter groups with per-kind rates,
per-vector clipping, AVF's settings or a ready freezer, strength recording, ``run.json``, and finishing the run
(adapter or model, ``metrics.json``, figures). So the backends import vf-core and vf-avf, never this package.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from vf_avf import VectorFreezer
from vf_core.tasks import Task

from .early_stopping import EarlyStopping, validation_indices
from .errors import CLIError
from .methods import MethodSpec, Prepared, adalora_update, apply_method, resolve_avf
from .rundir import CHECKPOINTS_DIR, Run
from .training import (
    StrengthRecorder,
    clip_vector_gradients,
    finish_run,
    initial_weights,
    optimizer_groups,
    optimizer_steps,
    write_run_info,
)

__all__ = ["RunContext"]


class RunContext:
    """One command's view for a task (see :class:`vf_core.tasks.TaskContext` for each member).

    Args:
        task: the chosen task.
        settings: the parsed command line (``train``: with ``method_spec`` set; ``evaluate``: its own options).
        explicit: whether ``--task`` named the task (else it was recognised from the model and the data).
        run: the run folder being evaluated, if any.
        tasks: every installed task, by name (for :meth:`use_task`).
    """

    def __init__(self, task: Task, settings: argparse.Namespace, *, explicit: bool = False,
                 run: Optional[Run] = None, tasks: Optional[Mapping[str, Task]] = None) -> None:
        self.task = task
        self.settings = settings
        self.explicit = explicit
        self.run = run
        self._tasks = dict(tasks or {task.name: task})

    # -------------------------------------------------------------------------------------------- what
    @property
    def method(self) -> Optional[MethodSpec]:
        return getattr(self.settings, "method_spec", None)

    @property
    def output(self) -> Path:
        return Path(self.settings.output)

    @property
    def checkpoints(self) -> Path:
        return self.output / CHECKPOINTS_DIR

    def use_task(self, name: str) -> Task:
        task = self._tasks.get(name)
        if task is None or task.backend != self.task.backend:
            known = ", ".join(n for n, t in self._tasks.items() if t.backend == self.task.backend)
            raise CLIError(f"the {self.task.backend!r} backend asked for task {name!r}, which is not installed"
                           f" (its tasks: {known})")
        self.task = task
        return task

    def training_steps(self, num_train: int) -> tuple[int, int]:
        return optimizer_steps(num_train, self.settings)

    def validation_split(self, num_train: int) -> Optional[tuple[list[int], list[int]]]:
        """``(train, validation)`` indices of the training examples with ``--validation-fraction``, else None."""
        fraction = getattr(self.settings, "validation_fraction", None)
        if not fraction:
            return None
        try:
            return validation_indices(num_train, fraction, seed=getattr(self.settings, "data_seed", 0) or 0)
        except ValueError as exc:
            raise CLIError(f"--validation-fraction {fraction}: {exc}") from None

    def early_stopping(self, prepared: Prepared) -> Optional[EarlyStopping]:
        """The validation tracker of a run with ``--validation-fraction`` (stopping with ``--early-stopping``),
        watching the task's headline metric; None without a validation split."""
        if not getattr(self.settings, "validation_fraction", None):
            return None
        return EarlyStopping(prepared.model, metric=self.task.headline,
                             patience=getattr(self.settings, "early_stopping", None))

    # -------------------------------------------------------------------------------------------- records
    def record_run(self, *, model_path: str, label_names: Optional[Sequence[str]], kind: str, num_train: int,
                   num_eval: int, extra: Optional[dict] = None) -> dict:
        return write_run_info(self.settings, backend=self.task.backend, model_path=model_path,
                              label_names=list(label_names) if label_names is not None else None, task=kind,
                              num_train=num_train, num_eval=num_eval, extra=extra, task_name=self.task.name)

    def initial_weights(self, model) -> Optional[dict]:
        if getattr(self.settings, "no_plots", False):
            return None
        return initial_weights(model, self.method)[1]

    # -------------------------------------------------------------------------------------------- training
    def prepare(self, model, *, total_steps: int) -> Prepared:
        return apply_method(model, self.method, total_steps=total_steps, new_head=self.task.new_head)

    def optimizer_groups(self, prepared: Prepared) -> list[dict]:
        return optimizer_groups(prepared, self.settings)

    def clip_vector_gradients(self, prepared: Prepared) -> None:
        clip_vector_gradients(prepared.vf, getattr(self.settings, "max_grad_norm_per_vector", 0.0))

    def avf_config(self, total_steps: int) -> Optional[dict]:
        return resolve_avf(self.method.avf, total_steps)

    def freezer(self, prepared: Prepared, total_steps: int) -> Optional[VectorFreezer]:
        """A plain loop's freezer; a Trainer uses vf-avf's ``AVFCallback`` with :meth:`avf_config` instead."""
        config = self.avf_config(total_steps)
        if config is None or prepared.vf is None:
            return None
        return VectorFreezer(prepared.vf, config, total_steps=total_steps)

    def strength_recorder(self, prepared: Prepared) -> Optional[StrengthRecorder]:
        return StrengthRecorder(prepared.vf) if prepared.vf is not None else None

    def adalora_update(self, prepared: Prepared, global_step: int) -> None:
        if self.method.name == "adalora":
            adalora_update(prepared.model, global_step)

    def optimizer_step(self, prepared: Prepared, *, optimizer, scheduler, global_step: int,
                       freezer: Optional[VectorFreezer] = None, clip_grad_norm=None) -> None:
        if freezer is not None:
            freezer.step(global_step)
        max_norm = getattr(self.settings, "max_grad_norm", 0.0)
        if clip_grad_norm is not None and max_norm and max_norm > 0:
            clip_grad_norm(max_norm)
        self.clip_vector_gradients(prepared)
        optimizer.step()
        scheduler.step()
        self.adalora_update(prepared, global_step)
        optimizer.zero_grad(set_to_none=True)

    def finish(self, prepared: Prepared, metrics: dict, *, train_seconds: float,
               save_full_model: Callable[[Path], None], w0: Optional[dict] = None, recorder: Any = None,
               avf_state: Optional[dict] = None, load_full: Optional[Callable[[Run], Any]] = None,
               extra: Optional[dict] = None) -> dict:
        return finish_run(self.settings, prepared, metrics, task=self.task, train_seconds=train_seconds,
                          save_full_model=save_full_model, w0=w0, recorder=recorder, avf_state=avf_state,
                          load_full=load_full, extra=extra)
