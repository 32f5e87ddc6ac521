"""The ``vectorfit`` command: argument parsing and dispatch to the recipes the installed backends contribute.

Subcommands: ``train``, ``evaluate``, ``merge``, ``inspect``, ``plot``, ``list``. Bad input ends with one line on
stderr (``vectorfit: error: ...``) and exit status 2; an unexpected failure with one line and status 1
(``VECTORFIT_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

from .. import __version__
from ..roles import ROLES
from .methods import DEFAULT_AVF, DEFAULT_LR, METHODS, VECTOR_METHODS, MethodSpec
from .records import MAYBE, NO, SURE, CLIError, Recipe

__all__ = ["main", "build_parser", "list_recipes"]

PROG = "vectorfit"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), pointing at ``--help``."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=110)


# ----------------------------------------------------------------------------------------------- recipes
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


def get_runner(recipe: Recipe):
    import importlib.util

    missing = [m for m in recipe.requires if importlib.util.find_spec(m) is None]
    if missing:
        hint = f"; {recipe.install_hint}" if recipe.install_hint else ""
        raise CLIError(f"the {recipe.name!r} backend needs {', '.join(missing)}, which is not installed{hint}")
    return recipe.runner()


# ----------------------------------------------------------------------------------------------- parsing
def _fraction_or_steps(text: str):
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of steps (int) or a fraction of the run, got {text!r}")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a fraction of the run must lie in [0, 1], got {value}")
    return value


def _roles(text: str) -> list[str]:
    roles = [r.strip() for r in text.split(",") if r.strip()]
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise argparse.ArgumentTypeError(f"roles are a comma-separated subset of {','.join(ROLES)}, got {text!r}")
    return roles


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _add_train_arguments(p: argparse.ArgumentParser, recipes: dict[str, Recipe]) -> None:
    g = p.add_argument_group("what to train")
    g.add_argument("--model", "-m", metavar="M", help="built-in alias (see `vectorfit list`), a local Hugging Face model"
                   " directory, or a timm model name (with --checkpoint)")
    g.add_argument("--data", "-d", metavar="D", help="built-in dataset alias, a local CSV/TSV/JSON-lines file, a pixel"
                   " CSV or an image folder (one sub-folder per class)")
    g.add_argument("--method", default="vectorfit", choices=METHODS, help="fine-tuning method")
    g.add_argument("--output", "-o", metavar="DIR", help="run directory to write (metrics.json, adapter/, plots/)")
    g.add_argument("--backend", metavar="NAME", choices=sorted(recipes) or None,
                   help="force a backend instead of recognising it from --model")

    d = p.add_argument_group("data")
    d.add_argument("--text-column", metavar="COL", help="text column of a local file (default: text, sentence,"
                   " statement or review)")
    d.add_argument("--label-column", metavar="COL", help="label column of a local file (default: label, labels,"
                   " target, score or rating)")
    d.add_argument("--task", choices=("auto", "classification", "regression"), default="auto",
                   help="auto: regression when every label is a number and they are non-integers or more than 20"
                   " distinct values")
    d.add_argument("--eval-fraction", type=float, default=0.2, help="share of the examples held out for evaluation")
    d.add_argument("--data-seed", type=int, default=0, help="seed of the fixed train/eval split")
    d.add_argument("--max-train", type=_positive_int, metavar="N", help="keep the first N training examples of the"
                   " (shuffled) split")
    d.add_argument("--max-eval", type=_positive_int, metavar="N", help="keep the first N eval examples")

    m = p.add_argument_group("method options")
    m.add_argument("--roles", type=_roles, default=list(ROLES), metavar="R,R,...",
                   help="roles to target among q,k,v,o,f1,f2 (q,k,v,o: attention only); LoRA/AdaLoRA use the same")
    m.add_argument("--no-bias", action="store_true", help="vectorfit: train singular values only (VectorFit(Σ))")
    m.add_argument("--target-modules", metavar="REGEX", help="full-match regex of the module names to target,"
                   " instead of the backend's family declaration")
    m.add_argument("--svfit-rank", type=_positive_int, metavar="R", help="svfit: number of top singular values"
                   " (default 16)")
    m.add_argument("--svfit-energy", type=float, metavar="E", help="svfit: smallest share of the spectrum's energy"
                   " instead of a rank")
    m.add_argument("--svft-pattern", choices=("plain", "banded", "random", "topk"), default="banded",
                   help="svft: sparsity pattern of M")
    m.add_argument("--svft-off-diagonals", type=int, default=2, metavar="D", help="svft: off-diagonals on each side")
    m.add_argument("--lora-r", type=_positive_int, default=8, metavar="R", help="lora: rank; adalora: target rank")
    m.add_argument("--lora-alpha", type=float, metavar="A", help="lora/adalora scaling numerator (default 2*r)")
    m.add_argument("--lora-dropout", type=float, default=0.0, help="lora/adalora dropout")
    m.add_argument("--adalora-init-r", type=_positive_int, metavar="R", help="adalora: initial rank (default 1.5*r)")

    a = p.add_argument_group("adaptive vector freezing (vf-avf; vectorfit, svfit, svft)")
    a.add_argument("--avf", dest="avf", action="store_true", default=None,
                   help="freeze vectors with a vf-avf policy (default: on for vectorfit, off otherwise)")
    a.add_argument("--no-avf", dest="avf", action="store_false", help="never freeze")
    a.add_argument("--avf-policy", default=DEFAULT_AVF["policy"], metavar="NAME",
                   help="freezing policy: topk_ema (the paper's AVF), random, dropout, or an installed plugin's")
    a.add_argument("--avf-t-i", type=_fraction_or_steps, default=DEFAULT_AVF["t_i"], metavar="T",
                   help="first AVF step: steps (int) or fraction of the run (float)")
    a.add_argument("--avf-t-f", type=_fraction_or_steps, default=DEFAULT_AVF["t_f"], metavar="T",
                   help="steps (or fraction) between AVF steps")
    a.add_argument("--avf-n-f", type=_positive_int, default=DEFAULT_AVF["n_f"], metavar="N", help="number of AVF steps")
    a.add_argument("--avf-k", type=_positive_int, default=DEFAULT_AVF["k"], metavar="K",
                   help="vectors frozen at each AVF step")
    a.add_argument("--avf-beta", type=float, default=DEFAULT_AVF["beta"], help="EMA factor of the smoothed strength")
    a.add_argument("--avf-p", type=float, metavar="P", help="dropout policy: probability to freeze each vector per step")

    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=float, default=3.0, help="training epochs")
    t.add_argument("--max-steps", type=_positive_int, metavar="N", help="stop after N optimizer steps (overrides"
                   " --epochs)")
    t.add_argument("--batch-size", type=_positive_int, default=32, help="training batch size")
    t.add_argument("--eval-batch-size", type=_positive_int, default=64, help="evaluation batch size")
    lrs = ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
    t.add_argument("--lr", type=float, metavar="LR", help=f"learning rate (AdamW); default per method: {lrs}")
    t.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    t.add_argument("--warmup-ratio", type=float, default=0.0, help="share of steps of linear warm-up")
    t.add_argument("--scheduler", choices=("linear", "constant", "cosine"), default="linear",
                   help="learning-rate schedule")
    t.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm (0: none)")
    t.add_argument("--seed", type=int, default=0, help="training seed (head initialisation, shuffling)")
    t.add_argument("--logging-steps", type=_positive_int, default=20, help="log the loss every N steps")
    t.add_argument("--save-total-limit", type=_positive_int, default=1, help="checkpoints kept in DIR/checkpoints")
    t.add_argument("--no-checkpoints", action="store_true", help="do not write checkpoints (no --resume possible)")
    t.add_argument("--resume", nargs="?", const="last", metavar="CHECKPOINT",
                   help="resume from DIR/checkpoints (the last one, or the given checkpoint folder); options not given"
                   " are taken from DIR/run.json")
    t.add_argument("--overwrite", action="store_true", help="replace a finished run in DIR")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to train")
    t.add_argument("--threads", type=_positive_int, metavar="N", help="CPU threads for torch (default: torch's)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--verbose", action="store_true", help="keep the libraries' info messages")

    o = p.add_argument_group("outputs")
    o.add_argument("--no-plots", action="store_true", help="do not draw DIR/plots/")
    o.add_argument("--compare-full", metavar="FULL_DIR", help="a `--method full` run directory of the same model"
                   " and data, for the weight-change figures (default: a sibling run directory that is one)")

    for recipe in recipes.values():
        if recipe.add_arguments is not None:
            group = p.add_argument_group(f"{recipe.name} backend options")
            recipe.add_arguments(group)


def _eval_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval-batch-size", type=_positive_int, default=64, help="evaluation batch size")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run")
    p.add_argument("--threads", type=_positive_int, metavar="N", help="CPU threads for torch")
    p.add_argument("--verbose", action="store_true", help="keep the libraries' info messages")


def build_parser(recipes: Optional[dict[str, Recipe]] = None) -> argparse.ArgumentParser:
    recipes = list_recipes() if recipes is None else recipes
    backends = "\n".join(f"  {r.name:8s} {r.description} [engine: {r.engine or '?'}]" for r in recipes.values()) \
        or "  (none installed: pip install vf-backends-nlp[transformers] or vf-backends-vision[timm])"
    parser = _Parser(
        prog=PROG, formatter_class=_Formatter,
        description="Fine-tune pre-trained models by their singular values and biases (VectorFit), and compare with\n"
                    "SVFit, SVFT, BitFit, LoRA, AdaLoRA and full fine-tuning, on real models and data, offline.\n\n"
                    f"installed backends:\n{backends}",
        epilog="examples:\n"
               "  vectorfit train --model minilm --data rotten-tomatoes --method vectorfit --output runs/rt\n"
               "  vectorfit evaluate runs/rt\n"
               "  vectorfit merge runs/rt --output runs/rt-merged\n"
               "  vectorfit inspect runs/rt/adapter\n"
               "  vectorfit plot runs/rt --compare-full runs/rt-full\n"
               "  vectorfit list\n\n"
               "docs/cli.md has the full guide.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "train", formatter_class=_Formatter, help="fine-tune a model on a dataset with one method",
        description="Fine-tune --model on --data with --method and write the run directory --output:\n"
                    "  metrics.json  eval metrics, trainable_params, total_params, train_seconds\n"
                    "  adapter/      the trained vectors (VectorFitModel.from_pretrained), a PEFT adapter (lora,\n"
                    "                adalora) or the trained biases (bitfit); full fine-tuning writes model/\n"
                    "  plots/        training_strength.png, weight_change_spectra.png, leading_sv_change.png\n"
                    "  checkpoints/  for --resume\n\n"
                    "Variants of the paper: --no-bias (VectorFit(Σ), singular values only), --roles q,k,v,o (attention\n"
                    "only), --no-avf (VectorFit without Adaptive Vector Freezing).",
        epilog="example:\n  vectorfit train -m minilm -d rotten-tomatoes --max-train 2000 --epochs 2 -o runs/rt")
    _add_train_arguments(p, recipes)
    p.set_defaults(func=cmd_train)
    parser.train_parser = p  # type: ignore[attr-defined]

    p = sub.add_parser(
        "evaluate", formatter_class=_Formatter, help="evaluate a run (or a model) on a dataset",
        description="Evaluate a finished run (its adapter or model, on its own eval split by default) or a plain\n"
                    "model (--model, e.g. a `vectorfit merge` output, optionally with --adapter). Prints the metrics\n"
                    "as JSON and, for a run, writes DIR/eval_metrics.json.")
    p.add_argument("run", nargs="?", metavar="RUN_DIR", help="a `vectorfit train --output` directory")
    p.add_argument("--model", "-m", metavar="M", help="a model to evaluate instead of a run")
    p.add_argument("--adapter", metavar="ADAPTER_DIR", help="with --model: a VectorFit adapter to apply first")
    p.add_argument("--data", "-d", metavar="D", help="dataset (default: the run's)")
    p.add_argument("--backend", metavar="NAME", help="force a backend for --model")
    p.add_argument("--split", choices=("eval", "train"), default="eval", help="which split of the data")
    for flag, kw in (("--text-column", {}), ("--label-column", {})):
        p.add_argument(flag, metavar="COL", **kw, help="column of a local data file")
    p.add_argument("--task", choices=("auto", "classification", "regression"), default=None,
                   help="task of the data (default: the run's, else auto)")
    p.add_argument("--max-eval", type=_positive_int, metavar="N", help="evaluate on the first N examples only")
    p.add_argument("--output", "-o", metavar="FILE", help="also write the metrics to FILE (JSON)")
    _eval_common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "merge", formatter_class=_Formatter, help="fold an adapter into its base model and save a plain model",
        description="Load the run's base model, apply its adapter (VectorFit: U diag(s) V^T folded back into plain\n"
                    "layers; LoRA/AdaLoRA: merged; BitFit: biases written) and save a plain model with zero inference\n"
                    "overhead, loadable with `--model OUTPUT` by every command (and by transformers / timm).")
    p.add_argument("run", nargs="?", metavar="RUN_DIR", help="a `vectorfit train --output` directory")
    p.add_argument("--model", "-m", metavar="M", help="the base model (instead of a run; with --adapter)")
    p.add_argument("--adapter", metavar="ADAPTER_DIR", help="a VectorFit adapter directory (with --model)")
    p.add_argument("--backend", metavar="NAME", help="force a backend for --model")
    p.add_argument("--output", "-o", metavar="DIR", required=True, help="where to save the merged model")
    _eval_common(p)
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser(
        "inspect", formatter_class=_Formatter, help="what an adapter, run or model contains",
        description="Describe a VectorFit adapter directory (method, family, roles, trainable counts by kind, role\n"
                    "and layer), a PEFT or BitFit adapter, a run directory (its run.json and metrics), or a model\n"
                    "(--model or a positional alias/path: its family, targeted modules per role and the trainable\n"
                    "count of every method).")
    p.add_argument("target", nargs="?", metavar="PATH_OR_MODEL", help="adapter dir, run dir, or model")
    p.add_argument("--model", "-m", metavar="M", help="a model to describe")
    p.add_argument("--backend", metavar="NAME", help="force a backend for a model")
    p.add_argument("--num-labels", type=_positive_int, default=2, help="head size assumed for a model")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--verbose", action="store_true", help="keep the libraries' info messages; list every module")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "plot", formatter_class=_Formatter, help="(re)draw a run's figures",
        description="Redraw DIR/plots/: training_strength.png (paper Fig. 3), weight_change_spectra.png (Fig. 9,\n"
                    "singular values of U diag(s - s0) V^T per module, against full fine-tuning's when a full run is\n"
                    "known) and leading_sv_change.png (Fig. 10).")
    p.add_argument("run", metavar="RUN_DIR", help="a `vectorfit train --output` directory")
    p.add_argument("--compare-full", metavar="FULL_DIR", help="a `--method full` run of the same model and data")
    p.add_argument("--output", "-o", metavar="DIR", help="where to write the figures (default: RUN_DIR/plots)")
    _eval_common(p)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("list", formatter_class=_Formatter, help="installed backends, models, datasets and methods",
                       description="List the installed backends with their built-in models and datasets, and the methods.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)
    return parser


# ----------------------------------------------------------------------------------------------- helpers
def _quiet(verbose: bool) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


def _threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def method_spec_from_args(args: argparse.Namespace) -> MethodSpec:
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
    avf_config = None
    if avf:
        avf_config = _avf_config(args)
    return MethodSpec(name=name, roles=list(args.roles), train_bias=False if args.no_bias else None,
                      target_modules=args.target_modules, svfit_rank=args.svfit_rank, svfit_energy=args.svfit_energy,
                      svft_pattern=args.svft_pattern, svft_off_diagonals=args.svft_off_diagonals,
                      lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      adalora_init_r=args.adalora_init_r, avf=avf_config)


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
        from vf_avf import AVFConfig
    except ImportError:
        raise CLIError("AVF needs vf-avf (pip install vf-avf), or pass --no-avf") from None
    from ..errors import VectorFitError

    try:
        return AVFConfig.model_validate(fields).model_dump(mode="json")
    except VectorFitError as exc:
        raise CLIError(f"AVF options: {' '.join(str(exc).split())}") from None


def _merge_resume(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """With --resume, fill the options not given from DIR/run.json and refuse conflicting ones."""
    from .rundir import RUN_FILE, read_json

    run_file = Path(args.output) / RUN_FILE
    if not run_file.is_file():
        raise CLIError(f"--resume: {run_file} does not exist; nothing to resume in {args.output}")
    stored = read_json(run_file).get("args", {})
    train = getattr(parser, "train_parser", parser)
    may_change = {"epochs", "max_steps", "logging_steps", "save_total_limit", "no_plots", "compare_full", "device",
                  "eval_batch_size"}
    for key, value in stored.items():
        if not hasattr(args, key):
            continue
        current, default = getattr(args, key), train.get_default(key)
        if current is None or current == default:
            setattr(args, key, value)
        elif current != value and key not in may_change:
            raise CLIError(f"--resume: --{key.replace('_', '-')} {current!r} differs from the run's {value!r};"
                           " resume with the same options, or start a new --output")


# ----------------------------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .rundir import METRICS_FILE
    from .training import summary_lines

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
    if not 0.0 < args.eval_fraction < 1.0:
        raise CLIError(f"--eval-fraction must lie strictly between 0 and 1, got {args.eval_fraction}")
    if args.epochs <= 0 and not args.max_steps:
        raise CLIError(f"--epochs must be positive, got {args.epochs}")
    if args.compare_full and not Path(args.compare_full).is_dir():
        raise CLIError(f"--compare-full {args.compare_full!r}: no such run directory")
    recipes = list_recipes()
    recipe = choose_recipe(recipes, args.model, args.backend, args.data)
    check_data(recipes, recipe, args.data)
    args.method_spec = method_spec_from_args(args)
    if args.lr is None:
        args.lr = DEFAULT_LR[args.method]
    if args.lr <= 0:
        raise CLIError(f"--lr must be positive, got {args.lr}")
    args.backend = recipe.name
    runner = get_runner(recipe)
    _threads(args)
    if args.overwrite and not args.resume and (out / METRICS_FILE).is_file():
        (out / METRICS_FILE).unlink()
    out.mkdir(parents=True, exist_ok=True)
    metrics = runner.train(args)
    print("\n".join(summary_lines(metrics, out)))
    return 0


def _run_and_model(args, *, need_data: bool):
    """(run or None, recipe, runner) for evaluate / merge / plot."""
    from .rundir import Run

    recipes = list_recipes()
    run = None
    if args.run:
        run = Run.open(args.run)
        if run.backend not in recipes:
            raise CLIError(f"the run was trained with the {run.backend!r} backend, which is not installed")
        recipe = recipes[run.backend]
    elif getattr(args, "model", None):
        recipe = choose_recipe(recipes, args.model, getattr(args, "backend", None), getattr(args, "data", None))
    else:
        raise CLIError("give a run directory, or --model")
    return run, recipe, get_runner(recipe)


def load_trained(runner, run, *, model_spec: Optional[str] = None, adapter: Optional[str] = None,
                 num_labels: Optional[int] = None):
    """The model of a run with its trained state applied (or ``--model`` with an optional ``--adapter``)."""
    from .methods import restore_trained

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
    from safetensors import safe_open

    from ..saving import WEIGHTS_NAME, read_adapter_config
    from ..errors import AdapterError

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
            if key.startswith("module::") and key.endswith("weight") and any(key[8:].startswith(h + ".") for h in heads):
                shape = fh.get_slice(key).get_shape()
                if len(shape) >= 2:
                    return int(shape[0])
    return None


def cmd_evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import json

    from .rundir import write_json

    _quiet(args.verbose)
    if args.run and args.model:
        raise CLIError("give a run directory or --model, not both")
    if args.adapter and not args.model:
        raise CLIError("--adapter goes with --model (a run directory finds its own adapter)")
    if not args.run and not args.data:
        raise CLIError("--data is required when evaluating --model")
    run, recipe, runner = _run_and_model(args, need_data=True)
    if args.data:
        check_data(list_recipes(), recipe, args.data)
    _threads(args)
    model, _ = load_trained(runner, run, model_spec=args.model, adapter=args.adapter,
                            num_labels=_adapter_num_labels(args.adapter))
    metrics = runner.evaluate(model, args, run)
    if run is not None:
        write_json(run.path / "eval_metrics.json", metrics)
    if args.output:
        write_json(args.output, metrics)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_merge(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .methods import merged_module

    _quiet(args.verbose)
    if args.run and args.model:
        raise CLIError("give a run directory or --model with --adapter, not both")
    if args.model and not args.adapter:
        raise CLIError("--model needs --adapter (the VectorFit adapter to merge into it)")
    run, recipe, runner = _run_and_model(args, need_data=False)
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


def cmd_plot(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .methods import restore_trained
    from .plots import capture_matrices
    from .rundir import AVF_FILE, STRENGTHS_FILE, read_json
    from .training import draw_plots, find_full_run

    _quiet(args.verbose)
    args.model = None
    run, recipe, runner = _run_and_model(args, need_data=False)
    _threads(args)
    from .methods import MethodSpec, _family_targets

    spec = MethodSpec.from_json(run.info["method"])
    base = runner.load_model(run.model_spec, run=run)
    targets, _, _ = _family_targets(base, spec)
    names = [t[0] for t in targets]
    w0 = capture_matrices(base, names)
    if run.method == "full":
        trained = runner.load_model(str(run.model_dir), run=run)
    else:
        restore_trained(base, run.method, run.adapter_dir)
        trained = base
    w1 = capture_matrices(trained, names)
    full_run = None if run.method == "full" else find_full_run(run.path, run.model_spec, run.info.get("data"),
                                                                args.compare_full)
    w_full = capture_matrices(runner.load_model(str(full_run.model_dir), run=full_run), names) if full_run else None
    strengths = read_json(run.path / STRENGTHS_FILE) if (run.path / STRENGTHS_FILE).is_file() else None
    avf_state = read_json(run.path / AVF_FILE) if (run.path / AVF_FILE).is_file() else None
    out = Path(args.output) if args.output else run.plots_dir
    written = draw_plots(out, targets=targets, w0=w0, w1=w1, w_full=w_full, label=run.info.get("method_label", run.method),
                         strengths=strengths, avf_state=avf_state)
    if full_run:
        print(f"compared with full fine-tuning run {full_run.path}")
    for name in written:
        print(out / name)
    return 0


def cmd_list(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import json

    recipes = list_recipes()
    if args.json:
        print(json.dumps({"backends": {n: {"description": r.description, "engine": r.engine, "models": dict(r.models),
                                           "datasets": dict(r.datasets)} for n, r in recipes.items()},
                          "methods": list(METHODS), "default_lr": DEFAULT_LR}, indent=2))
        return 0
    for name, r in recipes.items():
        print(f"backend {name}: {r.description} (engine: {r.engine or '?'})")
        for alias, text in r.models.items():
            print(f"  model   {alias:20s} {text}")
        for alias, text in r.datasets.items():
            print(f"  data    {alias:20s} {text}")
    if not recipes:
        print("no backend installed (pip install vf-backends-nlp[transformers] or vf-backends-vision[timm])")
    print("methods: " + ", ".join(METHODS))
    print("default learning rates: " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()))
    return 0


def cmd_inspect(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .inspect import inspect_command

    _quiet(args.verbose)
    return inspect_command(args)


# ----------------------------------------------------------------------------------------------- main
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``vectorfit`` console script; returns the exit status."""
    from ..errors import VectorFitError

    debug = os.environ.get("VECTORFIT_DEBUG", "") not in ("", "0")
    try:
        parser = build_parser()
    except VectorFitError as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    try:
        return int(args.func(args, parser) or 0)
    except (VectorFitError, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError) as exc:
        if debug:
            raise
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an environment problem: one line, traceback on demand
        if debug:
            raise
        print(f"{PROG}: internal error: {type(exc).__name__}: {_one_line(exc)} (set VECTORFIT_DEBUG=1 for the"
              " traceback)", file=sys.stderr)
        return 1
