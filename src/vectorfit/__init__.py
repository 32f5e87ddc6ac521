"""VectorFit, the application: the ``vectorfit`` command above vf-core, vf-avf and the backends.

The command picks a training task (:class:`vf_core.tasks.Task`, contributed by a backend through the
``vectorfit_tasks`` hook), applies the chosen method (VectorFit, SVFit, SVFT, or the BitFit, LoRA, AdaLoRA and
full fine-tuning baselines), hands the task's runner a :class:`~vectorfit.context.RunContext`, and writes the
run folder (``run.json``, ``metrics.json``, the adapter, the figures). ``docs/cli.md`` is the guide,
``docs/architecture.md`` says what lives where and why.

Example:
    >>> from vectorfit import main
    >>> main(["list"])  # doctest: +SKIP
    task text-classification (backend nlp, ...
"""

__version__ = "0.1.0"

from .cli import main
from .context import RunContext
from .errors import CLIError
from .methods import DEFAULT_LR, METHODS, MethodSpec, Prepared, apply_method, restore_trained, save_trained
from .rundir import Run
from .selection import choose_task, list_tasks

__all__ = [
    "__version__",
    "main",
    "RunContext",
    "CLIError",
    "Run",
    "MethodSpec",
    "Prepared",
    "METHODS",
    "DEFAULT_LR",
    "apply_method",
    "restore_trained",
    "save_trained",
    "list_tasks",
    "choose_task",
]
