"""The ``vectorfit`` command: argument parsing and dispatch to the tasks the installed backends contribute.

vf-core imports neither transformers, timm nor diffusers, and neither does this module: each backend registers,
through the ``vectorfit_tasks`` hook, :class:`vf_core.tasks.Task` records (their model aliases, datasets, model
loading, data handling and training engine). ``vectorfit train --model minilm ...`` then runs the text backend's
task (the Hugging Face Trainer), ``--model efficientnet-lite0`` the vision backend's (accelerate). See
``docs/cli.md``.

Subcommands: ``train``, ``evaluate``, ``merge``, ``export``, ``inspect``, ``plot``, ``list``. Bad input ends with one
line on stderr (``vectorfit: error: ...``) and exit status 2; an unexpected failure with one line and status 1
(``VECTORFIT_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from vf_core.errors import VectorFitError
from vf_core.roles import ROLES
from vf_core.tasks import Task

from . import __version__
from .commands import cmd_cache, cmd_evaluate, cmd_generate, cmd_inspect, cmd_list, cmd_merge, cmd_plot, cmd_train
from .export import EXPORT_FORMATS, cmd_export
from .methods import DEFAULT_AVF, DEFAULT_LR, METHODS
from .selection import backends, list_tasks

__all__ = ["main", "build_parser"]

PROG = "vectorfit"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), pointing at ``--help``."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' line breaks; shows a default only when it says something."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=110)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, False, True, argparse.SUPPRESS)
                or action.option_strings == [] or isinstance(action, argparse._VersionAction)):
            return text
        shown = ",".join(default) if isinstance(default, list) else "%(default)s"
        return f"{text} (default: {shown})"


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


def _add_train_arguments(p: argparse.ArgumentParser, tasks: dict[str, Task]) -> None:
    g = p.add_argument_group("what to train")
    g.add_argument("--model", "-m", metavar="M", help="built-in alias (see `vectorfit list`), a local Hugging Face"
                   " model directory, or a timm model name (with --checkpoint)")
    g.add_argument("--data", "-d", metavar="D", help="built-in dataset alias, a local CSV/TSV/JSON-lines file, a pixel"
                   " CSV or an image folder (one sub-folder per class)")
    g.add_argument("--method", default="vectorfit", choices=METHODS, help="fine-tuning method")
    names = sorted({n for t in tasks.values() for n in (t.name, *t.aliases)})
    g.add_argument("--task", "-t", metavar="TASK", default="auto",
                   help="the training task (see `vectorfit list`): " + (", ".join(names) or "none installed")
                   + "; default: recognised from --model and --data (numeric labels: regression)")
    g.add_argument("--output", "-o", metavar="DIR", help="run directory to write (metrics.json, adapter/, plots/)")
    g.add_argument("--backend", metavar="NAME", choices=sorted(backends(tasks)) or None,
                   help="force a backend instead of recognising it from --model")

    d = p.add_argument_group("data")
    d.add_argument("--text-column", metavar="COL", help="text column of a local file (default: text, sentence,"
                   " statement or review)")
    d.add_argument("--label-column", metavar="COL", help="label column of a local file (default: label, labels,"
                   " target, score or rating)")
    d.add_argument("--eval-fraction", type=float, default=0.2, help="share of the examples held out for evaluation")
    d.add_argument("--data-seed", type=int, default=0, help="seed of the fixed train/eval split")
    d.add_argument("--max-train", type=_positive_int, metavar="N", help="keep the first N training examples of the"
                   " (shuffled) split")
    d.add_argument("--max-eval", type=_positive_int, metavar="N", help="keep the first N eval examples")
    d.add_argument("--validation-fraction", type=float, metavar="F",
                   help="hold out a fixed share F of the training examples (after --max-train, drawn with"
                   " --data-seed) as a validation split: the evaluations during training score it, the final metrics"
                   " the eval split (text and image classification, text regression)")

    m = p.add_argument_group("method options")
    m.add_argument("--roles", type=_roles, default=list(ROLES), metavar="R,R,...",
                   help="roles to target among q,k,v,o,f1,f2 (q,k,v,o: attention only); LoRA/AdaLoRA use the same")
    m.add_argument("--no-bias", action="store_true", help="vectorfit: train singular values only (VectorFit(Σ))")
    m.add_argument("--sigma-parametrization", choices=("absolute", "relative"), metavar="P",
                   help="vectorfit: what the trained singular-value vector holds: absolute (s itself, the paper) or"
                   " relative (t in s = s0 (1 + t)); default: VectorFitConfig's")
    m.add_argument("--target-modules", metavar="REGEX", help="full-match regex of the module names to target,"
                   " instead of the backend's family declaration")
    m.add_argument("--heads", type=lambda t: [h.strip() for h in t.split(",") if h.strip()], metavar="NAME,...",
                   help="modules trained in full (the new head), by name or '.'-suffix (default: the family's heads)")
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
    a.add_argument("--avf-p", type=float, metavar="P",
                   help="dropout policy: probability to freeze each vector per step")

    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=float, default=3.0, help="training epochs")
    t.add_argument("--max-steps", type=_positive_int, metavar="N", help="stop after N optimizer steps (overrides"
                   " --epochs)")
    t.add_argument("--batch-size", type=_positive_int, default=32, help="training batch size")
    t.add_argument("--eval-batch-size", type=_positive_int, default=64, help="evaluation batch size")
    lrs = ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
    t.add_argument("--lr", type=float, metavar="LR", help=f"learning rate (AdamW); default per method: {lrs}")
    for kind, what in (("sigma", "the spectral vectors (s; svfit's s_r; svft's M)"), ("bias", "the biases"),
                       ("head", "the new head")):
        default = "0.3 x --lr for vectorfit (docs/method.md, Stalls), else --lr" if kind == "bias" else "--lr"
        t.add_argument(f"--lr-{kind}", type=float, metavar="LR", help=f"learning rate of {what} (default: {default})")
    t.add_argument("--max-grad-norm-per-vector", type=float, default=0.0, metavar="C",
                   help="vectorfit/svfit/svft: clip each trainable vector's gradient to norm C before the optimizer"
                   " step (0: none)")
    t.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    t.add_argument("--warmup-ratio", type=float, default=0.0, help="share of steps of linear warm-up")
    t.add_argument("--scheduler", choices=("linear", "constant", "cosine"), default="linear",
                   help="learning-rate schedule")
    t.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm (0: none)")
    t.add_argument("--early-stopping", type=_positive_int, metavar="PATIENCE",
                   help="stop when the task's metric on the validation split (--validation-fraction) has not improved"
                   " for PATIENCE evaluations (one per epoch) and put back the best evaluation's state")
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

    added: set = set()
    for task in tasks.values():  # tasks of one backend usually share their options: added once
        if task.add_arguments is not None and task.add_arguments not in added:
            added.add(task.add_arguments)
            task.add_arguments(p.add_argument_group(f"{task.backend} backend options"))


def _eval_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval-batch-size", type=_positive_int, default=64, help="evaluation batch size")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run")
    p.add_argument("--threads", type=_positive_int, metavar="N", help="CPU threads for torch")
    p.add_argument("--verbose", action="store_true", help="keep the libraries' info messages")


def build_parser(tasks: Optional[dict[str, Task]] = None) -> argparse.ArgumentParser:
    tasks = list_tasks() if tasks is None else tasks
    installed = "\n".join(f"  {t.name:22s} {t.backend:8s} {t.description}" for t in tasks.values()) \
        or "  (none installed: pip install 'vectorfit[nlp]' or 'vectorfit[vision]')"
    parser = _Parser(
        prog=PROG, formatter_class=_Formatter,
        description="Fine-tune pre-trained models by their singular values and biases (VectorFit), and compare with\n"
                    "SVFit, SVFT, BitFit, LoRA, AdaLoRA and full fine-tuning, on real models and data, offline.\n\n"
                    f"installed tasks (task, backend):\n{installed}",
        epilog="examples:\n"
               "  vectorfit train --model minilm --data rotten-tomatoes --method vectorfit --output runs/rt\n"
               "  vectorfit train --task text-regression --model minilm --data movie-ratings --output runs/mr\n"
               "  vectorfit evaluate runs/rt\n"
               "  vectorfit merge runs/rt --output runs/rt-merged\n"
               "  vectorfit export runs/rt --format peft-lora --rank 16 --output runs/rt-lora\n"
               "  vectorfit generate runs/lm --prompt 'Once upon a time'\n"
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
                    "Variants of the paper: --no-bias (VectorFit(Σ), singular values only), --roles q,k,v,o\n"
                    "(attention only), --no-avf (VectorFit without Adaptive Vector Freezing).",
        epilog="example:\n  vectorfit train -m minilm -d rotten-tomatoes --max-train 2000 --epochs 2 -o runs/rt")
    _add_train_arguments(p, tasks)
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
    p.add_argument("--task", metavar="TASK", default=None,
                   help="the task (or classification / regression) of the data (default: the run's, else recognised)")
    p.add_argument("--max-eval", type=_positive_int, metavar="N", help="evaluate on the first N examples only")
    p.add_argument("--output", "-o", metavar="FILE", help="also write the metrics to FILE (JSON)")
    t = p.add_argument_group("text tasks (default: the run's settings, else the task's defaults)")
    t.add_argument("--max-length", type=_positive_int, metavar="N",
                   help="truncate inputs to N tokens (seq2seq sources, QA windows, texts)")
    t.add_argument("--max-target-length", type=_positive_int, metavar="N",
                   help="seq2seq: cut the reference targets to N tokens for the loss")
    t.add_argument("--max-new-tokens", type=_positive_int, metavar="N", help="seq2seq: tokens to generate at most")
    t.add_argument("--num-beams", type=_positive_int, metavar="B", help="seq2seq: beam search width")
    _eval_common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "generate", formatter_class=_Formatter,
        help="generate text (causal-lm, seq2seq) or images (image-generation) with a run (or model)",
        description="Generations of a finished run (its adapter applied) or of a plain model (a `vectorfit merge`\n"
                    "output, or a model with --adapter).\n"
                    "Text (causal-lm, seq2seq): printed for --prompt or --input; greedy by default, --num-beams B for\n"
                    "beam search, --temperature T > 0 to sample.\n"
                    "Images (image-generation): --num-images N of --class C or --prompt TEXT, written as PNGs and a\n"
                    "grid.png into --output DIR, with --steps S denoising steps and --seed X.")
    p.add_argument("target", metavar="RUN_DIR_OR_MODEL", help="a `vectorfit train --output` directory, or a model")
    p.add_argument("--prompt", "-p", action="append", metavar="TEXT", help="a prompt (repeatable)")
    p.add_argument("--input", "-i", metavar="FILE", help="prompts, one per line (.txt) or a 'prompt'/'source'/'text'"
                   " field per line (.jsonl)")
    p.add_argument("--adapter", metavar="ADAPTER_DIR", help="with a model: a VectorFit adapter to apply first")
    p.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                   help="text: tokens to generate at most (default: the run's --max-new-tokens, else 64)")
    p.add_argument("--num-beams", type=_positive_int, default=None, metavar="B",
                   help="text: beam search width (default 1)")
    p.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="text: sampling temperature (default 0: greedy or beam search)")
    p.add_argument("--num-images", type=_positive_int, default=None, metavar="N",
                   help="images: how many to generate (default 4)")
    p.add_argument("--class", dest="class_name", metavar="C", help="images: the class (id or name) of a"
                   " class-conditional model")
    p.add_argument("--steps", type=_positive_int, default=None, metavar="S",
                   help="images: denoising steps (default: the run's --sample-steps, else 25)")
    p.add_argument("--guidance-scale", type=float, default=None, metavar="G",
                   help="images: classifier-free guidance of text-conditional models (default 7.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling")
    p.add_argument("--task", metavar="TASK", help="the task of a plain model (causal-lm, seq2seq, image-generation)"
                   " when not recognised")
    p.add_argument("--backend", metavar="NAME", help="force a backend for a model")
    p.add_argument("--json", action="store_true", help="text: print a JSON list of {prompt, generation}")
    p.add_argument("--output", "-o", metavar="FILE_OR_DIR", help="text: also write {prompt, generation} JSON lines to"
                   " FILE; images: the folder for the PNGs and grid.png (required, must not hold PNGs yet)")
    _eval_common(p)
    p.set_defaults(func=cmd_generate)

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
        "export", formatter_class=_Formatter, help="write a run's adapter in another format (a PEFT LoRA adapter)",
        description="Write the adapter of a VectorFit, SVFit or SVFT run as a PEFT LoRA adapter (adapter_config.json,\n"
                    "adapter_model.safetensors; for a diffusers model also pytorch_lora_weights.safetensors) with its\n"
                    "fidelity report (export_report.json, export_report.txt). Each module's change U diag(s - s0) V^T\n"
                    "is written as LoRA's B A: lossless by default (rank = the changed singular values), or truncated\n"
                    "to --rank R or to the share --energy E of each module's ||dW||^2. See docs/export.md.")
    p.add_argument("run", metavar="RUN_DIR", help="a `vectorfit train --output` directory")
    p.add_argument("--format", default="peft-lora", metavar="FORMAT",
                   help=f"the format to write: {', '.join(EXPORT_FORMATS)}")
    p.add_argument("--rank", type=_positive_int, metavar="R", help="keep at most R terms per module (best rank-R)")
    p.add_argument("--energy", type=float, metavar="E", help="keep per module the fewest terms holding this share"
                   " (0 < E <= 1) of ||dW||^2")
    p.add_argument("--uniform-rank", action="store_true", help="pad every module with zeros to the largest rank"
                   " (exact; one r for engines that read a single rank)")
    p.add_argument("--output", "-o", metavar="DIR", required=True, help="where to write the adapter (new or empty)")
    p.add_argument("--json", action="store_true", help="print the fidelity report as JSON")
    _eval_common(p)
    p.set_defaults(func=cmd_export)

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

    p = sub.add_parser(
        "cache", formatter_class=_Formatter, help="the SVD cache: its size, or clear it",
        description="The decompositions kept on disk ($VECTORFIT_CACHE/svd, default ~/.cache/vectorfit/svd), one file\n"
                    "per decomposed weight, so that a second start skips the SVD. `info` prints its folder, entries,\n"
                    "size and limit; `clear` removes every entry (they are recomputed when next needed). Bound it\n"
                    "with VECTORFIT_CACHE_MAX_GB: after each start's writes, the entries used least recently go.")
    p.add_argument("action", choices=("info", "clear"), help="what to do")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("list", formatter_class=_Formatter, help="installed tasks, backends, models, datasets, methods",
                       description="List the installed tasks (their backend, the models and data each takes and what"
                                   " it needs), the backends' built-in models and datasets, and the methods.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)
    return parser


# ----------------------------------------------------------------------------------------------- main
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``vectorfit`` console script; returns the exit status."""
    debug = os.environ.get("VECTORFIT_DEBUG", "") not in ("", "0")
    try:
        parser = build_parser()
    except VectorFitError as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    args.argv = argv  # which options were given, for the task's defaults
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
