"""`Task`: a kind of training a backend offers the ``vectorfit`` command, and the interfaces around it.

A backend (or any third-party package) contributes :class:`Task` records through the ``vectorfit_tasks`` hook,
as it contributes :class:`~vf_core.families.Family` records through ``vectorfit_families``. A record is cheap:
names, descriptions, small predicates and factories; its :attr:`Task.runner` imports the heavy machinery
(transformers, timm, accelerate) only when a command runs, so ``vectorfit --help`` and ``vectorfit list`` never
do.

The command (the ``vectorfit`` distribution, above every backend) picks a task (``--task NAME``, an alias, or
recognised from ``--model`` and ``--data``) and calls its runner with a :class:`TaskContext`: the run folder,
the settings, the method to apply and the helpers every task shares (method application, parameter groups,
AVF, the run's records and figures). A backend therefore never imports the command; it imports vf-core (and
vf-avf for freezing inside its own engine).

Example (a backend's ``tasks.py``, registered under the ``vectorfit`` entry-point group)::

    from vf_core.metrics import classification_metrics, classification_stall
    from vf_core.plugins import hookimpl
    from vf_core.tasks import NO, SURE, Task

    def _runner():
        from .runner import MyRunner   # heavy imports happen here, when a command runs
        return MyRunner()

    @hookimpl
    def vectorfit_tasks():
        return [Task(name="text-classification", backend="nlp", description="...",
                     claim_model=lambda spec: SURE if spec == "minilm" else NO,
                     claim_data=lambda spec: SURE if spec == "rotten-tomatoes" else NO,
                     runner=_runner, metrics=classification_metrics, headline="eval_accuracy",
                     stalled=classification_stall, aliases=("classification",))]
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Protocol, Sequence

from .errors import PluginError

if TYPE_CHECKING:  # pragma: no cover
    import argparse

    from torch import nn

__all__ = ["Task", "TaskRunner", "TaskContext", "RunRecord", "NO", "MAYBE", "SURE"]

#: answers of :attr:`Task.claim_model` / :attr:`Task.claim_data`: not mine, plausibly mine, certainly mine
NO, MAYBE, SURE = 0, 1, 2

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class Task:
    """A training task a backend offers: what it accepts, how it builds, trains and scores a model.

    Args:
        name: unique name (``"text-classification"``); ``vectorfit train --task NAME`` selects it. Lower case,
            digits and ``-``.
        backend: the backend that provides it (``"nlp"``, ``"vision"`` or a plugin's name); ``--backend NAME``
            restricts the choice to its tasks.
        description: one line for ``vectorfit list`` and ``--help``.
        claim_model: ``spec -> NO | MAYBE | SURE``: whether ``--model spec`` is a model this task trains (an
            alias, a local directory of its format, a name its library knows). Cheap; must never raise.
        claim_data: ``spec -> NO | MAYBE | SURE`` for ``--data spec``.
        runner: a factory of the :class:`TaskRunner` that does the work; heavy imports happen there.
        models: which models it accepts, in words (``vectorfit list``).
        data: which data it reads, in words.
        model_aliases: built-in model aliases it loads, alias -> description.
        datasets: built-in dataset aliases it reads, alias -> description.
        aliases: other names ``--task`` accepts (``("classification",)``); several tasks may share an alias, the
            model and the data then decide between them.
        build: how it builds the model with its head: ``build(model_spec, **options) -> model`` (or what the
            runner documents), imported lazily.
        collator: how it batches examples: ``collator(...)`` -> a collate function, imported lazily.
        metrics: ``metrics(predictions, labels, num_labels=None) -> {name: value}``, the names without the
            ``eval_`` prefix (:mod:`vf_core.metrics` has classification's and regression's).
        headline: the metric runs are compared by, as written in ``metrics.json`` (``"eval_accuracy"``).
        stalled: ``stalled(metrics) -> reason or None``: why a run's eval metrics say it learnt nothing beyond a
            constant answer (``metrics.json``'s ``stalled``); None: never checked.
        generates: whether the model generates outputs (text, images) rather than scoring fixed labels; such a
            task's runner also has ``generate`` (``vectorfit generate``).
        generated: what ``generate`` returns and ``vectorfit generate`` writes: ``"text"`` (one string per prompt,
            printed) or ``"images"`` (PIL images, written as PNGs and a grid into ``--output DIR``).
        new_head: whether the task puts a new head on the model (a classifier, ``qa_outputs``), which every
            method but ``full`` then trains in full; False for tasks that keep the model's own output layer
            (causal and seq2seq language modelling), where a method trains only what it adapts.
        defaults: training settings of ``vectorfit train`` this task wants unless the command line gives them,
            by option name (``{"epochs": 1.0, "batch_size": 8}``).
        add_arguments: adds the task's own options to ``vectorfit train`` (an argparse argument group); tasks of
            one backend may share the same function, which is then called once.
        engine: the training engine, in words (``"Hugging Face Trainer"``).
        validation: whether the runner carves a validation split out of the training examples
            (``--validation-fraction``, :meth:`TaskContext.validation_split`), evaluates it during training and
            stops early on it (``--early-stopping``, :meth:`TaskContext.early_stopping`), the final metrics on the
            eval split; the command refuses those options for a task without it.
        multiprocess: whether the runner trains in several processes when the command is started by a launcher
            (``torchrun``, ``accelerate launch``: ``WORLD_SIZE`` > 1) and writes the run folder from rank 0 only; the
            command refuses to start a task without it that way.
        requires: importable modules the runner needs; a missing one is reported with ``install_hint``.
        install_hint: what to install when ``requires`` is not met.
    """

    name: str
    backend: str
    description: str
    claim_model: Callable[[str], int]
    claim_data: Callable[[str], int]
    runner: Callable[[], "TaskRunner"]
    models: str = ""
    data: str = ""
    model_aliases: Mapping[str, str] = field(default_factory=dict)
    datasets: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    build: Optional[Callable[..., Any]] = None
    collator: Optional[Callable[..., Any]] = None
    metrics: Optional[Callable[..., dict]] = None
    headline: str = "eval_loss"
    stalled: Optional[Callable[[Mapping[str, Any]], Optional[str]]] = None
    generates: bool = False
    generated: str = "text"
    new_head: bool = True
    defaults: Mapping[str, Any] = field(default_factory=dict)
    add_arguments: Optional[Callable[[Any], None]] = None
    engine: str = ""
    validation: bool = False
    multiprocess: bool = False
    requires: tuple[str, ...] = ()
    install_hint: str = ""

    def __post_init__(self) -> None:
        where = f"task {self.name!r} (backend {self.backend!r})"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise PluginError(f"{where}: a task name is lower case letters, digits and '-', e.g. 'text-regression'")
        for alias in self.aliases:
            if not isinstance(alias, str) or not _NAME.match(alias) or alias == self.name:
                raise PluginError(f"{where}: alias {alias!r} must be a name like the task's own, and differ from it")
        for attr in ("claim_model", "claim_data", "runner"):
            if not callable(getattr(self, attr)):
                raise PluginError(f"{where}: {attr} must be callable, got {type(getattr(self, attr)).__name__}")
        if not self.headline.startswith("eval_"):
            raise PluginError(f"{where}: headline {self.headline!r} must name an eval metric ('eval_...')")
        if self.generated not in ("text", "images"):
            raise PluginError(f"{where}: generated is 'text' or 'images', got {self.generated!r}")
        if isinstance(self.requires, str):
            raise PluginError(f"{where}: requires is a tuple of module names, not a string")

    def claim(self, model: str, data: Optional[str] = None) -> int:
        """How sure this task is that it trains ``model`` on ``data``: the lower of the two claims (``NO`` when
        either raises)."""
        scores = [_safe(self.claim_model, model)]
        if data is not None:
            scores.append(_safe(self.claim_data, data))
        return min(scores)

    def missing(self) -> list[str]:
        """The modules of :attr:`requires` that are not installed (or cannot be imported)."""
        return [m for m in self.requires if not _importable(m)]

    def answers_to(self, name: str) -> bool:
        """Whether ``--task name`` may mean this task (its name or one of its aliases)."""
        return name == self.name or name in self.aliases


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _safe(fn: Callable[[str], int], spec: str) -> int:
    try:
        return int(fn(spec) or NO)
    except Exception:  # a claim must never break the command
        return NO


class RunRecord(Protocol):
    """A finished (or started) run folder as the command hands it to a task: ``run.json`` and its paths."""

    path: Path
    info: dict

    @property
    def backend(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def model_spec(self) -> str: ...
    @property
    def label_names(self) -> Optional[list[str]]: ...
    @property
    def task(self) -> str: ...
    @property
    def num_labels(self) -> int: ...
    @property
    def adapter_dir(self) -> Path: ...
    @property
    def model_dir(self) -> Path: ...


class TaskContext(Protocol):
    """What the command hands a task's runner. The runner trains with its own engine and calls these helpers,
    which are the same for every task: the method (``--method``: VectorFit, SVFit, SVFT, BitFit, LoRA,
    AdaLoRA, full) is applied, counted, saved and drawn identically whatever the backend."""

    task: Task                         #: the chosen task (see :meth:`use_task`)
    explicit: bool                     #: True when ``--task`` named it, False when it was recognised
    settings: "argparse.Namespace"     #: every option of the command line (evaluate: the run's stored ones too)
    run: Optional[RunRecord]           #: the run being evaluated or continued, if any
    method: Any                        #: the method and its options (``name``, ``avf``, ``is_peft``, ``label()``)

    @property
    def output(self) -> Path:
        """The run folder ``--output``."""

    @property
    def checkpoints(self) -> Path:
        """Where the engine keeps its checkpoints (``--resume`` reads them)."""

    def use_task(self, name: str) -> Task:
        """Switch to the installed task ``name`` of the same backend, once the data decided (a recognised text
        task whose labels turn out to be numbers is ``text-regression``); returns it."""

    def training_steps(self, num_train: int) -> tuple[int, int]:
        """``(steps per epoch, total optimizer steps)`` for ``num_train`` examples and the settings."""

    def record_run(self, *, model_path: str, label_names: Optional[Sequence[str]], kind: str, num_train: int,
                   num_eval: int, extra: Optional[dict] = None) -> dict:
        """Write ``run.json`` before training starts (``kind``: ``"classification"``, ``"regression"``...)."""

    def validation_split(self, num_train: int) -> Optional[tuple[list[int], list[int]]]:
        """``(train, validation)`` indices of the ``num_train`` training examples with ``--validation-fraction``
        (a fixed share, drawn with ``--data-seed``), or None: then the eval split is evaluated during training."""

    def early_stopping(self, prepared: Any) -> Any:
        """With a validation split, the tracker to call after each evaluation of it: ``update(step, metrics)``
        returns True when ``--early-stopping`` says stop; ``finish()`` puts the best state back and returns what
        ``metrics.json`` keeps (the validation curve, the best step). None without a validation split."""

    def initial_weights(self, model: "nn.Module") -> Optional[dict]:
        """The targeted weights before training (the figures' reference), or None when no figure is drawn."""

    def prepare(self, model: "nn.Module", *, total_steps: int) -> Any:
        """Apply the method to ``model`` in place; returns what to train (``.model``), the VectorFit model
        (``.vf``, or None) and the counts the run reports."""

    def optimizer_groups(self, prepared: Any) -> list[dict]:
        """The optimizer's parameter groups: every trainable parameter once, with its kind's learning rate."""

    def clip_vector_gradients(self, prepared: Any) -> None:
        """Clip each trainable vector's gradient on its own (``--max-grad-norm-per-vector``); call it right
        before the optimizer step."""

    def avf_config(self, total_steps: int) -> Optional[dict]:
        """The AVF settings with fractions of the run turned into steps, or None when AVF is off."""

    def freezer(self, prepared: Any, total_steps: int) -> Any:
        """A ready ``vf_avf.VectorFreezer`` for a plain loop (call ``step(global_step)`` after ``backward()``),
        or None when AVF is off."""

    def strength_recorder(self, prepared: Any) -> Any:
        """Records the training strength of every vector (``record(step, frozen)``), or None without vectors."""

    def adalora_update(self, prepared: Any, global_step: int) -> None:
        """AdaLoRA's rank allocation after each optimizer step, before ``zero_grad``; a no-op for other methods."""

    def optimizer_step(self, prepared: Any, *, optimizer: Any, scheduler: Any, global_step: int,
                       freezer: Any = None, clip_grad_norm: Optional[Callable[[float], Any]] = None) -> None:
        """Everything a plain loop does after ``backward()``, in the order every engine must keep: AVF's freezer
        (``step``), gradient clipping (``clip_grad_norm(max_norm)``, e.g. ``accelerator.clip_grad_norm_`` over
        the trained parameters, when ``--max-grad-norm`` > 0), per-vector clipping, the optimizer and the
        learning-rate scheduler, AdaLoRA's rank allocation, ``zero_grad``."""

    def finish(self, prepared: Any, metrics: dict, *, train_seconds: float,
               save_full_model: Callable[[Path], None], w0: Optional[dict] = None, recorder: Any = None,
               avf_state: Optional[dict] = None, load_full: Optional[Callable[[RunRecord], Any]] = None,
               extra: Optional[dict] = None) -> dict:
        """Save the trained state, ``metrics.json``, the strengths and the figures; returns the metrics."""


class TaskRunner(Protocol):
    """What a task's runner does. Every method gets what it needs from the command, never the other way round."""

    def train(self, ctx: TaskContext) -> dict:
        """Load model and data, ``ctx.prepare`` the model, train with the runner's engine, and ``ctx.finish``
        the run folder ``ctx.output``. Returns the metrics."""

    def load_model(self, spec: str, *, run: Optional[RunRecord] = None,
                   num_labels: Optional[int] = None) -> "nn.Module":
        """The base model ``spec`` (alias, directory, name) with its head (``num_labels`` outputs, or the run's),
        before any method is applied."""

    def evaluate(self, model: "nn.Module", ctx: TaskContext) -> dict:
        """Metrics of ``model`` (trained state applied) on the eval split of ``ctx.settings.data`` or of the
        run's data (``ctx.run``)."""

    def save_model(self, model: "nn.Module", directory: str, run: Optional[RunRecord]) -> None:
        """Save a plain (merged) model in the backend's format, loadable again with ``--model directory``."""

    # Tasks with ``generates=True`` also have:
    #
    # def generate(self, model, ctx: TaskContext, prompts: Sequence[str]) -> list[str]:
    #     """The generations of ``model`` (trained state applied, or merged) for ``prompts``, with the options of
    #     ``vectorfit generate`` in ``ctx.settings`` (``max_new_tokens``, ``num_beams``, ``temperature``,
    #     ``seed``). Tasks with ``generated="images"`` return PIL images instead, from ``num_images``, ``class_name``
    #     or the prompts, ``steps``, ``guidance_scale`` and ``seed``."""
