"""The subcommands of ``vectorfit``: ``train``, ``evaluate``, ``merge``, ``plot``, ``list`` (and ``inspect``,
in :mod:`vectorfit.inspect`). Each takes the parsed namespace and the parser and returns the exit status."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Optional

import torch
from safetensors import safe_open
from vf_avf import AVFConfig
from vf_core.errors import AdapterError, DataWarning, VectorFitError
from vf_core.saving import WEIGHTS_NAME, read_adapter_config
from vf_core.tasks import Task

from . import plots
from .context import RunContext
from .errors import CLIError
from .inspect import inspect_command
from .methods import DEFAULT_LR, DEFAULT_LR_SCALE, METHODS, VECTOR_METHODS, MethodSpec, merged_module, restore_trained
from .rundir import (
    AVF_FILE,
    LOCK_FILE,
    METRICS_FILE,
    RUN_FILE,
    STRENGTHS_FILE,
    Run,
    RunLock,
    launch_rank,
    launch_world_size,
    read_json,
    write_json,
)
from .selection import backends, check_data, choose_task, get_runner, is_alias, list_tasks, task_of_run
from .training import draw_plots, find_full_run, initial_weights, summary_lines

__all__ = ["cmd_train", "cmd_evaluate", "cmd_generate", "cmd_merge", "cmd_plot", "cmd_list", "cmd_inspect", "load_trained",
           "method_spec_from_args"]


def _quiet(verbose: bool) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("always", category=DataWarning)  # about the user's data: always one line on stderr
    warnings.formatwarning = _format_warning
    _show_core_info()


class _CoreInfo(logging.Handler):
    """vf-core's INFO lines (the family it inferred for a model no backend declares) as ``vectorfit: ...`` lines on
    the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"vectorfit: {record.getMessage()}", file=sys.stderr)


def _show_core_info() -> None:
    logger = logging.getLogger("vf_core")
    if not any(isinstance(h, _CoreInfo) for h in logger.handlers):
        logger.addHandler(_CoreInfo(logging.INFO))
    logger.setLevel(logging.INFO)


_plain_format = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    if issubclass(category, DataWarning):
        return f"vectorfit: warning: {message}\n"
    return _plain_format(message, category, filename, lineno, line)


def _threads(args) -> None:
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def method_spec_from_args(args: argparse.Namespace) -> MethodSpec:
    """The method and its options from ``vectorfit train``'s options: the VectorFitConfig fields under their own
    names (``--svfit-rank`` is ``rank``...), only those the method reads."""
    name = args.method
    avf = args.avf if args.avf is not None else name == "vectorfit"
    if avf and name not in VECTOR_METHODS:
        raise CLIError(f"--avf freezes VectorFit vectors; method {name!r} has none")
    if args.no_bias and name != "vectorfit":
        raise CLIError("--no-bias applies to --method vectorfit (svfit and svft train no bias by default)")
    if args.svfit_rank and args.svfit_energy:
        raise CLIError("give --svfit-rank or --svfit-energy, not both")
    if args.svfit_energy is not None and not 0.0 < args.svfit_energy <= 1.0:
        raise CLIError(f"--svfit-energy must lie in (0, 1], got {args.svfit_energy}")
    sigma_param = getattr(args, "sigma_parametrization", None)
    if sigma_param not in (None, "absolute") and name != "vectorfit":
        raise CLIError(f"--sigma-parametrization applies to --method vectorfit, not {name!r}")
    config: dict = {"roles": list(args.roles)}
    if args.target_modules:
        config["target_modules"] = args.target_modules
    if getattr(args, "heads", None) is not None:
        config["modules_to_save"] = list(args.heads)
    if name == "vectorfit":
        if args.no_bias:
            config["train_bias"] = False
        if sigma_param is not None:
            config["sigma_parametrization"] = sigma_param
    if name == "svfit":
        if args.svfit_energy is not None:
            config["energy"] = args.svfit_energy
        elif args.svfit_rank is not None:
            config["rank"] = args.svfit_rank
    if name == "svft":
        config["pattern"] = args.svft_pattern
        config["off_diagonals"] = args.svft_off_diagonals
    return MethodSpec(name=name, config=config, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
                      lora_dropout=args.lora_dropout, adalora_init_r=args.adalora_init_r,
                      avf=_avf_config(args) if avf else None)


def _avf_config(args: argparse.Namespace) -> dict:
    policy = args.avf_policy
    if policy in ("topk_ema", "random"):
        fields = {"policy": policy, "t_i": args.avf_t_i, "t_f": args.avf_t_f, "n_f": args.avf_n_f, "k": args.avf_k}
        if policy == "topk_ema":
            fields["beta"] = args.avf_beta
        else:
            fields["seed"] = args.seed
    elif policy == "dropout":
        fields = {"policy": policy, "p": 0.1 if args.avf_p is None else args.avf_p, "seed": args.seed}
    else:
        fields = {"policy": policy}
    try:
        return AVFConfig.model_validate(fields).model_dump(mode="json")
    except VectorFitError as exc:
        raise CLIError(f"AVF options: {' '.join(str(exc).split())}") from None


def _merge_resume(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """With --resume, fill the options not given from DIR/run.json and refuse conflicting ones."""
    run_file = Path(args.output) / RUN_FILE
    if not run_file.is_file():
        raise CLIError(f"--resume: {run_file} does not exist; nothing to resume in {args.output}")
    stored = read_json(run_file).get("args", {})
    train = getattr(parser, "train_parser", parser)
    may_change = {"epochs", "max_steps", "logging_steps", "save_total_limit", "no_plots", "compare_full", "device",
                  "eval_batch_size"}
    for kind in ("sigma", "bias", "head"):  # a run from before per-kind rates trained every kind at --lr
        if f"lr_{kind}" not in stored and getattr(args, f"lr_{kind}", None) is None:
            setattr(args, f"lr_{kind}", stored.get("lr"))
    for key, value in stored.items():
        if not hasattr(args, key):
            continue
        current, default = getattr(args, key), train.get_default(key)
        if current is None or current == default:
            setattr(args, key, value)
        elif current != value and key not in may_change:
            raise CLIError(f"--resume: --{key.replace('_', '-')} {current!r} differs from the run's {value!r};"
                           " resume with the same options, or start a new --output")


def _given(parser: argparse.ArgumentParser, argv) -> set[str]:
    """The options (by dest) that the command line ``argv`` spells out."""
    given = set()
    for action in parser._actions:
        for opt in action.option_strings:
            if any(tok == opt or tok.startswith(opt + "=") for tok in argv):
                given.add(action.dest)
    return given


def _apply_task_defaults(args: argparse.Namespace, parser: argparse.ArgumentParser, task: Task) -> None:
    """The task's default training settings, for every option the command line left at the command's default
    (with ``--resume``, the run's stored options count as given: a resumed run keeps them)."""
    train = getattr(parser, "train_parser", parser)
    given = _given(train, getattr(args, "argv", None) or ())
    if getattr(args, "resume", None) and (Path(args.output) / RUN_FILE).is_file():
        given |= set(read_json(Path(args.output) / RUN_FILE).get("args", {}))  # the run's own settings stay
    for key, value in task.defaults.items():
        if not hasattr(args, key):
            raise CLIError(f"task {task.name!r} declares a default for {key!r}, which is not an option of"
                           " `vectorfit train`")
        if key not in given and getattr(args, key) == train.get_default(key):
            setattr(args, key, value)


def cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    _quiet(args.verbose)
    if not args.output:
        raise CLIError("--output DIR is required (the run directory to write)")
    if args.resume:
        _merge_resume(args, parser)
    missing = [f"--{k}" for k in ("model", "data") if not getattr(args, k)]
    if missing:
        raise CLIError(f"the following arguments are required: {', '.join(missing)}")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--output {args.output!r} exists and is not a directory")
    if (out / METRICS_FILE).is_file() and not args.resume and not args.overwrite:
        raise CLIError(f"{out} already holds a finished run; pass --overwrite to replace it or choose another --output")
    for key in ("model", "data"):  # local paths are stored absolute in run.json, so later commands find them
        value = getattr(args, key)
        if value and os.path.exists(os.path.expanduser(value)) and not is_alias(value):
            setattr(args, key, str(Path(value).expanduser().resolve()))
    tasks = list_tasks()
    task, explicit = choose_task(tasks, args.model, data=args.data, task=args.task, backend=args.backend)
    check_data(tasks, task, args.data)
    _apply_task_defaults(args, parser, task)
    if not 0.0 < args.eval_fraction < 1.0:
        raise CLIError(f"--eval-fraction must lie strictly between 0 and 1, got {args.eval_fraction}")
    _check_validation(args, task)
    if args.epochs <= 0 and not args.max_steps:
        raise CLIError(f"--epochs must be positive, got {args.epochs}")
    if args.compare_full and not Path(args.compare_full).is_dir():
        raise CLIError(f"--compare-full {args.compare_full!r}: no such run directory")
    args.method_spec = method_spec_from_args(args)
    if args.lr is None:
        args.lr = DEFAULT_LR.get(args.method, DEFAULT_LR["vectorfit"])
    if args.lr <= 0:
        raise CLIError(f"--lr must be positive, got {args.lr}")
    for kind, scale in DEFAULT_LR_SCALE.get(args.method, {}).items():
        if getattr(args, f"lr_{kind}", None) is None:
            setattr(args, f"lr_{kind}", args.lr * scale)
    for kind in ("sigma", "bias", "head"):
        value = getattr(args, f"lr_{kind}", None)
        if value is not None and value <= 0:
            raise CLIError(f"--lr-{kind} must be positive, got {value}")
    if getattr(args, "lr_sigma", None) is not None and args.method not in VECTOR_METHODS:
        raise CLIError(f"--lr-sigma applies to vectorfit, svfit and svft, not {args.method!r}")
    if getattr(args, "max_grad_norm_per_vector", 0.0) and args.method not in VECTOR_METHODS:
        raise CLIError(f"--max-grad-norm-per-vector applies to vectorfit, svfit and svft, not {args.method!r}")
    if getattr(args, "max_grad_norm_per_vector", 0.0) < 0:
        raise CLIError(f"--max-grad-norm-per-vector must be 0 (off) or positive, got {args.max_grad_norm_per_vector}")
    if launch_world_size() > 1 and not task.multiprocess:
        raise CLIError(f"the {task.name} task trains in one process ({task.engine or 'its own loop'}); start it"
                       " without torchrun / accelerate launch (the text tasks, on the Trainer, take several)")
    args.backend = task.backend
    args.task = task.name if explicit else "auto"  # run.json: --resume recognises the task again when it was
    runner = get_runner(task)
    _threads(args)
    main_process = launch_rank() == 0  # of a multi-process launch, rank 0 alone writes the run folder
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        # a second run into the same --output is refused while this one writes it
        with RunLock(out) if main_process else contextlib.nullcontext():
            if main_process and args.overwrite and not args.resume and (out / METRICS_FILE).is_file():
                (out / METRICS_FILE).unlink()
            metrics = runner.train(RunContext(task, args, explicit=explicit, tasks=tasks))
    except BaseException:
        if main_process and created and {p.name for p in out.iterdir()} <= {LOCK_FILE}:  # nothing written: no litter
            shutil.rmtree(out, ignore_errors=True)
        raise
    if main_process:
        print("\n".join(summary_lines(metrics, out)))
    return 0


def _check_validation(args: argparse.Namespace, task) -> None:
    """``--validation-fraction`` and ``--early-stopping``: in range, together, on a task whose runner takes them."""
    fraction, patience = getattr(args, "validation_fraction", None), getattr(args, "early_stopping", None)
    if fraction is not None and not 0.0 < fraction < 1.0:
        raise CLIError(f"--validation-fraction must lie strictly between 0 and 1, got {fraction}")
    if patience is not None and fraction is None:
        raise CLIError("--early-stopping needs a validation split to watch: add --validation-fraction F (stopping on"
                       " the eval split would report a score chosen on it)")
    if (fraction is not None or patience is not None) and not getattr(task, "validation", False):
        raise CLIError(f"the {task.name} task does not take --validation-fraction / --early-stopping (the text and"
                       " image classification and text regression tasks do)")
    if patience is not None and args.resume:
        raise CLIError("--resume: a run with --early-stopping keeps its best state in memory and cannot be resumed;"
                       " start it again (--overwrite)")


def _run_and_task(args):
    """``(run or None, task, runner, tasks)`` for evaluate / merge / plot / inspect."""
    tasks = list_tasks()
    run = None
    if getattr(args, "run", None):
        run = Run.open(args.run)
        task = task_of_run(tasks, run)
    elif getattr(args, "model", None):
        task, _ = choose_task(tasks, args.model, data=getattr(args, "data", None),
                              task=getattr(args, "task", None), backend=getattr(args, "backend", None))
    else:
        raise CLIError("give a run directory, or --model")
    return run, task, get_runner(task), tasks


def load_trained(runner, run, *, model_spec: Optional[str] = None, adapter: Optional[str] = None,
                 num_labels: Optional[int] = None):
    """The model of a run with its trained state applied (or ``--model`` with an optional ``--adapter``)."""
    if run is not None:
        if run.method == "full":
            if not run.model_dir.is_dir():
                raise CLIError(f"{run.model_dir} is missing; the full fine-tuning run did not finish")
            return runner.load_model(str(run.model_dir), run=run), None
        base = runner.load_model(run.model_spec, run=run)
        return restore_trained(base, run.method, run.adapter_dir), base
    base = runner.load_model(model_spec, num_labels=num_labels)
    if adapter:
        return restore_trained(base, "vectorfit", Path(adapter)), base
    return base, None


def _adapter_num_labels(adapter: Optional[str]) -> Optional[int]:
    """The head size stored in a VectorFit adapter (its 2-D ``module::*weight`` tensor), if any."""
    if not adapter:
        return None
    try:
        meta = read_adapter_config(adapter)
    except AdapterError as exc:
        raise CLIError(str(exc)) from None
    heads = meta.get("modules_to_save") or []
    path = Path(adapter) / WEIGHTS_NAME
    if not path.is_file():
        raise CLIError(f"{path} is missing; the adapter was not saved completely")
    with safe_open(str(path), "pt") as fh:
        for key in fh.keys():
            is_head = any(key[len("module::"):].startswith(h + ".") for h in heads)
            if key.startswith("module::") and key.endswith("weight") and is_head:
                shape = fh.get_slice(key).get_shape()
                if len(shape) >= 2:
                    return int(shape[0])
    return None


def cmd_evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    _quiet(args.verbose)
    if args.run and args.model:
        raise CLIError("give a run directory or --model, not both")
    if args.adapter and not args.model:
        raise CLIError("--adapter goes with --model (a run directory finds its own adapter)")
    if not args.run and not args.data:
        raise CLIError("--data is required when evaluating --model")
    run, task, runner, tasks = _run_and_task(args)
    if args.data:
        check_data(tasks, task, args.data)
    _threads(args)
    model, _ = load_trained(runner, run, model_spec=args.model, adapter=args.adapter,
                            num_labels=_adapter_num_labels(args.adapter))
    explicit = bool(args.task) and args.task != "auto"
    metrics = runner.evaluate(model, RunContext(task, args, explicit=explicit, run=run, tasks=tasks))
    if run is not None:
        write_json(run.path / "eval_metrics.json", metrics)
    if args.output:
        write_json(args.output, metrics)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_merge(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    _quiet(args.verbose)
    if args.run and args.model:
        raise CLIError("give a run directory or --model with --adapter, not both")
    if args.model and not args.adapter:
        raise CLIError("--model needs --adapter (the VectorFit adapter to merge into it)")
    run, _, runner, _ = _run_and_task(args)
    out = Path(args.output)
    if out.exists() and any(out.iterdir()):
        raise CLIError(f"--output {args.output!r} exists and is not empty; choose a new directory")
    _threads(args)
    model, _ = load_trained(runner, run, model_spec=args.model, adapter=args.adapter,
                            num_labels=_adapter_num_labels(args.adapter))
    plain = merged_module(model)
    runner.save_model(plain, str(out), run)
    print(f"merged model saved to {out} (load it with --model {out})")
    return 0


_PROMPT_FIELDS = ("prompt", "source", "text")


def _prompt_of(row, where: str) -> str:
    if isinstance(row, str):
        return row
    text = next((row[k] for k in _PROMPT_FIELDS if isinstance(row, dict) and k in row), None)
    if not isinstance(text, str):
        raise CLIError(f"--input {where} has no 'prompt', 'source' or 'text' string field")
    return text


def _prompts(args: argparse.Namespace) -> list[str]:
    """``--prompt`` (repeatable) or ``--input FILE``: one prompt per line of a text file; the ``prompt``, ``source``
    or ``text`` field of each line of a JSON-lines file, of each object of a JSON array (or the array's strings), or
    that column of a CSV/TSV file."""
    if bool(args.prompt) == bool(args.input):
        raise CLIError("give --prompt TEXT (repeatable) or --input FILE, one of the two")
    if args.prompt:
        return list(args.prompt)
    path = Path(args.input).expanduser()
    if not path.is_file():
        raise CLIError(f"--input {args.input!r}: no such file")
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        import csv

        rows = list(csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ","))
        return [_prompt_of(row, f"{path}: row {i}") for i, row in enumerate(rows, 2)]
    if suffix == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CLIError(f"--input {path}: not JSON ({exc.msg}); a .json file holds an array of prompts") from None
        if not isinstance(items, list):
            raise CLIError(f"--input {path}: a .json file holds an array of strings or of objects with a 'prompt'")
        return [_prompt_of(item, f"{path}: item {i}") for i, item in enumerate(items, 1)]
    lines = [line for line in text.splitlines() if line.strip()]
    if suffix not in (".jsonl", ".ndjson"):
        return lines
    prompts = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CLIError(f"--input {path}: line {number} is not JSON ({exc.msg})") from None
        prompts.append(_prompt_of(row, f"{path}: line {number}"))
    return prompts


def cmd_generate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``vectorfit generate RUN_DIR|MODEL``: generations of a generating run (its adapter applied) or of a plain
    model (a ``vectorfit merge`` output): text printed, or images written as PNGs and a grid."""
    _quiet(args.verbose)
    given = _prompts(args) if args.prompt or args.input else None  # a bad prompt file is said first
    target = Path(args.target).expanduser()
    tasks = list_tasks()
    if (target / RUN_FILE).is_file():
        if args.adapter:
            raise CLIError("--adapter goes with a model, not a run directory (a run finds its own adapter)")
        run = Run.open(str(target))
        task = task_of_run(tasks, run)
    else:
        run = None
        # generating tasks first: a seq2seq or causal LM directory is also a base a text classifier loads
        generating, task = {name: t for name, t in tasks.items() if t.generates}, None
        if not args.task and generating:
            try:
                task, _ = choose_task(generating, args.target, backend=args.backend)
            except CLIError:
                task = None  # no generating task reads it: the check below says what it is
        if task is None:
            task, _ = choose_task(tasks, args.target, task=args.task, backend=args.backend)
    images = task.generated == "images"
    if given is None and not images:
        raise CLIError("give --prompt TEXT (repeatable) or --input FILE, one of the two")
    if not task.generates:
        generating = ", ".join(t.name for t in tasks.values() if t.generates) or "none installed"
        raise CLIError(f"{args.target!r} is a {task.name!r} model, which does not generate text or images; `vectorfit generate`"
                       f" takes runs or models of the generating tasks ({generating}); use `vectorfit evaluate`")
    out = _image_folder(args) if images else None
    prompts = given or []
    if not images:
        _check_text_options(args)
    runner = get_runner(task)
    _threads(args)
    model, _ = load_trained(runner, run, model_spec=None if run else args.target, adapter=args.adapter)
    outputs = runner.generate(model, RunContext(task, args, run=run, tasks=tasks), prompts)
    if images:
        _write_images(outputs, out)
        return 0
    if args.json:
        print(json.dumps([{"prompt": p, "generation": g} for p, g in zip(prompts, outputs)], indent=2))
    else:
        for i, (prompt, text) in enumerate(zip(prompts, outputs)):
            if len(prompts) > 1:
                print(f"--- {i + 1}: {prompt}")
            print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            for prompt, text in zip(prompts, outputs):
                fh.write(json.dumps({"prompt": prompt, "generation": text}) + "\n")
    return 0


def _check_text_options(args: argparse.Namespace) -> None:
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise CLIError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.temperature is not None and args.temperature < 0:
        raise CLIError(f"--temperature must be 0 (greedy) or positive, got {args.temperature}")


def _image_folder(args: argparse.Namespace) -> Path:
    """``--output DIR`` of generated images: required, and never a folder that already holds PNGs."""
    if not args.output:
        raise CLIError("images need --output DIR (the folder for the PNGs and grid.png)")
    out = Path(args.output).expanduser()
    if out.exists() and (not out.is_dir() or any(out.glob("*.png"))):
        raise CLIError(f"--output {args.output!r} " + ("is a file" if not out.is_dir() else "already holds PNG files")
                       + "; choose a new folder (nothing was written)")
    return out


def _write_images(images: list, out: Path) -> None:
    from vf_core.images import paste_grid

    out.mkdir(parents=True, exist_ok=True)
    width = len(str(len(images) - 1))
    for i, image in enumerate(images):
        image.save(out / f"{i:0{width}d}.png")
    paste_grid(images).save(out / "grid.png")
    print(f"{len(images)} images and grid.png written to {out}")


def cmd_plot(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    _quiet(args.verbose)
    args.model = None
    run, _, runner, _ = _run_and_task(args)
    _threads(args)
    spec = MethodSpec.from_json(run.info["method"])
    base = runner.load_model(run.model_spec, run=run)
    targets, w0 = initial_weights(base, spec)
    names = [t[0] for t in targets]
    if run.method == "full":
        trained = runner.load_model(str(run.model_dir), run=run)
    else:
        restore_trained(base, run.method, run.adapter_dir)
        trained = base
    w1 = plots.capture_matrices(trained, names)
    full_run = None if run.method == "full" else find_full_run(run.path, run.model_spec, run.info.get("data"),
                                                                args.compare_full)
    w_full = plots.capture_matrices(runner.load_model(str(full_run.model_dir), run=full_run), names) \
        if full_run else None
    strengths = read_json(run.path / STRENGTHS_FILE) if (run.path / STRENGTHS_FILE).is_file() else None
    avf_state = read_json(run.path / AVF_FILE) if (run.path / AVF_FILE).is_file() else None
    out = Path(args.output) if args.output else run.plots_dir
    written = draw_plots(out, targets=targets, w0=w0, w1=w1, w_full=w_full,
                         label=run.info.get("method_label", run.method),
                         strengths=strengths, avf_state=avf_state)
    if full_run:
        print(f"compared with full fine-tuning run {full_run.path}")
    for name in written:
        print(out / name)
    return 0


def _task_info(task: Task) -> dict:
    return {"backend": task.backend, "description": task.description, "aliases": list(task.aliases),
            "models": task.models, "data": task.data, "model_aliases": dict(task.model_aliases),
            "datasets": dict(task.datasets), "headline": task.headline, "generates": task.generates,
            "engine": task.engine, "requires": list(task.requires), "missing": task.missing(),
            "install_hint": task.install_hint, "defaults": dict(task.defaults)}


def cmd_list(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    tasks = list_tasks()
    by_backend = backends(tasks)
    if args.json:
        print(json.dumps({
            "tasks": {name: _task_info(t) for name, t in tasks.items()},
            "backends": {b: {"tasks": [t.name for t in ts], "description": "; ".join(t.description for t in ts),
                             "engine": ts[0].engine,
                             "models": {a: d for t in ts for a, d in t.model_aliases.items()},
                             "datasets": {a: d for t in ts for a, d in t.datasets.items()}}
                         for b, ts in by_backend.items()},
            "methods": list(METHODS), "default_lr": DEFAULT_LR, "default_lr_scale": DEFAULT_LR_SCALE}, indent=2))
        return 0
    for name, t in tasks.items():
        also = f"; also --task {', '.join(t.aliases)}" if t.aliases else ""
        print(f"task {name} (backend {t.backend}, engine: {t.engine or '?'}{also}): {t.description}")
        if t.models:
            print(f"  models:  {t.models}")
        if t.data:
            print(f"  data:    {t.data}")
        missing = t.missing()
        needs = ", ".join(t.requires) or "nothing beyond vectorfit"
        state = f"missing {', '.join(missing)}: {t.install_hint or 'install them'}" if missing else "installed"
        print(f"  needs:   {needs} ({state})")
        print(f"  scores:  {t.headline}" + ("   (generates)" if t.generates else ""))
    for backend, ts in by_backend.items():
        print(f"backend {backend}: {', '.join(t.name for t in ts)}")
        models = {a: d for t in ts for a, d in t.model_aliases.items()}
        datasets = {a: d for t in ts for a, d in t.datasets.items()}
        for alias, text in models.items():
            print(f"  model   {alias:20s} {text}")
        for alias, text in datasets.items():
            print(f"  data    {alias:20s} {text}")
    if not tasks:
        print("no task installed (pip install 'vectorfit[nlp]' or 'vectorfit[vision]')")
    print("methods: " + ", ".join(METHODS))
    scaled = {m: ", ".join(f"{kind} {share:g}x" for kind, share in kinds.items()) for m, kinds in DEFAULT_LR_SCALE.items()}
    print("default learning rates: " + ", ".join(f"{k} {v:g}" + (f" ({scaled[k]})" if k in scaled else "")
                                                 for k, v in DEFAULT_LR.items()))
    return 0


def cmd_inspect(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    _quiet(args.verbose)
    return inspect_command(args)


def cmd_cache(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``vectorfit cache info|clear``: the SVD cache's size and limit, or remove every entry."""
    from vf_core.svd import wait_for_cache_writes
    from vf_core.svd_cache_usage import cache_info, clear_cache

    wait_for_cache_writes()
    if args.action == "clear":
        before = cache_info()
        removed = clear_cache()
        after = cache_info()
        result = {**after, "removed": removed, "freed_bytes": before["bytes"] - after["bytes"]}
    else:
        result = cache_info()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    limit = result["limit_bytes"]
    print(f"SVD cache: {result['directory']}")
    print(f"  {result['entries']:,} entries, {result['bytes'] / 1024**2:,.1f} MB; limit: "
          + (f"{limit / 1024**3:g} GB (VECTORFIT_CACHE_MAX_GB)" if limit is not None else
             "none (set VECTORFIT_CACHE_MAX_GB to bound it)"))
    if args.action == "clear":
        print(f"  removed {result['removed']:,} entries, {result['freed_bytes'] / 1024**2:,.1f} MB freed")
    return 0
