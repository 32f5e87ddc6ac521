"""``vectorfit export RUN_DIR --format peft-lora [--rank R | --energy E] --output DIR``: a run's adapter written in
another format, with its fidelity report (:func:`vf_core.export.save_as_lora`, https://arxiv.org/abs/2503.19530)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vf_core import VectorFitModel

from .commands import _quiet, _run_and_task, _threads, load_trained
from .errors import CLIError
from .methods import VECTOR_METHODS

__all__ = ["cmd_export", "EXPORT_FORMATS"]

#: the formats ``vectorfit export`` writes
EXPORT_FORMATS = ("peft-lora",)


def _check(args: argparse.Namespace) -> None:
    """Every option checked before anything loads."""
    if args.format not in EXPORT_FORMATS:
        raise CLIError(f"unknown --format {args.format!r}; choose one of: {', '.join(EXPORT_FORMATS)}")
    if args.rank is not None and args.energy is not None:
        raise CLIError("give --rank or --energy, not both")
    if args.energy is not None and not 0 < args.energy <= 1:
        raise CLIError(f"--energy must be a share in (0, 1], got {args.energy:g}")
    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CLIError(f"--output {args.output!r} exists and is not an empty directory; choose a new directory")


def cmd_export(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    _quiet(args.verbose)
    _check(args)
    run, _, runner, _ = _run_and_task(args)
    if run.method not in VECTOR_METHODS:
        hint = " its adapter is already a PEFT adapter" if run.method in ("lora", "adalora") else ""
        raise CLIError(f"run {str(run.path)!r} was trained with --method {run.method}; export takes runs of"
                       f" {', '.join(VECTOR_METHODS)}{';' + hint if hint else ''}")
    if not run.adapter_dir.is_dir():
        raise CLIError(f"{run.adapter_dir} is missing; the run did not finish")
    _threads(args)
    model, _ = load_trained(runner, run)
    if not isinstance(model, VectorFitModel):  # pragma: no cover - restore_trained gives one for these methods
        raise CLIError(f"run {str(run.path)!r} did not load as a VectorFit model")
    report = model.save_as_lora(args.output, rank=args.rank, energy=args.energy, uniform_rank=args.uniform_rank,
                                base_model_name_or_path=run.model_spec)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0
