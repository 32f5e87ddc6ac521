"""The ``vectorfit`` command line: a thin dispatcher over the recipes the installed backends contribute.

vf-core itself imports neither transformers, timm nor diffusers: each backend registers, through the
``vectorfit_cli_commands`` hook, a :class:`Recipe` (its model aliases, datasets, model loading, data handling
and training engine). ``vectorfit train --model minilm ...`` then runs the text backend's recipe (the Hugging
Face Trainer), ``--model efficientnet-lite0`` the vision backend's (accelerate). See ``docs/cli.md``.

Example:
    >>> from vf_core.cli import main
    >>> main(["list"])  # doctest: +SKIP
    backend nlp: ...
"""

from .methods import DEFAULT_LR, METHODS, MethodSpec, Prepared, apply_method, restore_trained, save_trained
from .records import MAYBE, NO, SURE, CLIError, Recipe, Runner
from .rundir import Run
from .training import StrengthRecorder, compute_metrics, finish_run, primary_metric, write_run_info


def main(argv=None) -> int:
    """Run the ``vectorfit`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    from .app import main as _main

    return _main(argv)


__all__ = [
    "main",
    "Recipe",
    "Runner",
    "CLIError",
    "NO",
    "MAYBE",
    "SURE",
    "Run",
    "MethodSpec",
    "Prepared",
    "METHODS",
    "DEFAULT_LR",
    "apply_method",
    "restore_trained",
    "save_trained",
    "compute_metrics",
    "primary_metric",
    "StrengthRecorder",
    "write_run_info",
    "finish_run",
]
