"""The records a backend returns from the ``vectorfit_cli_commands`` hook, and the runner protocol.

A backend contributes one :class:`Recipe` per kind of model it trains (text classifiers, image classifiers...).
The record itself is cheap: it holds names, descriptions and small predicates, and a ``runner`` factory that
imports the heavy machinery (transformers, timm, accelerate) only when a command actually needs it. So
``vectorfit --help`` and ``vectorfit list`` never import a backend's libraries.

Example (a backend's ``cli_plugin.py``)::

    from vf_core.cli import Recipe
    from vf_core.plugins import hookimpl

    @hookimpl
    def vectorfit_cli_commands():
        return [Recipe(name="nlp", description="...", models={"minilm": "..."}, datasets={...},
                       claim_model=claim_model, claim_data=claim_data, runner=lambda: NLPRunner())]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Protocol

from ..errors import VectorFitError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from .rundir import Run

__all__ = ["Recipe", "Runner", "CLIError", "NO", "MAYBE", "SURE"]

#: answers of ``Recipe.claim_model`` / ``claim_data``: not mine, plausibly mine, certainly mine
NO, MAYBE, SURE = 0, 1, 2


class CLIError(VectorFitError, ValueError):
    """Bad input to the ``vectorfit`` command; the message (one line) says what is wrong and what to do."""


@dataclass(frozen=True)
class Recipe:
    """One backend's contribution to the ``vectorfit`` command.

    Args:
        name: unique name (``"nlp"``, ``"vision"``); ``--backend NAME`` selects it explicitly.
        description: one line for ``vectorfit list`` and ``--help``.
        models: built-in model aliases this recipe loads, alias -> description.
        datasets: built-in dataset aliases it reads, alias -> description.
        claim_model: ``spec -> NO | MAYBE | SURE``: whether ``--model spec`` is this recipe's (an alias, a local
            directory of its format, a model name its library knows). Must be cheap and never raise.
        claim_data: ``spec -> NO | MAYBE | SURE`` for ``--data spec``.
        runner: a factory of the :class:`Runner` that does the work; heavy imports happen here or later.
        add_arguments: adds the recipe's own options to ``vectorfit train`` (an argparse argument group).
        engine: the training engine, in words, for ``vectorfit list`` (``"Hugging Face Trainer"``).
        requires: importable modules the runner needs; a missing one is reported with ``install_hint``.
        install_hint: what to install when ``requires`` is not met.
    """

    name: str
    description: str
    claim_model: Callable[[str], int]
    claim_data: Callable[[str], int]
    runner: Callable[[], "Runner"]
    models: Mapping[str, str] = field(default_factory=dict)
    datasets: Mapping[str, str] = field(default_factory=dict)
    add_arguments: Optional[Callable[[Any], None]] = None
    engine: str = ""
    requires: tuple[str, ...] = ()
    install_hint: str = ""


class Runner(Protocol):
    """What a recipe's runner does. ``args`` is the parsed command line (a namespace of every option)."""

    def train(self, args: argparse.Namespace) -> dict:
        """Load model and data, apply ``args.method``, train, and write the run directory ``args.output``
        (``run.json``, ``metrics.json``, ``adapter/`` or ``model/``, ``plots/``). Returns the metrics."""

    def load_model(self, spec: str, *, run: Optional["Run"] = None, num_labels: Optional[int] = None) -> "nn.Module":
        """The base model ``spec`` (alias, directory, name) with a classification head of ``num_labels``
        (from ``run`` when given), before any fine-tuning method is applied."""

    def evaluate(self, model: "nn.Module", args: argparse.Namespace, run: Optional["Run"]) -> dict:
        """Metrics of ``model`` (trained state applied) on the eval split of ``args.data`` (or the run's data)."""

    def save_model(self, model: "nn.Module", directory: str, run: Optional["Run"]) -> None:
        """Save a plain (merged) model in the backend's own format, loadable again with ``--model directory``."""
