#!/usr/bin/env python
"""Generation benchmark: adapting a small pre-trained decoder to a new domain, every method, 3 seeds.

The base is built here (no pre-trained decoder ships in a package registry): :mod:`corpus` prepares the film-review
pre-training corpus, the political-speech domain (2012 convention speeches and 2016 debate statements, held out by
speech) and a 4,096-token BPE tokenizer; :mod:`pretrain` trains a 2.6M-parameter GPT-2-style decoder from scratch
on the reviews and caches it. Then every cell is one ``vectorfit train --task causal-lm`` subprocess on the
domain's ``text`` passages with the same budget (``--max-train 1200 --epochs 2 --batch-size 16 --max-length 128``,
each method's default learning rate), scored by held-out perplexity (``eval_perplexity``) on all 615 eval passages:
VectorFit with and without AVF, LoRA r=1 and r=8, BitFit and full fine-tuning, seeds 0-2; and the base model itself
before adaptation (``vectorfit evaluate``).

Two reading tasks run the same way (``--task``; data from :mod:`reading`, held out by film and by debate window):
``question-answering``: the pre-trained MiniLM (it ships offline) with a new span head on 300 training questions
about film plot synopses and debate transcripts, 2 epochs, scored by exact match and F1 on all 185 held-out
questions; ``seq2seq``: a small T5 pre-trained here by denoising the same film reviews
(:mod:`seq2seq_base`), fine-tuned to write a synopsis's cast list and to answer those questions in words (400
training sources), 3 epochs, scored by ROUGE-1/2/L on all 204 held-out sources (greedy decoding).

Outputs under ``results/``: ``runs/<method>__s<seed>.json`` for causal-lm, ``runs/<task>/<method>__s<seed>.json``
for the others (one per finished run, skipped when present: the script resumes where it stopped),
``generation.md`` (the tables, with the machine and times), ``generation.png`` (perplexity against trainable
parameters) and ``reading.png`` (EM/F1 and ROUGE against trainable parameters). The base and corpus are cached in ``cache/`` (git-ignored).

Usage:
    nice -n 10 python benchmarks/generation/run.py            # everything (pre-training included), resumable
    python benchmarks/generation/run.py --report              # the table and plot only
    python benchmarks/generation/run.py --device cuda         # on a GPU
    nice -n 10 python benchmarks/generation/run.py --task seq2seq --threads 1
    nice -n 10 python benchmarks/generation/run.py --task question-answering --methods vectorfit,full
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "benchmarks" / "quality"))

RESULTS = HERE / "results"
CACHE = HERE / "cache"
SEEDS = (0, 1, 2)
BUDGET = ["--max-train", "1200", "--epochs", "2", "--batch-size", "16", "--eval-batch-size", "64",
          "--max-length", "128", "--scheduler", "linear"]
#: label -> (what, options of `vectorfit train`)
METHODS: dict[str, tuple[str, list[str]]] = {
    "vectorfit": ("VectorFit (AVF)", ["--method", "vectorfit"]),
    "vectorfit-no-avf": ("VectorFit, no AVF", ["--method", "vectorfit", "--no-avf"]),
    "lora-r1": ("LoRA r=1", ["--method", "lora", "--lora-r", "1"]),
    "lora-r8": ("LoRA r=8", ["--method", "lora", "--lora-r", "8"]),
    "bitfit": ("BitFit", ["--method", "bitfit"]),
    "full": ("full fine-tuning", ["--method", "full"]),
}


@dataclass
class Task:
    """One task of the benchmark: its budget, its headline metric (printed and plotted; the table shows every
    metric ``generative.GENERATION_METRICS`` lists for the task), where records go, and whether the unadapted base
    is scored too (not for a new head)."""
    name: str
    budget: list[str]
    headline: str
    records: Path
    base_row: bool


TASKS = {
    "causal-lm": Task("causal-lm", BUDGET, "eval_perplexity", RESULTS / "runs", True),
    "seq2seq": Task("seq2seq", ["--max-train", "400", "--epochs", "3", "--batch-size", "16", "--eval-batch-size", "64",
                                "--max-length", "384", "--max-target-length", "64", "--scheduler", "linear"],
                    "eval_rougeL", RESULTS / "runs" / "seq2seq", True),
    "question-answering": Task("question-answering", ["--max-train", "300", "--epochs", "2", "--batch-size", "16",
                                                      "--eval-batch-size", "64", "--max-length", "256",
                                                      "--scheduler", "linear"],
                               "eval_f1", RESULTS / "runs" / "question-answering", False),
}
#: the budget's options that also set how `vectorfit evaluate` scores the base
_LENGTHS = ("--max-length", "--max-target-length")


def base_and_data(task: str, args) -> tuple[str, Path]:
    """The model (a folder or alias) and data folder of ``task``, built and cached on first use."""
    if task == "causal-lm":
        from pretrain import pretrain

        return str(pretrain(args.pretrain_steps, CACHE, threads=args.threads)), CACHE / "corpus" / "domain"
    from reading import build

    data = build(CACHE)[task]
    if task == "question-answering":
        return "minilm", data
    from seq2seq_base import pretrain_seq2seq

    return str(pretrain_seq2seq(args.seq2seq_steps, CACHE, threads=args.threads)), data


def _record(path: Path, record: dict) -> None:
    from run import machine, portable  # benchmarks/quality/run.py

    record["machine"] = machine()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(portable(record), indent=2) + "\n")


def base_cell(task: Task, base: str, domain: Path, args) -> None:
    out = task.records / "base.json"
    if out.is_file() or not task.base_row:
        return
    cmd = [sys.executable, "-m", "vectorfit", "evaluate", "--model", str(base), "--data", str(domain), "--task",
           task.name, "--eval-batch-size", "64", "--device", args.device]
    for i, option in enumerate(task.budget[:-1]):  # the lengths the fine-tuned runs are scored with
        if option in _LENGTHS:
            cmd += [option, task.budget[i + 1]]
    from run import offline_env  # benchmarks/quality/run.py

    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=offline_env(args.threads))
    if proc.returncode != 0:
        print(f"  FAILED base: {proc.stderr.strip().splitlines()[-1:] }", flush=True)
        return
    metrics = json.loads(proc.stdout[proc.stdout.index("{"):])
    _record(out, {"cell": "base", "method": "base", "task": task.name, "metrics": metrics, "command": cmd[2:],
                  "wall_seconds": round(time.time() - start, 1)})
    print(f"base: {task.headline} {metrics.get(task.headline):.2f}", flush=True)


def cell(task: Task, method: str, seed: int, base: str, domain: Path, args) -> None:
    out = task.records / f"{method}__s{seed}.json"
    if out.is_file():
        return
    tmp = RESULTS / "tmp" / ("" if task.name == "causal-lm" else task.name)
    run_dir = tmp / out.stem
    tmp.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "vectorfit", "train", "--task", task.name, "--model", str(base), "--data",
           str(domain), "--output", str(run_dir), *METHODS[method][1], *task.budget, "--seed", str(seed),
           "--no-checkpoints", "--no-progress", "--no-plots", "--overwrite", "--device", args.device]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    print(f"{out.stem} ...", flush=True)
    from run import run_logged  # benchmarks/quality/run.py

    log = tmp / f"{out.stem}.log"
    proc, wall = run_logged(cmd, log, args.threads)
    metrics_file = run_dir / "metrics.json"
    if proc.returncode != 0 or not metrics_file.is_file():
        print(f"  FAILED (exit {proc.returncode}): {log.read_text().strip().splitlines()[-1:]}", flush=True)
        return
    metrics = json.loads(metrics_file.read_text())
    _record(out, {"cell": out.stem, "method": method, "seed": seed, "task": task.name, "metrics": metrics,
                  "command": cmd[2:], "wall_seconds": round(wall, 1)})
    print(f"  {task.headline} {metrics.get(task.headline):.2f}, {metrics.get('trainable_params'):,} trainable,"
          f" {metrics.get('train_seconds', 0):.0f} s", flush=True)


def _stats(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def reading_tables() -> list[str]:
    """The question-answering and seq2seq tables (markdown lines), from their records."""
    from generative import GENERATION_METRICS, _rows, _table

    cached, kept = CACHE / "seq2seq-base" / "pretrain.json", RESULTS / "seq2seq_pretrain.json"
    if cached.is_file() and not kept.is_file():
        kept.write_text(cached.read_text())
    pre = json.loads(kept.read_text()) if kept.is_file() else {}
    about = {"seq2seq": "a small T5 **pre-trained here from scratch** by denoising the film reviews"
                        f" ({pre.get('parameters', 0):,} parameters, {pre.get('steps', '?')} steps of batch"
                        f" {pre.get('batch', '?')}; no pre-trained seq2seq model ships in a package registry), fine-tuned"
                        " to write film synopses' cast lists and to answer the reading questions in words (400 of the"
                        " 1,132 training sources, 3 epochs, batch 16); ROUGE on all 204 held-out sources, greedy decoding."
                        " The targets are read off the text, not written by people (benchmarks/generation/reading.py).",
             "question-answering": "the pre-trained MiniLM (all-MiniLM-L6-v2) with a new span head, 300 training"
                                   " questions about film synopses (who plays whom) and debate transcripts (who said a"
                                   " quoted phrase), 2 epochs, batch 16; exact match and F1 (SQuAD v1.1 scoring) on all"
                                   " 185 held-out questions (held out by film and by transcript window)."}
    lines, panels = [], []
    for name in ("seq2seq", "question-answering"):
        task = TASKS[name]
        records = [json.loads(p.read_text()) for p in sorted(task.records.glob("*.json"))]
        if not records:
            continue
        for r in records:
            r["metrics"].setdefault("trainable_params", 0)
        metrics = GENERATION_METRICS[name]
        rows = _rows(records, metrics, lambda r, k: r["metrics"].get(k))
        lines += ["", *_table(f"## `{name}`: {about[name]} Each method's default learning rate; mean ± standard"
                              " deviation over seeds.", rows, metrics, 2)]
        panels.append((name, next(label for key, label, _ in metrics if key == task.headline), rows, task.headline))
    if panels:
        _plot_reading(panels)
        lines += ["", "![headline metric against trainable parameters](reading.png)"]
    return lines


def _plot_reading(panels: list) -> None:
    """``results/reading.png``: per reading task, its headline metric (mean ± sd) against trainable parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (name, label, rows, key) in zip(axes[0], panels):
        base = [r for r in rows if r["method"] == "base" and r.get(key)]
        for r in rows:
            if r["method"] != "base" and r.get(key):
                ax.errorbar(r["params"], r[key]["mean"], yerr=r[key]["sd"] or 0, fmt="o", capsize=3, label=r["label"])
        if base:
            ax.axhline(base[0][key]["mean"], color="grey", ls="--", label="base, not adapted")
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel(f"{label} (higher is better)")
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "reading.png", dpi=120)
    plt.close(fig)


def report() -> str:
    runs = [json.loads(p.read_text()) for p in sorted((RESULTS / "runs").glob("*.json"))]
    if not runs:
        return "no runs yet"
    by = {}
    for r in runs:
        by.setdefault(r["method"], []).append(r)
    cached, kept = CACHE / "base" / "pretrain.json", RESULTS / "pretrain.json"
    if cached.is_file() and not kept.is_file():  # the base's record is committed with the results
        kept.write_text(cached.read_text())
    pre = json.loads(kept.read_text()) if kept.is_file() else {}
    lines = ["# Generation benchmark: adapting a small decoder to political speech", "",
             "Base: a GPT-2-style decoder **pre-trained here from scratch** (no pre-trained decoder ships in a package"
             f" registry): {pre.get('parameters', 0):,} parameters, {pre.get('steps', '?')} steps of batch"
             f" {pre.get('batch', '?')} x {pre.get('block', '?')} tokens on film reviews (Rotten Tomatoes and"
             " vaderSentiment snippets). Adapted to 2012 convention speeches and 2016 debate statements (held out by"
             " speech): 1,200 training passages, 2 epochs, batch 16, each method's default learning rate; eval"
             " perplexity on all 615 held-out passages. Mean ± standard deviation over seeds.", "",
             "| method | trainable params | eval perplexity | seeds | train s (median) |",
             "|---|---:|---:|---:|---:|"]
    order = ["base", *METHODS]
    points = []
    for method in order:
        rs = by.get(method, [])
        if not rs:
            continue
        ppl = [r["metrics"]["eval_perplexity"] for r in rs if r["metrics"].get("eval_perplexity") is not None]
        params = rs[0]["metrics"].get("trainable_params", 0) if method != "base" else 0
        secs = [r["metrics"].get("train_seconds", 0) for r in rs]
        label = "base model, not adapted" if method == "base" else METHODS[method][0]
        lines.append(f"| {label} | {params:,} | {_stats(ppl)} | {len(rs) if method != 'base' else '–'} |"
                     f" {statistics.median(secs):.0f} |" if method != "base" else
                     f"| {label} | 0 | {_stats(ppl)} | – | – |")
        if method != "base" and ppl:
            points.append((label, params, statistics.mean(ppl), statistics.stdev(ppl) if len(ppl) > 1 else 0.0))
    m = runs[0].get("machine", {})
    lines += ["", f"Machine: {m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs, torch {m.get('torch', '?')},"
              f" {m.get('gpu', 'no GPU')}, one thread per run. Pre-training took"
              f" {pre.get('log', [{}])[-1].get('seconds', '?') if pre.get('log') else '?'} s. Times are wall"
              " seconds with other jobs sharing the machine (the median over seeds: two runs were paused for"
              " another benchmark); they compare nothing."]
    lines += reading_tables()
    text = "\n".join(lines) + "\n"
    (RESULTS / "generation.md").write_text(text)
    if points:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for label, params, mean, sd in points:
            ax.errorbar(params, mean, yerr=sd, fmt="o", capsize=3, label=label)
        base = by.get("base")
        if base:
            ax.axhline(base[0]["metrics"]["eval_perplexity"], color="grey", ls="--", label="base, not adapted")
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("held-out perplexity (lower is better)")
        ax.set_title("Small decoder adapted to political speech")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(RESULTS / "generation.png", dpi=120)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", action="store_true", help="only rebuild the table and plot")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods to run")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument("--task", default="causal-lm", choices=list(TASKS), help="which table to fill")
    p.add_argument("--pretrain-steps", type=int, default=1200)
    p.add_argument("--seq2seq-steps", type=int, default=1200, help="pre-training steps of the seq2seq base")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if not args.report:
        task = TASKS[args.task]
        base, domain = base_and_data(args.task, args)
        base_cell(task, base, domain, args)
        for seed in [int(s) for s in args.seeds.split(",")]:
            for method in args.methods.split(","):
                cell(task, method, seed, base, domain, args)
                report()
    print(report())


if __name__ == "__main__":
    main()
