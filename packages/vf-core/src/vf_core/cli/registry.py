"""Which installed recipe handles a command: the ``vectorfit_cli_commands`` hook's records, and their claims."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .records import NO, SURE, CLIError, Recipe

__all__ = ["list_recipes", "choose_recipe", "check_data", "get_runner", "is_alias"]


def list_recipes() -> dict[str, Recipe]:
    """Every installed recipe (``vectorfit_cli_commands`` hook), by name; duplicates are an error."""
    from ..plugins import collect_named

    recipes = collect_named("vectorfit_cli_commands")
    for name, rec in recipes.items():
        if not isinstance(rec, Recipe):
            raise CLIError(f"plugin record {name!r} is a {type(rec).__name__}, not a vf_core.cli.Recipe")
    return recipes


def _safe_claim(fn, spec: str) -> int:
    try:
        return int(fn(spec) or NO)
    except Exception:  # a claim must never break the command
        return NO


def choose_recipe(recipes: dict[str, Recipe], model: str, backend: Optional[str] = None,
                  data: Optional[str] = None) -> Recipe:
    """The recipe for ``--model`` (``--backend`` forces one); errors name what was expected."""
    if not recipes:
        raise CLIError("no backend is installed for the vectorfit command; install vf-backends-nlp[transformers]"
                       " (text) or vf-backends-vision[timm] (images)")
    if backend:
        if backend not in recipes:
            raise CLIError(f"unknown backend {backend!r}; installed: {', '.join(sorted(recipes))}")
        return recipes[backend]
    scores = {name: _safe_claim(r.claim_model, model) for name, r in recipes.items()}
    best = max(scores.values())
    if best == NO:
        aliases = sorted(a for r in recipes.values() for a in r.models)
        if os.path.sep in model or model.startswith(".") or Path(model).suffix:
            why = "does not exist" if not Path(model).exists() else "is not a model directory any backend reads"
            raise CLIError(f"unknown model {model!r}: the path {why}; give a local model directory, a built-in alias"
                           f" ({', '.join(aliases)}) or a timm model name with --checkpoint")
        raise CLIError(f"unknown model {model!r}: not a built-in alias ({', '.join(aliases)}), a local directory, or a"
                       " model name an installed backend knows; see `vectorfit list`")
    winners = [n for n, s in scores.items() if s == best]
    if len(winners) > 1 and data:  # let the data decide between equally sure recipes
        by_data = [n for n in winners if _safe_claim(recipes[n].claim_data, data) > NO]
        winners = by_data or winners
    if len(winners) > 1:
        raise CLIError(f"model {model!r} could be loaded by backends {', '.join(winners)}; choose one with --backend")
    return recipes[winners[0]]


def check_data(recipes: dict[str, Recipe], recipe: Recipe, data: str) -> None:
    """Fail early when ``--data`` belongs to another backend or does not exist."""
    mine = _safe_claim(recipe.claim_data, data)
    if mine > NO:
        return
    others = [n for n, r in recipes.items() if n != recipe.name and _safe_claim(r.claim_data, data) == SURE]
    if others:
        raise CLIError(f"dataset {data!r} is for the {others[0]!r} backend, but the model is a {recipe.name!r} model")
    if not Path(data).expanduser().exists():
        aliases = sorted(recipe.datasets)
        raise CLIError(f"data {data!r}: no such file or folder, and not a built-in dataset of the {recipe.name!r}"
                       f" backend ({', '.join(aliases)})")
    raise CLIError(f"data {data!r} is not a format the {recipe.name!r} backend reads")


def is_alias(spec: str) -> bool:
    try:
        recipes = list_recipes()
    except Exception:
        return False
    return any(spec in r.models or spec in r.datasets for r in recipes.values())


def get_runner(recipe: Recipe):
    import importlib.util

    missing = [m for m in recipe.requires if importlib.util.find_spec(m) is None]
    if missing:
        hint = f"; {recipe.install_hint}" if recipe.install_hint else ""
        raise CLIError(f"the {recipe.name!r} backend needs {', '.join(missing)}, which is not installed{hint}")
    return recipe.runner()
