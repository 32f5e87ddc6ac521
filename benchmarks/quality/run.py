#!/usr/bin/env python
"""Quality benchmark: every method of the ``vectorfit`` command on real models and data, several seeds.

The paper's Table 1 and Figure 1 on what runs here: all-MiniLM-L6-v2 on Rotten Tomatoes, the 2016 debates and
the movie-ratings regression, and EfficientNet-Lite0 on MNIST-5k; VectorFit (with AVF, without AVF, sigma only,
attention only), SVFit, SVFT (banded), BitFit, LoRA r=1 and r=8, AdaLoRA and full fine-tuning; 3 seeds each.

Every run is one ``vectorfit train`` subprocess with the same budget per dataset (examples, epochs, batch size,
schedule) for every method; only the learning rate differs, each method's own, picked by ``--tune`` (see
README.md). Outputs, under ``--results`` (default ``benchmarks/quality/results``):

    runs/<grid>/<cell>.json      one JSON per finished run (its metrics.json plus the command); finished cells
                                 are skipped, so the script resumes where it stopped
    tmp/<grid>/<cell>/           the run directories (checkpoint-free; git-ignored) and logs
    quality_<grid>.md            the table: mean ± standard deviation over seeds, trainable parameters
    quality_<grid>.png           accuracy (or Pearson r) against trainable parameters, one panel per dataset
    figures/<grid>/              the paper-style figures of the seed-0 VectorFit run (vs the full FT run)

Usage:
    python benchmarks/quality/run.py --quick          # Rotten Tomatoes subsample, every method, 3 seeds
    python benchmarks/quality/run.py                  # the full grid (accumulates over several invocations)
    python benchmarks/quality/run.py --tune --quick   # the learning-rate sweep
    python benchmarks/quality/run.py --report --quick # rebuild the table and plot only
Run it at low priority on a shared machine: ``nice -n 10 python benchmarks/quality/run.py --quick``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def portable(value):
    """``value`` with every path under the repository written relative to it (records are committed)."""
    if isinstance(value, str):
        return value.replace(str(ROOT) + os.sep, "").replace(sys.executable, "python")
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    return value

# ------------------------------------------------------------------------------------------------ the grid
#: method label -> (vectorfit train options, learning-rate family)
METHODS: dict[str, tuple[list[str], str]] = {
    "full": (["--method", "full"], "full"),
    "vectorfit": (["--method", "vectorfit"], "vectorfit"),
    "vectorfit-noavf": (["--method", "vectorfit", "--no-avf"], "vectorfit"),
    "vectorfit-sigma": (["--method", "vectorfit", "--no-avf", "--no-bias"], "vectorfit"),
    "vectorfit-attn": (["--method", "vectorfit", "--no-avf", "--roles", "q,k,v,o"], "vectorfit"),
    "svfit": (["--method", "svfit", "--svfit-rank", "16"], "svfit"),
    "svft-banded": (["--method", "svft", "--svft-pattern", "banded", "--svft-off-diagonals", "2"], "svft"),
    "bitfit": (["--method", "bitfit"], "bitfit"),
    "lora-r1": (["--method", "lora", "--lora-r", "1"], "lora"),
    "lora-r8": (["--method", "lora", "--lora-r", "8"], "lora"),
    "adalora": (["--method", "adalora", "--lora-r", "8", "--adalora-init-r", "12"], "adalora"),
}
LABELS = {
    "full": "Full FT", "vectorfit": "VectorFit", "vectorfit-noavf": "VectorFit (no AVF)",
    "vectorfit-sigma": "VectorFit(Σ) (σ only, no AVF)", "vectorfit-attn": "VectorFit attention only (no AVF)",
    "svfit": "SVFit r=16", "svft-banded": "SVFT banded d=2", "bitfit": "BitFit", "lora-r1": "LoRA r=1",
    "lora-r8": "LoRA r=8", "adalora": "AdaLoRA r=12→8",
}

#: learning rates per family, picked by `--tune` on Rotten Tomatoes (README.md); the sweep's candidates below
LR = {"vectorfit": 1e-2, "svfit": 4e-2, "svft": 2e-2, "bitfit": 5e-3, "lora": 2e-3, "adalora": 5e-3, "full": 2e-4}
#: the version of a family's training recipe beyond its learning rate: a record of an older one is run again.
#: vectorfit 2: the biases at 0.3x the learning rate (the stall study, docs/method.md "Stalls")
RECIPE = {"vectorfit": 2}
EXTEND = 2  # at most two extensions of a learning-rate grid whose best point is at an edge
LR_GRID = {"vectorfit": [2e-3, 5e-3, 1e-2], "svfit": [2e-3, 5e-3, 1e-2], "svft": [2e-3, 5e-3, 1e-2],
           "bitfit": [1e-3, 2e-3, 5e-3], "lora": [5e-4, 1e-3, 2e-3], "adalora": [1e-3, 2e-3, 5e-3],
           "full": [2e-5, 5e-5, 1e-4]}


@dataclass
class Task:
    key: str
    model: str
    data: str
    options: list[str]
    metric: str = "eval_accuracy"
    title: str = ""


@dataclass
class Grid:
    name: str
    tasks: list[Task]
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])


_TEXT = ["--batch-size", "32", "--eval-batch-size", "128", "--scheduler", "linear", "--warmup-ratio", "0"]
QUICK = Grid("quick", [
    Task("rt", "minilm", "rotten-tomatoes", _TEXT + ["--max-train", "2000", "--max-eval", "500", "--epochs", "2",
                                                    "--max-length", "48"],
         title="MiniLM, Rotten Tomatoes (2,000 train, 2 epochs)"),
])
FULL = Grid("full", [
    Task("rt", "minilm", "rotten-tomatoes", _TEXT + ["--max-train", "4000", "--max-eval", "1000", "--epochs", "3",
                                                    "--max-length", "64"],
         title="MiniLM, Rotten Tomatoes (4,000 train, 3 epochs)"),
    Task("debates", "minilm", "debates-2016", _TEXT + ["--epochs", "6", "--max-length", "96"],
         title="MiniLM, 2016 debates: party (898 train, 6 epochs)"),
    Task("ratings", "minilm", "movie-ratings", _TEXT + ["--max-train", "4000", "--max-eval", "1000", "--epochs", "3",
                                                       "--max-length", "64"], metric="eval_pearson",
         title="MiniLM, movie ratings: regression (4,000 train, 3 epochs), Pearson r"),
    Task("mnist", "efficientnet-lite0", "mnist-5k", ["--batch-size", "64", "--eval-batch-size", "250", "--epochs", "3",
                                                     "--image-size", "64"],
         title="EfficientNet-Lite0, MNIST-5k at 64 px (4,000 train, 3 epochs)"),
])
GRIDS = {"quick": QUICK, "full": FULL}


# ------------------------------------------------------------------------------------------------ running
def cell_name(task: Task, method: str, seed: int, lr: Optional[float] = None) -> str:
    return f"{task.key}__{method}__s{seed}" + (f"__lr{lr:g}" if lr is not None else "")


def offline_env(threads: Optional[int]) -> dict:
    """The environment of a benchmark's subprocess: offline (no hub), quiet tokenizers, ``threads`` CPU threads
    when given."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run_logged(cmd: list[str], log: Path, threads: Optional[int]) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``cmd`` offline with its output (after the command line itself) in ``log``, on ``threads`` torch threads
    when given; ``(the finished process, wall seconds)``."""
    env = offline_env(threads)
    start = time.time()
    with open(log, "w") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    return proc, time.time() - start


def run_cell(task: Task, method: str, seed: int, lr: float, out_json: Path, tmp: Path, args, *,
             data: Optional[str] = None, plots: bool = False) -> Optional[dict]:
    """One `vectorfit train` subprocess; writes ``out_json`` when it succeeds. Returns the record or None."""
    options, _ = METHODS[method]
    run_dir = tmp / out_json.stem
    log = tmp / f"{out_json.stem}.log"
    cmd = [sys.executable, "-m", "vectorfit", "train", "--model", task.model, "--data", data or task.data,
           "--output", str(run_dir), *options, *task.options, "--seed", str(seed), "--lr", f"{lr:g}",
           "--no-checkpoints", "--no-progress", "--overwrite", "--device", args.device]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if not plots:
        cmd.append("--no-plots")
    tmp.mkdir(parents=True, exist_ok=True)
    proc, wall = run_logged(cmd, log, args.threads)
    metrics_file = run_dir / "metrics.json"
    if proc.returncode != 0 or not metrics_file.is_file():
        tail = log.read_text().strip().splitlines()[-1:] if log.is_file() else []
        print(f"  FAILED {out_json.stem} (exit {proc.returncode}): {' '.join(tail)[:300]}", flush=True)
        (out_json.parent / f"{out_json.stem}.failed").write_text(log.read_text() if log.is_file() else "")
        return None
    metrics = json.loads(metrics_file.read_text())
    record = {"cell": out_json.stem, "task": task.key, "model": task.model, "data": data or task.data,
              "method": method, "seed": seed, "lr": lr, "wall_seconds": round(wall, 1), "command": cmd[2:],
              "machine": machine(), "metrics": metrics, "recipe": RECIPE.get(METHODS[method][1], 1)}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(portable(record), indent=2) + "\n")
    failed = out_json.parent / f"{out_json.stem}.failed"
    if failed.exists():
        failed.unlink()
    if not plots:
        shutil.rmtree(run_dir, ignore_errors=True)  # keep only the JSON (and the log)
    return record


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def tuned_lr(results: Path) -> dict:
    path = results / "tuning" / "tuned_lr.json"
    if path.is_file():
        return {**LR, **json.loads(path.read_text()).get("lr", {})}
    return dict(LR)


def run_grid(grid: Grid, args) -> None:
    results = Path(args.results)
    runs, tmp = results / "runs" / grid.name, results / "tmp" / grid.name
    lrs = tuned_lr(results)
    cells = [(task, method, seed) for task in grid.tasks for seed in grid.seeds for method in grid.methods
             if _selected(task, method, args)]

    def finished(out: Path, method: str) -> bool:
        """A run is kept only if it used the current learning rate of its family (a new sweep re-runs it) and the
        current recipe of its family (a new default re-runs it)."""
        if not out.is_file():
            return False
        record = json.loads(out.read_text())
        family = METHODS[method][1]
        return record.get("lr") == lrs[family] and record.get("recipe", 1) == RECIPE.get(family, 1)

    done = sum(finished(runs / f"{cell_name(t, m, s)}.json", m) for t, m, s in cells)
    print(f"grid {grid.name}: {len(cells)} cells, {done} finished, {len(cells) - done} to run", flush=True)
    for i, (task, method, seed) in enumerate(cells, 1):
        out = runs / f"{cell_name(task, method, seed)}.json"
        if finished(out, method):
            continue
        family = METHODS[method][1]
        plots = seed == grid.seeds[0] and method in ("full", "vectorfit")
        print(f"[{i}/{len(cells)}] {out.stem} lr={lrs[family]:g} ...", flush=True)
        record = run_cell(task, method, seed, lrs[family], out, tmp, args, plots=plots)
        if record:
            m = record["metrics"]
            print(f"  {task.metric}={m.get(task.metric)} trainable={m['trainable_params']:,}"
                  f" train={m['train_seconds']:.0f}s wall={record['wall_seconds']:.0f}s", flush=True)
            if plots and method == "vectorfit":
                figures = results / "figures" / grid.name / task.key
                figures.mkdir(parents=True, exist_ok=True)
                for png in (tmp / out.stem / "plots").glob("*.png"):
                    shutil.copy(png, figures / png.name)
        report(grid, args)


def _selected(task: Task, method: str, args) -> bool:
    if args.only_tasks and task.key not in args.only_tasks:
        return False
    if args.only_methods and method not in args.only_methods:
        return False
    if task.model == "efficientnet-lite0" and method == "vectorfit-attn":
        return False  # EfficientNet has no attention: the variant does not exist there
    return True


# ------------------------------------------------------------------------------------------------ tuning
def tune(grid: Grid, args) -> None:
    """Sweep each learning-rate family's 3 candidates over the tuning seeds (mean score), on a validation split carved out
    of the first task's *training* examples (the eval examples of the grid are never seen), same budget."""
    results = Path(args.results)
    folder = results / "tuning"
    task = grid.tasks[0]
    data = results / "tmp" / "tuning" / f"{task.key}_train_only.csv"
    if not data.is_file():
        _write_train_only(task, data)
    representative = {"vectorfit": "vectorfit-noavf", "svfit": "svfit", "svft": "svft-banded", "bitfit": "bitfit",
                      "lora": "lora-r8", "adalora": "adalora", "full": "full"}
    families = [f for f in representative if not args.only_methods or representative[f] in args.only_methods]
    best: dict[str, tuple[float, float]] = {}
    tried: dict[str, dict[float, Optional[float]]] = {}
    per_seed: dict[str, dict[float, list[float]]] = {}

    def score(family: str, lr: float):
        """(mean metric, -mean eval_loss) over the tuning seeds: the metric decides, the validation loss breaks
        ties (accuracy on a few hundred examples is coarse, and a method that has not left the majority class
        ties at every learning rate). Several seeds, so that a rate which diverges for one seed in two is not
        picked for its lucky seed."""
        method = representative[family]
        metrics, losses = [], []
        for seed in args.tune_seeds:
            out = folder / "runs" / f"{cell_name(task, method, seed, lr)}.json"
            if not out.is_file():
                print(f"tune {out.stem} ...", flush=True)
                run_cell(task, method, seed, lr, out, results / "tmp" / "tuning", args, data=str(data))
            if out.is_file():
                m = json.loads(out.read_text())["metrics"]
                if m.get(task.metric) is not None:
                    metrics.append(m[task.metric])
                    losses.append(m.get("eval_loss", 0.0))
        value = None
        if metrics and len(metrics) == len(args.tune_seeds):
            value = (round(statistics.mean(metrics), 6), -statistics.mean(losses))
        print(f"  {family} lr={lr:g}: mean {task.metric}, -eval_loss = {value} (seeds: {metrics})", flush=True)
        tried.setdefault(family, {})[lr] = value
        per_seed.setdefault(family, {})[lr] = metrics
        return value

    for family in families:
        grid = sorted(LR_GRID[family])
        for lr in grid:
            score(family, lr)
        # the same rule for every method: while the best is at an edge of the grid, extend it one step (x2 or /2)
        for _ in range(EXTEND):
            scores = tried[family]
            lrs = sorted(lr for lr, v in scores.items() if v is not None)
            if not lrs:
                break
            top = max(lrs, key=lambda lr: scores[lr])
            if top == lrs[-1]:
                score(family, top * 2)
            elif top == lrs[0]:
                score(family, top / 2)
            else:
                break
        scores = {lr: v for lr, v in tried[family].items() if v is not None}
        if scores:
            lr = max(scores, key=lambda lr: scores[lr])
            best[family] = (lr, scores[lr][0])
    summary = {"task": task.key, "metric": task.metric, "candidates": LR_GRID, "extension_rule":
               f"while the best is at an edge, one more point beyond it (x2 or /2), at most {EXTEND} times",
               "seeds": args.tune_seeds,
               "selection": "best mean validation metric over the seeds, ties broken by the lower mean validation loss",
               "tried": {f: {f"{lr:g}": (None if v is None else {task.metric: v[0], "eval_loss": -v[1],
                                                   "per_seed": per_seed[f][lr]})
                             for lr, v in sorted(t.items())} for f, t in tried.items()},
               "lr": {f: lr for f, (lr, _) in best.items()}, "scores": {f: v for f, (_, v) in best.items()}}
    (folder / "tuned_lr.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["lr"], indent=2))


def _write_train_only(task: Task, path: Path) -> None:
    """The task's training examples only (the same fixed split and subsample the grid uses) as a CSV."""
    from vf_backends_nlp.data import load_text_dataset

    opts = dict(zip(task.options[::2], task.options[1::2]))
    train, _ = load_text_dataset(task.data, max_train=int(opts["--max-train"]) if "--max-train" in opts else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for text, label in zip(train.texts, train.labels):
            writer.writerow([text, train.label_names[label] if train.label_names else label])


# ------------------------------------------------------------------------------------------------ report
def _load_records(results: Path, grid: Grid) -> list[dict]:
    """The finished runs of the grid made at the current learning rates (runs of an older sweep are left out)."""
    folder = results / "runs" / grid.name
    lrs = tuned_lr(results)
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return [r for r in records if r.get("lr") == lrs[METHODS[r["method"]][1]]]


def _fmt_params(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else f"{n:.0f}"


def report(grid: Grid, args) -> None:
    results = Path(args.results)
    records = _load_records(results, grid)
    if not records:
        return
    tasks = [t for t in grid.tasks if any(r["task"] == t.key for r in records)]
    cells: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        cells.setdefault((r["task"], r["method"]), []).append(r)
    scale = {t.key: (100.0 if t.metric == "eval_accuracy" else 1.0) for t in tasks}
    lines = [f"### Quality grid `{grid.name}`", ""]
    head = ["method", "trainable params"] + [f"{t.key} ({'acc %' if t.metric == 'eval_accuracy' else 'Pearson r'})"
                                             for t in tasks] + ["train s/run (median)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    summary = {}
    for method in grid.methods:
        row = [LABELS.get(method, method)]
        params, secs, any_cell = [], [], False
        values = []
        for t in tasks:
            rs = cells.get((t.key, method), [])
            vals = [r["metrics"].get(t.metric) for r in rs if r["metrics"].get(t.metric) is not None]
            params += [r["metrics"]["trainable_params"] for r in rs]
            secs += [r["metrics"]["train_seconds"] for r in rs]
            if vals:
                any_cell = True
                mean = statistics.mean(vals) * scale[t.key]
                sd = statistics.stdev(vals) * scale[t.key] if len(vals) > 1 else float("nan")
                digits = 1 if scale[t.key] == 100.0 else 3
                cell = f"{mean:.{digits}f} ± {sd:.{digits}f}" if not math.isnan(sd) else f"{mean:.{digits}f}"
                if len(vals) < len(grid.seeds):
                    cell += f" (n={len(vals)})"
                values.append(cell)
                summary.setdefault(t.key, {})[method] = {"mean": mean, "sd": sd, "n": len(vals),
                                                          "values": [v * scale[t.key] for v in vals],
                                                          "params": statistics.mean(
                                                              r["metrics"]["trainable_params"] for r in rs)}
            else:
                values.append("–")
        if not any_cell:
            continue
        p = sorted(set(params))
        row.append(_fmt_params(p[0]) if len(p) == 1 else " / ".join(_fmt_params(x) for x in p))
        row += values
        row.append(f"{statistics.median(secs):.0f}" if secs else "–")
        lines.append("| " + " | ".join(row) + " |")
    n_runs = len(records)
    total = sum(r["metrics"]["train_seconds"] for r in records)
    wall = sum(r.get("wall_seconds", 0) for r in records)
    m = records[-1].get("machine", {})
    lines += ["", f"{n_runs} runs; mean ± standard deviation over seeds {grid.seeds} (n shown when fewer finished);"
              f" total training {total / 3600:.2f} h, wall {wall / 3600:.2f} h on {m.get('cpu') or m.get('gpu') or '?'}"
              f" ({m.get('cpus')} CPUs, torch {m.get('torch')}, {m.get('threads')} threads).",
              "Learning rates: " + ", ".join(f"{k} {v:g}" for k, v in tuned_lr(results).items()) + ".", ""]
    for t in tasks:
        lines.append(f"- `{t.key}`: {t.title}")
    lines += _sweep_table(results)
    md = results / f"quality_{grid.name}.md"
    md.write_text("\n".join(lines) + "\n")
    (results / f"quality_{grid.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plot(grid, tasks, summary, results / f"quality_{grid.name}.png")


def _sweep_table(results: Path) -> list[str]:
    """The learning-rate sweep behind the grid's rates, from ``tuning/tuned_lr.json``."""
    path = results / "tuning" / "tuned_lr.json"
    if not path.is_file():
        return []
    sweep = json.loads(path.read_text())
    metric, seeds = sweep["metric"], sweep.get("seeds", [0])
    lines = ["", f"Learning-rate sweep (`{sweep['task']}`, validation split of the training examples; mean"
                 f" {metric} over seeds {seeds}, per seed in brackets; the chosen rate in bold):", "",
             "| family | learning rate: validation score | chosen |", "|---|---|---|"]
    for family, tried in sweep["tried"].items():
        cells = []
        for lr, v in tried.items():
            if v is None:
                cells.append(f"{lr}: failed")
                continue
            scale = 100.0 if metric == "eval_accuracy" else 1.0
            per = ", ".join(f"{x * scale:.1f}" for x in v.get("per_seed", []))
            text = f"{lr}: {v[metric] * scale:.1f}" + (f" [{per}]" if per else "")
            cells.append(f"**{text}**" if float(lr) == sweep["lr"].get(family) else text)
        lines.append(f"| {family} | {'; '.join(cells)} | {sweep['lr'].get(family, '–'):g} |")
    return lines


def _plot(grid: Grid, tasks: list[Task], summary: dict, path: Path) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return
    fig = Figure(figsize=(5.2 * len(tasks), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    colors = {"full": "black", "vectorfit": "tab:red", "vectorfit-noavf": "tab:orange", "vectorfit-sigma": "gold",
              "vectorfit-attn": "tab:pink", "svfit": "tab:purple", "svft-banded": "tab:brown", "bitfit": "tab:gray",
              "lora-r1": "tab:cyan", "lora-r8": "tab:blue", "adalora": "tab:green"}
    for ax, t in zip(axes, tasks):
        seen: dict[float, int] = {}
        for method, s in summary.get(t.key, {}).items():
            # methods with the same parameter count (VectorFit with and without AVF) are set side by side
            nth = seen.get(round(s["params"], -2), 0)
            seen[round(s["params"], -2)] = nth + 1
            x = s["params"] * (1.18 ** nth)
            color = colors.get(method, "k")
            ax.errorbar([x], [s["mean"]], yerr=[0 if math.isnan(s["sd"]) else s["sd"]], fmt="o",
                        color=color, capsize=3, label=LABELS.get(method, method))
            ax.scatter([x] * len(s.get("values", [])), s.get("values", []), s=9, color=color, alpha=0.45,
                       marker="x", linewidths=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (log)")
        ax.set_ylabel("accuracy (%)" if t.metric == "eval_accuracy" else "Pearson r")
        ax.set_title(t.title + "\nmean ± sd over seeds; x: each seed", fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    fig.savefig(path, dpi=130)


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the quick grid (Rotten Tomatoes subsample)")
    parser.add_argument("--tune", action="store_true", help="run the learning-rate sweep instead of the grid")
    parser.add_argument("--report", action="store_true", help="only rebuild the table and plot (and make the"
                        " stored records' paths relative to the repository)")
    parser.add_argument("--results", default=str(HERE / "results"), help="results folder")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--tune-seeds", default="0,1", help="seeds each swept learning rate is scored over")
    parser.add_argument("--tasks", dest="only_tasks", help="comma-separated task keys (rt, debates, ratings, mnist)")
    parser.add_argument("--methods", dest="only_methods", help=f"comma-separated methods ({', '.join(METHODS)})")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)
    args.only_tasks = args.only_tasks.split(",") if args.only_tasks else None
    args.only_methods = args.only_methods.split(",") if args.only_methods else None
    if args.only_methods:
        unknown = [m for m in args.only_methods if m not in METHODS]
        if unknown:
            parser.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    grid = GRIDS["quick" if args.quick else "full"]
    grid.seeds = [int(s) for s in args.seeds.split(",")]
    args.tune_seeds = [int(s) for s in args.tune_seeds.split(",")]
    if args.report:
        for path in Path(args.results).glob("**/*.json"):
            if "tmp" not in path.relative_to(args.results).parts:
                path.write_text(json.dumps(portable(json.loads(path.read_text())), indent=2) + "\n")
        report(grid, args)
    elif args.tune:
        tune(grid, args)
    else:
        run_grid(grid, args)
        report(grid, args)
    md = Path(args.results) / f"quality_{grid.name}.md"
    if md.is_file() and not args.tune:
        print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
