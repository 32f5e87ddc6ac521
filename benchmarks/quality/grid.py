#!/usr/bin/env python
"""The converged comparison grid (issue 20): every method tuned the same way, per task, with early stopping.

The paper's Table 1 (https://arxiv.org/abs/2503.19530) measured fairly on what runs here: MiniLM on Rotten
Tomatoes (4,000 training snippets), the 2016 debates (party) and the movie-ratings regression (Pearson r), and
EfficientNet-Lite0 on MNIST-5k; VectorFit with AVF, without AVF, VectorFit(Σ), SVFT, SVFit, BitFit, LoRA r=1 and
r=8, AdaLoRA and full fine-tuning. For every task and every method, the same procedure:

1. **Validation split**: ``vectorfit train --validation-fraction 0.2`` holds out a fixed fifth of the training
   examples; the eval split is never used to choose anything.
2. **Early stopping** on it (``--early-stopping 3``: three evaluations, one per epoch, without improvement of the
   task's metric), within the same maximum budget for every method; the best evaluation's state is restored.
3. **Learning-rate sweep** on the validation score, on one ladder of log-spaced rates shared by every method
   (``LADDER``: 1e-5, 3e-5, 1e-4, ... 0.3, a factor of about 3 apart). Each method starts at the three ladder
   points around its command default; while the best point is at an edge of those tried, the next ladder point
   beyond it is added (at most ``MAX_EXTENSIONS`` times), the same rule for all, so the best is inside. The score
   of a point is the mean over the sweep seeds of the best validation metric; the mean best validation loss
   breaks ties; a run whose loss turned non-finite scores worst.
4. **Seeds**: the chosen rate with seeds 0, 1, 2 (the sweep's seed-0 and seed-1 runs at that rate are two of
   them); reported: mean ± standard deviation of the held-out eval metric, the range, trainable parameters.

Order (so that partial results mean something): one task after the other (debates, rt, ratings, mnist); within a
task, every method's seed-0 sweep first, then the second sweep seed, then the remaining final seeds.

Records: ``results/converged/runs/<task>/<method>/lr<lr>__s<seed>.json`` (the run's metrics.json, the command,
the machine, the wall time), one per run; finished runs are skipped, so the grid resumes and accumulates over
invocations and machines; a run that crashed leaves ``.failed`` (its log) and is retried next time. The report
(``--report``; also after every run) writes ``results/quality_converged.md/.json/.png`` and, with ``--readme``,
the README's section "How the methods compare (converged grid)". ``generative.py`` collates the generation and
diffusion benchmarks' records into the same layout.

Usage::

    nice -n 15 python benchmarks/quality/grid.py --threads 1                 # run (resumes), the whole grid
    nice -n 15 python benchmarks/quality/grid.py --tasks debates --threads 1 # one task
    python benchmarks/quality/grid.py --plan                                 # the next runs, nothing trained
    python benchmarks/quality/grid.py --report --readme                      # tables, plot, README section
    python benchmarks/quality/grid.py --device cuda                          # on a GPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
from run import LABELS, METHODS, _fmt_params, machine, portable, run_logged  # noqa: E402

# ------------------------------------------------------------------------------------------------ the grid
#: the learning rates every sweep draws from, the same for every method (log-spaced, a factor of ~3 apart)
LADDER = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
#: at most this many points beyond the first three, per method and task
MAX_EXTENSIONS = 3
#: each method's starting centre on the ladder: the ladder point nearest its command default (the quick grid's
#: tuned rates, ``vectorfit list``)
CENTRE = {"vectorfit": 1e-2, "vectorfit-noavf": 1e-2, "vectorfit-sigma": 1e-2, "svft-banded": 3e-2, "svfit": 3e-2,
          "bitfit": 3e-3, "lora-r1": 3e-3, "lora-r8": 3e-3, "adalora": 3e-3, "full": 3e-4}
#: in the order a task's runs go: the comparison the README states first (VectorFit, LoRA r=8, full, no AVF)
GRID_METHODS = ["vectorfit", "lora-r8", "full", "vectorfit-noavf", "lora-r1", "svft-banded", "vectorfit-sigma",
                "svfit", "bitfit", "adalora"]
SWEEP_SEEDS = [0, 1]
FINAL_SEEDS = [0, 1, 2]
VALIDATION_FRACTION = 0.2
PATIENCE = 3
#: the version of the run recipe (budget, options): records of another version are not this grid's
RECIPE = 1


@dataclass
class Task:
    key: str
    model: str
    data: str
    options: list[str]
    metric: str
    title: str
    max_epochs: int


_TEXT = ["--batch-size", "32", "--eval-batch-size", "128", "--scheduler", "linear", "--warmup-ratio", "0"]
TASKS = [
    Task("debates", "minilm", "debates-2016", _TEXT + ["--max-length", "96"], "eval_accuracy",
         "MiniLM, 2016 debates: party (718 train + 180 validation, 224 eval)", 12),
    Task("rt", "minilm", "rotten-tomatoes", _TEXT + ["--max-train", "5000", "--max-eval", "1000", "--max-length", "64"],
         "eval_accuracy", "MiniLM, Rotten Tomatoes (4,000 train + 1,000 validation, 1,000 eval)", 8),
    Task("ratings", "minilm", "movie-ratings", _TEXT + ["--max-train", "5000", "--max-eval", "1000",
                                                       "--max-length", "64"],
         "eval_pearson", "MiniLM, movie ratings: regression (4,000 train + 1,000 validation, 1,000 eval), Pearson r", 8),
    Task("mnist", "efficientnet-lite0", "mnist-5k", ["--batch-size", "64", "--eval-batch-size", "250",
                                                     "--image-size", "64", "--scheduler", "linear"],
         "eval_accuracy", "EfficientNet-Lite0, MNIST-5k at 64 px (3,200 train + 800 validation, 1,000 eval)", 10),
]
TASK_BY_KEY = {t.key: t for t in TASKS}


# ------------------------------------------------------------------------------------------------ the sweep rule
Score = Optional[tuple]  # (validation metric, -validation loss), higher is better; None: not run yet


def start_points(centre: float, ladder: Sequence[float] = LADDER, width: int = 3) -> list[float]:
    """The ``width`` ladder points around the one nearest ``centre`` (in log scale), kept inside the ladder."""
    nearest = min(range(len(ladder)), key=lambda i: abs(math.log(ladder[i]) - math.log(centre)))
    lo = min(max(0, nearest - width // 2), len(ladder) - width)
    return list(ladder[lo:lo + width])


def _mean_score(scores: dict, lr: float, seeds: Sequence[int]) -> Score:
    """Mean (metric, -loss) over ``seeds`` at ``lr``; a diverged run scores (-inf, -inf); None if any is missing."""
    values = [scores.get((lr, s)) for s in seeds]
    if any(v is None for v in values):
        return None
    return (statistics.mean(v[0] for v in values), statistics.mean(v[1] for v in values))


def sweep(start: Sequence[float], scores: dict, seeds: Sequence[int], *, ladder: Sequence[float] = LADDER,
          max_extensions: int = MAX_EXTENSIONS) -> tuple[list[float], list[tuple[float, int]], Optional[float]]:
    """The sweep of one method on one task as far as ``scores`` allow: ``(points, missing, best)``.

    ``scores`` maps ``(lr, seed)`` to ``(validation metric, -validation loss)`` (``(-inf, -inf)`` for a run that
    diverged). The points are the ``start`` ones, then, while the best (by the mean over ``seeds``) is at an edge
    of the points tried, the next ladder point beyond it (at most ``max_extensions``, never beyond the ladder).
    ``missing`` are the runs needed before the rule can go on (empty when the sweep is complete); ``best`` is the
    chosen rate once it is (None before). Pure: the same records always give the same sweep.
    """
    points = sorted(start)
    for _ in range(max_extensions + 1):
        missing = [(lr, s) for lr in points for s in seeds if (lr, s) not in scores]
        if missing:
            return points, missing, None
        means = {lr: _mean_score(scores, lr, seeds) for lr in points}
        best = max(points, key=lambda lr: (means[lr], -lr))  # a tie goes to the lower rate
        i = ladder.index(best)
        if best == points[-1] and i + 1 < len(ladder) and len(points) - len(start) < max_extensions:
            points.append(ladder[i + 1])
        elif best == points[0] and i > 0 and len(points) - len(start) < max_extensions:
            points.insert(0, ladder[i - 1])
        else:
            return points, [], best
    raise AssertionError("unreachable")


@dataclass
class MethodPlan:
    """Where one method stands on one task: the runs it needs next and what is known."""
    method: str
    phase: str                  # "sweep seed 0", "sweep seeds 0,1", "final seeds", "done"
    missing: list               # (lr, seed) runs to do next
    points: list                # learning rates of the sweep so far
    chosen: Optional[float]     # the chosen rate (None until the seed-0 sweep is complete)
    chosen_from: list = field(default_factory=list)  # the seeds the choice rests on


def plan_method(method: str, scores: dict, *, sweep_seeds: Sequence[int] = SWEEP_SEEDS,
                final_seeds: Sequence[int] = FINAL_SEEDS, centre: Optional[float] = None) -> MethodPlan:
    """The next runs of ``method`` on a task from its ``scores`` (see :func:`sweep`): the sweep with the first
    seed, then with every sweep seed, then the final seeds at the chosen rate."""
    start = start_points(centre if centre is not None else CENTRE[method])
    chosen, used = None, []
    points: list = list(start)
    for k in range(1, len(sweep_seeds) + 1):
        seeds = list(sweep_seeds[:k])
        points, missing, best = sweep(start, scores, seeds)
        if missing:
            return MethodPlan(method, f"sweep seeds {','.join(map(str, seeds))}", missing, points, chosen, used)
        chosen, used = best, seeds
    missing = [(chosen, s) for s in final_seeds if (chosen, s) not in scores]
    return MethodPlan(method, "final seeds" if missing else "done", missing, points, chosen, used)


def runs_left(plan: MethodPlan, scores: dict, *, sweep_seeds: Sequence[int] = SWEEP_SEEDS,
              final_seeds: Sequence[int] = FINAL_SEEDS) -> int:
    """At least how many runs ``method`` still needs on a task: its sweep points so far with every sweep seed, then
    the final seeds that are not sweep seeds (a lower bound: the sweep may still extend at an edge)."""
    sweep_runs = {(lr, s) for lr in plan.points for s in sweep_seeds} - set(scores)
    extra = [s for s in final_seeds if s not in sweep_seeds]
    finals = [s for s in extra if plan.chosen is None or (plan.chosen, s) not in scores]
    return len(sweep_runs) + len(finals)


def next_runs(plans: Sequence[MethodPlan]) -> list[tuple[str, float, int]]:
    """The runs to do next on one task, in the grid's order: every method's earliest phase first (all seed-0
    sweeps before any second seed, all sweeps before the final seeds)."""
    order = {}
    for p in plans:
        rank = 0 if p.phase.startswith("sweep seeds") and "," not in p.phase else \
            1 if p.phase.startswith("sweep") else 2 if p.phase == "final seeds" else 3
        order[p.method] = rank
    first = min(order.values(), default=3)
    return [(p.method, lr, s) for p in plans if order[p.method] == first and first < 3 for lr, s in p.missing]


# ------------------------------------------------------------------------------------------------ records
def record_path(results: Path, task: str, method: str, lr: float, seed: int) -> Path:
    return results / "runs" / task / method / f"lr{lr:g}__s{seed}.json"


def load_records(results: Path, task: str) -> dict:
    """``{(method, lr, seed): record}`` of the task's finished runs of this recipe."""
    out = {}
    folder = results / "runs" / task
    for path in sorted(folder.glob("*/lr*__s*.json")) if folder.is_dir() else []:
        record = json.loads(path.read_text())
        if record.get("recipe") == RECIPE:
            out[(record["method"], float(record["lr"]), int(record["seed"]))] = record
    return out


def validation_score(record: dict, metric: str) -> tuple:
    """``(best validation metric, -best validation loss)`` of a run; ``(-inf, -inf)`` when it diverged or has none."""
    if record.get("diverged"):
        return (-math.inf, -math.inf)
    m = record.get("metrics") or {}
    value = m.get("best_validation_" + metric[len("eval_"):])
    loss = m.get("best_validation_loss")
    if value is None or not math.isfinite(value):
        return (-math.inf, -math.inf)
    return (float(value), -float(loss) if loss is not None and math.isfinite(loss) else -math.inf)


def scores_of(records: dict, method: str, metric: str) -> dict:
    return {(lr, seed): validation_score(r, metric) for (m, lr, seed), r in records.items() if m == method}


# ------------------------------------------------------------------------------------------------ running
def command(task: Task, method: str, lr: float, seed: int, run_dir: Path, args) -> list[str]:
    options, _ = METHODS[method]
    cmd = [sys.executable, "-m", "vectorfit", "train", "--model", task.model, "--data", task.data,
           "--output", str(run_dir), *options, *task.options, "--epochs", str(task.max_epochs),
           "--validation-fraction", str(VALIDATION_FRACTION), "--early-stopping", str(PATIENCE),
           "--seed", str(seed), "--lr", f"{lr:g}", "--no-checkpoints", "--no-progress", "--no-plots", "--overwrite",
           "--device", args.device]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd


def run_one(task: Task, method: str, lr: float, seed: int, results: Path, args) -> Optional[dict]:
    """One ``vectorfit train`` subprocess; writes its record (or ``.failed``). A run whose loss turned non-finite
    is a result (the rate is too high): recorded with ``diverged: true``."""
    out = record_path(results, task.key, method, lr, seed)
    tmp = results / "tmp" / task.key / method
    run_dir = tmp / out.stem
    log = tmp / f"{out.stem}.log"
    tmp.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = command(task, method, lr, seed, run_dir, args)
    proc, wall = run_logged(cmd, log, args.threads)
    text = log.read_text() if log.is_file() else ""
    failed = out.with_suffix(".failed")
    metrics_file = run_dir / "metrics.json"
    record = {"task": task.key, "model": task.model, "data": task.data, "method": method, "seed": seed, "lr": lr,
              "recipe": RECIPE, "wall_seconds": round(wall, 1), "command": cmd[2:],
              "machine": {**machine(), "threads": args.threads or machine().get("threads"),
                          "nice": os.nice(0)}}
    if proc.returncode == 0 and metrics_file.is_file():
        record["metrics"] = json.loads(metrics_file.read_text())
        record["diverged"] = False
    elif "the training loss became" in text:
        record["metrics"] = None
        record["diverged"] = True
        record["reason"] = " ".join(text.strip().splitlines()[-1:])[:400]
    else:
        failed.write_text(text)
        print(f"  FAILED {task.key}/{method}/{out.stem} (exit {proc.returncode}): "
              f"{' '.join(text.strip().splitlines()[-1:])[:300]}", flush=True)
        return None
    out.write_text(json.dumps(portable(record), indent=2) + "\n")
    if failed.exists():
        failed.unlink()
    shutil.rmtree(run_dir, ignore_errors=True)
    return record


def plans_for(task: Task, records: dict, methods: Sequence[str], args) -> list[MethodPlan]:
    return [plan_method(m, scores_of(records, m, task.metric), sweep_seeds=args.sweep_seeds,
                        final_seeds=args.seeds) for m in methods]


def run_grid(args) -> None:
    results = Path(args.results)
    started = time.time()
    for task in args.tasks:
        failed_now: set = set()  # runs that crashed in this invocation: retried next time, not now
        while True:
            records = load_records(results, task.key)
            # a run that crashed counts as diverged for this invocation's planning only (retried next time)
            plans = plans_for(task, {**records, **{k: {"diverged": True} for k in failed_now}}, args.methods, args)
            todo = next_runs(plans)
            if not todo:
                print(f"{task.key}: complete", flush=True)
                break
            method, lr, seed = todo[0]
            if args.max_hours and time.time() - started > args.max_hours * 3600:
                print(f"stopping: --max-hours {args.max_hours} reached", flush=True)
                return
            phase = next(p.phase for p in plans if p.method == method)
            print(f"[{task.key}] {method} lr={lr:g} seed={seed} ({phase}; {len(todo)} runs in this phase) ...",
                  flush=True)
            record = run_one(task, method, lr, seed, results, args)
            if record is None:
                failed_now.add((method, lr, seed))
            else:
                m = record.get("metrics") or {}
                print(f"  {'diverged' if record['diverged'] else ''} best validation "
                      f"{validation_score(record, task.metric)[0]:.4f} at step {m.get('best_step')}, "
                      f"{task.metric} {m.get(task.metric)}, steps {m.get('train_steps')}, "
                      f"wall {record['wall_seconds']:.0f}s", flush=True)
            report(args)


# ------------------------------------------------------------------------------------------------ report
def summarise(task: Task, records: dict, methods: Sequence[str], args) -> dict:
    """Per method: the sweep (rate -> validation score per seed), the chosen rate, the held-out eval metric of
    the final seeds run at it (mean, standard deviation, range), trainable parameters, and the status."""
    out = {}
    scale = 100.0 if task.metric == "eval_accuracy" else 1.0
    for method in methods:
        scores = scores_of(records, method, task.metric)
        plan = plan_method(method, scores, sweep_seeds=args.sweep_seeds, final_seeds=args.seeds)
        rates = sorted({lr for lr, _ in scores} | set(plan.points))
        sweep_table = {f"{lr:g}": {str(s): (None if (lr, s) not in scores else
                                            (None if math.isinf(scores[(lr, s)][0]) else scores[(lr, s)][0] * scale))
                                   for s in args.sweep_seeds if (lr, s) in scores} for lr in rates}
        entry = {"phase": plan.phase, "points": plan.points, "chosen_lr": plan.chosen,
                 "chosen_from_seeds": plan.chosen_from, "sweep": sweep_table,
                 "runs_left": runs_left(plan, scores, sweep_seeds=args.sweep_seeds, final_seeds=args.seeds)}
        if plan.chosen is not None:
            finals = [records[(method, plan.chosen, s)] for s in args.seeds if (method, plan.chosen, s) in records]
            values = [r["metrics"][task.metric] * scale for r in finals
                      if r.get("metrics") and r["metrics"].get(task.metric) is not None]
            if values:
                m = finals[0]["metrics"]
                entry.update({
                    "values": values, "seeds": [r["seed"] for r in finals], "n": len(values),
                    "mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
                    "min": min(values), "max": max(values), "params": m["trainable_params"],
                    "total_params": m["total_params"],
                    "best_epochs": [_best_epoch(r["metrics"]) for r in finals],
                    "stalled": sum(bool(r["metrics"].get("stalled")) for r in finals)})
        if any(r.get("metrics") for (mm, _, _), r in records.items() if mm == method):
            any_record = next(r for (mm, _, _), r in records.items() if mm == method and r.get("metrics"))
            entry.setdefault("params", any_record["metrics"]["trainable_params"])
        out[method] = entry
    return out


def _threads(record: dict):
    """The torch threads a run used: its command's ``--threads``, else torch's default of the machine."""
    cmd = record.get("command") or []
    return cmd[cmd.index("--threads") + 1] if "--threads" in cmd[:-1] else (record.get("machine") or {}).get("threads")


def _best_epoch(metrics: dict) -> Optional[float]:
    """The epoch of the evaluation whose state was kept (early stopping)."""
    return next((h.get("epoch") for h in metrics.get("validation_history") or [] if h["step"] == metrics.get("best_step")),
                None)


def _cell(s: dict, digits: int) -> str:
    if s.get("mean") is None:
        return "–"
    text = f"{s['mean']:.{digits}f}"
    if s.get("sd") is not None:
        text += f" ± {s['sd']:.{digits}f}"
    return text


def _status(s: dict, final_seeds: Sequence[int]) -> str:
    if not s["sweep"] or not any(s["sweep"].values()):
        return "not started"
    if s["phase"] == "done":
        return f"done ({len(final_seeds)} seeds)"
    if s.get("chosen_lr") is None:
        return f"sweeping ({s['phase']})"
    seeds = ",".join(map(str, s["chosen_from_seeds"]))
    if s["phase"] == "final seeds":
        return f"rate chosen on sweep seeds {seeds}; final seeds to run"
    return f"provisional: rate chosen on seed {seeds} alone; the sweep's other seed to run"


def report(args) -> Optional[dict]:
    results = Path(args.results)
    summary = {"tasks": {}, "ladder": LADDER, "sweep_seeds": args.sweep_seeds, "final_seeds": args.seeds,
               "validation_fraction": VALIDATION_FRACTION, "patience": PATIENCE, "recipe": RECIPE}
    lines = ["# The converged comparison grid (issue 20)", "",
             "Every method tuned the same way per task: learning rate from a sweep on a validation split carved out of"
             f" the training examples ({VALIDATION_FRACTION:.0%}), on one ladder of rates for all"
             f" ({', '.join(f'{x:g}' for x in LADDER)}), starting at the three points around the method's default and"
             f" extended one point at an edge while the best is there (at most {MAX_EXTENSIONS}); early stopping on"
             f" the validation split (patience {PATIENCE} evaluations, one per epoch; best state restored) within the"
             f" same maximum budget; then seeds {args.seeds} at the chosen rate. Reported: the held-out eval metric"
             " (never used to choose anything), mean ± standard deviation over seeds. Written by"
             " `benchmarks/quality/grid.py --report` from the records in `results/converged/runs/`.", ""]
    hours_all, machines = 0.0, {}
    for task in TASKS:
        records = load_records(results, task.key)
        if not records:
            continue
        s = summarise(task, records, GRID_METHODS, args)
        wall = sum(r.get("wall_seconds", 0) for r in records.values())
        hours_all += wall / 3600
        for r in records.values():
            mach = r.get("machine", {})
            key = f"{mach.get('gpu') or mach.get('cpu') or '?'} ({mach.get('cpus')} CPUs, torch {mach.get('torch')}," \
                  f" {_threads(r)} threads per run)"
            machines[key] = machines.get(key, 0) + 1
        median = statistics.median(r.get("wall_seconds", 0) for r in records.values())
        left = sum(e["runs_left"] for e in s.values())
        summary["tasks"][task.key] = {"title": task.title, "metric": task.metric, "max_epochs": task.max_epochs,
                                      "runs": len(records), "wall_hours": wall / 3600, "median_run_seconds": median,
                                      "runs_left_at_least": left, "methods": s}
        digits = 1 if task.metric == "eval_accuracy" else 3
        unit = "accuracy %" if task.metric == "eval_accuracy" else "Pearson r"
        to_go = (f" At least {left} runs to go (about {left * median / 3600:.0f} h at that median, one run at a time;"
                 " more if a sweep extends at an edge)." if left else " Complete.")
        lines += [f"## `{task.key}`: {task.title}", "",
                  f"Maximum budget {task.max_epochs} epochs; {len(records)} runs, {wall / 3600:.1f} h wall"
                  f" (median {median / 60:.0f} min per run).{to_go} Best epoch: the evaluation whose state was"
                  " kept, per seed (at the maximum: the budget, not the patience, ended the run).", "",
                  f"| method | trainable params | chosen lr | eval {unit} (mean ± sd) | n seeds | best epoch | status |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for method in GRID_METHODS:
            e = s[method]
            params = _fmt_params(e["params"]) if e.get("params") else "–"
            lr = f"{e['chosen_lr']:g}" if e.get("chosen_lr") is not None else "–"
            epochs = ", ".join("–" if x is None else f"{x:g}" for x in e.get("best_epochs", [])) or "–"
            lines.append(f"| {LABELS.get(method, method)} | {params} | {lr} | {_cell(e, digits)} | {e.get('n', 0)} |"
                         f" {epochs} | {_status(e, args.seeds)} |")
        lines += ["", f"Sweep (validation {unit} of the best evaluation, per seed; the chosen rate in bold; "
                      "`div`: the loss turned non-finite):", "",
                  "| method | " + " | ".join(f"{x:g}" for x in LADDER) + " |", "|---|" + "---:|" * len(LADDER)]
        for method in GRID_METHODS:
            e = s[method]
            cells = []
            for x in LADDER:
                per = e["sweep"].get(f"{x:g}")
                if not per:
                    cells.append("")
                    continue
                text = "/".join("div" if v is None else f"{v:.{digits}f}" for v in per.values())
                cells.append(f"**{text}**" if e.get("chosen_lr") == x else text)
            lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(cells) + " |")
        lines.append("")
    missing = [t.key for t in TASKS if t.key not in summary["tasks"]]
    if summary["tasks"]:
        lines += [f"Machine: {'; '.join(f'{k}: {n} runs' for k, n in machines.items())}; {hours_all:.1f} h of"
                  " runs in all (wall, at low priority beside other work)."]
    if missing:
        lines += [f"Not started: {', '.join(f'`{k}`' for k in missing)} (no record yet)."]
    lines.append("")
    from generative import collate  # the generation and diffusion benchmarks' records, in the same layout

    generative_lines, summary["generative"] = collate()
    lines += generative_lines
    summary["machines"] = machines
    summary["wall_hours"] = hours_all
    out_md = results.parent / "quality_converged.md" if results.name == "converged" else results / "quality_converged.md"
    out_md.write_text("\n".join(lines) + "\n")
    out_md.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    _plot(summary, out_md.with_suffix(".png"))
    if getattr(args, "readme", False):
        update_readme(ROOT / "README.md", readme_section(summary))
    return summary


def _plot(summary: dict, path: Path) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return
    tasks = [(k, v) for k, v in summary["tasks"].items() if any(e.get("mean") is not None
                                                                for e in v["methods"].values())]
    if not tasks:
        return
    fig = Figure(figsize=(5.2 * len(tasks), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    colors = {"full": "black", "vectorfit": "tab:red", "vectorfit-noavf": "tab:orange", "vectorfit-sigma": "gold",
              "svfit": "tab:purple", "svft-banded": "tab:brown", "bitfit": "tab:gray", "lora-r1": "tab:cyan",
              "lora-r8": "tab:blue", "adalora": "tab:green"}
    for ax, (key, t) in zip(axes, tasks):
        seen: dict = {}
        for method, e in t["methods"].items():
            if e.get("mean") is None:
                continue
            nth = seen.get(round(e["params"], -2), 0)
            seen[round(e["params"], -2)] = nth + 1
            x = e["params"] * (1.15 ** nth)
            done = e.get("phase") == "done"  # hollow: provisional (rate or seeds not final yet)
            ax.errorbar([x], [e["mean"]], yerr=[e["sd"] or 0.0], fmt="o", capsize=3, color=colors.get(method, "k"),
                        markerfacecolor=None if done else "white",
                        label=f"{LABELS.get(method, method)} (n={e['n']}{'' if done else ', provisional'})")
            ax.scatter([x] * len(e["values"]), e["values"], s=9, marker="x", color=colors.get(method, "k"), alpha=0.5)
        ax.set_xscale("log")
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("trainable parameters (log)")
        ax.set_ylabel("accuracy (%)" if t["metric"] == "eval_accuracy" else "Pearson r")
        ax.set_title(t["title"] + "\nheld-out eval, mean ± sd over seeds; x: each seed; hollow: provisional",
                     fontsize=8)
        ax.grid(alpha=0.3)
        ax.margins(x=0.2, y=0.25)
        ax.legend(fontsize=6, loc="best")
    fig.savefig(path, dpi=130)


# ------------------------------------------------------------------------------------------------ README
START, END = "<!-- converged-grid:start -->", "<!-- converged-grid:end -->"


def readme_section(summary: dict) -> str:
    """The README's section, in words and numbers, from the report's summary only."""
    lines = ["### How the methods compare (converged grid)", "",
             "From `benchmarks/quality/results/quality_converged.md` (written by `benchmarks/quality/grid.py"
             " --report --readme` from the committed records; issue 20): each method's learning rate swept per task on"
             " a validation split of the training examples, early stopping on it, then 3 seeds; the numbers are the"
             " held-out eval split's.", ""]
    for key in [t.key for t in TASKS]:
        t = summary["tasks"].get(key)
        if t is None:
            fresh = sum(runs_left(plan_method(m, {}), {}) for m in GRID_METHODS)
            lines.append(f"- `{key}`: not started (at least {fresh} runs).")
            continue
        ms = t["methods"]
        unit = "%" if t["metric"] == "eval_accuracy" else ""
        digits = 1 if t["metric"] == "eval_accuracy" else 3
        name = "accuracy" if t["metric"] == "eval_accuracy" else "Pearson r"

        def show(m: str) -> str:
            e = ms.get(m, {})
            if e.get("mean") is None:
                run = sum(1 for per in (e.get("sweep") or {}).values() if per)
                if not run:
                    return f"{LABELS[m]}: not started"
                return f"{LABELS[m]}: no result yet (learning-rate sweep: {run} of at least 3 rates run)"
            sd = f" ± {e['sd']:.{digits}f}" if e.get("sd") is not None else ""
            part = f"{LABELS[m]} {e['mean']:.{digits}f}{sd}{unit} ({_fmt_params(e['params'])} params, lr {e['chosen_lr']:g}, n={e['n']}"
            return part + (")" if e["phase"] == "done" else ", provisional)")

        text = f"- `{key}` ({name}): " + "; ".join(show(m) for m in ("vectorfit", "lora-r8", "full", "vectorfit-noavf"))
        vf, lo, fu, no = (ms.get(m, {}) for m in ("vectorfit", "lora-r8", "full", "vectorfit-noavf"))
        facts = []
        points = " points" if unit else ""

        def caveat(*entries) -> str:
            return "" if all(e.get("phase") == "done" for e in entries) else " (provisional)"

        if vf.get("mean") is not None and lo.get("mean") is not None:
            d = vf["mean"] - lo["mean"]
            facts.append(f"VectorFit (AVF) is {abs(d):.{digits}f}{points} {'above' if d >= 0 else 'below'} LoRA r=8"
                         f" with {lo['params'] / vf['params']:.1f}x fewer trainable parameters{caveat(vf, lo)}")
        if vf.get("mean") is not None and fu.get("mean") is not None:
            d = vf["mean"] - fu["mean"]
            facts.append(f"VectorFit (AVF) is {abs(d):.{digits}f}{points} {'above' if d >= 0 else 'below'} full"
                         f" fine-tuning{caveat(vf, fu)}")
        if vf.get("mean") is not None and no.get("mean") is not None:
            d = vf["mean"] - no["mean"]
            facts.append(f"AVF adds {d:+.{digits}f}{points} over no AVF{caveat(vf, no)}")
        if facts:
            text += ". " + "; ".join(facts)
        pending = [LABELS[m] for m, e in ms.items() if e["phase"] != "done"]
        if pending:
            text += (f". Still missing or provisional: {', '.join(pending)} (at least {t['runs_left_at_least']} runs"
                     f" to go, about {t['runs_left_at_least'] * t['median_run_seconds'] / 3600:.0f} h here)")
        lines.append(text + ".")
    if any(e.get("mean") is not None for t in summary["tasks"].values() for e in t["methods"].values()):
        lines += ["", "![eval metric against trainable parameters, converged grid]"
                      "(benchmarks/quality/results/quality_converged.png)"]
    lines += _generative_lines(summary.get("generative") or {})
    lines += ["", "Missing tasks and cells are missing, not estimated; the grid resumes (`nice -n 15 python"
                  " benchmarks/quality/grid.py --threads 1`) and the section is rewritten from the records."]
    return "\n".join(lines)


def _generative_lines(generative: dict) -> list[str]:
    """One line per generative table (collated, not tuned per method): VectorFit (AVF) against LoRA r=8, full
    fine-tuning and VectorFit without AVF, from the rows of :func:`generative.collate`."""
    out = []
    metric_of = {"generation/causal-lm": ([("eval_perplexity", "perplexity")], 2),
                 "generation/seq2seq": ([("eval_rougeL", "ROUGE-L")], 2),
                 "generation/question-answering": ([("eval_exact_match", "EM"), ("eval_f1", "F1")], 2),
                 "diffusion": ([("fidelity_%", "subject fidelity %"), ("prior_%", "prior preservation %")], 1)}
    for key, rows in generative.items():
        if key not in metric_of:
            continue
        metrics, digits = metric_of[key]
        by = {r["method"]: r for r in rows}
        parts = []
        for method in ("vectorfit", "lora-r8", "full", "vectorfit-no-avf"):
            r = by.get(method)
            if r is None or not any(r.get(m) for m, _ in metrics):
                continue
            shown = []
            for metric, name in metrics:
                st = r.get(metric)
                if st:
                    sd = f" ± {st['sd']:.{digits}f}" if st.get("sd") is not None else ""
                    shown.append(f"{name} {st['mean']:.{digits}f}{sd}")
            n = max(r[m]["n"] for m, _ in metrics if r.get(m))
            parts.append(f"{r['label']} {', '.join(shown)} ({r['params']:,} params, n={n})")
        if parts:
            out.append(f"- {key} (collated from that benchmark's records: its own budget and learning rates, not"
                       f" swept per method): " + "; ".join(parts) + ".")
    if out:
        out.insert(0, "")
        out.insert(1, "The generative benchmarks in the same layout (`quality_converged.md`, last section):")
    return out


def update_readme(path: Path, section: str) -> None:
    """Replace the text between the markers (or append the section with its markers)."""
    text = path.read_text()
    block = f"{START}\n{section}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(HERE / "results" / "converged"), help="records folder")
    parser.add_argument("--tasks", default=",".join(t.key for t in TASKS), help="comma-separated, in this order")
    parser.add_argument("--methods", default=",".join(GRID_METHODS), help="comma-separated methods")
    parser.add_argument("--seeds", default=",".join(map(str, FINAL_SEEDS)), help="final seeds at the chosen rate")
    parser.add_argument("--sweep-seeds", default=",".join(map(str, SWEEP_SEEDS)), help="seeds of the sweep")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: torch's)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--max-hours", type=float, help="start no new run after this many hours")
    parser.add_argument("--plan", action="store_true", help="print the next runs of each task; train nothing")
    parser.add_argument("--report", action="store_true", help="only write the tables and the plot")
    parser.add_argument("--readme", action="store_true", help="also rewrite the README's converged-grid section")
    args = parser.parse_args(argv)
    try:
        args.tasks = [TASK_BY_KEY[k] for k in args.tasks.split(",")]
    except KeyError as exc:
        parser.error(f"unknown task {exc}; known: {', '.join(TASK_BY_KEY)}")
    args.methods = args.methods.split(",")
    unknown = [m for m in args.methods if m not in GRID_METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(GRID_METHODS)}")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.sweep_seeds = [int(s) for s in args.sweep_seeds.split(",")]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.plan:
        results = Path(args.results)
        for task in args.tasks:
            plans = plans_for(task, load_records(results, task.key), args.methods, args)
            todo = next_runs(plans)
            print(f"{task.key}: next {len(todo)} runs: " + ", ".join(f"{m} lr={lr:g} s{s}" for m, lr, s in todo[:12]))
            for p in plans:
                print(f"  {p.method}: {p.phase}; points {[f'{x:g}' for x in p.points]}; chosen "
                      f"{p.chosen if p.chosen is None else f'{p.chosen:g}'}")
        return 0
    if not args.report:
        run_grid(args)
    summary = report(args)
    md = Path(args.results).parent / "quality_converged.md"
    if summary and md.is_file():
        print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
