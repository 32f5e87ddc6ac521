#!/usr/bin/env python
"""The stall study (issue 13): how often VectorFit ends at the majority class, and which remedy prevents it.

Ten seeds of the quick budget (``--max-train 2000 --max-eval 500 --epochs 2 --max-length 48``, batch 32, linear
decay, no warm-up) on Rotten Tomatoes and on the 2016 debates (party, 3 classes; 898 train, 224 eval), for
today's defaults and for each candidate remedy. A run *stalls* when its eval accuracy is at or below the majority
class's share (``metrics.json``'s ``stalled``). Every run is one ``vectorfit train`` subprocess (run.py's
``run_cell``); its record is ``results/stall/runs/<task>__<candidate>__s<seed>.json`` and finished records are
skipped, so the study resumes where it stopped. The table is ``results/stall/stall.md``.

Usage:
    nice -n 10 python benchmarks/quality/stall_study.py                     # everything, in priority order
    nice -n 10 python benchmarks/quality/stall_study.py --candidates default,bias-lr
    python benchmarks/quality/stall_study.py --report                       # the table only
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as grid  # noqa: E402  (benchmarks/quality/run.py: run_cell, Task, machine)

RESULTS = HERE / "results" / "stall"
SEEDS = list(range(10))
# no --warmup-ratio here: the budget's options come after a candidate's on the command line and would override
# the warm-up candidate's (the default is no warm-up)
_BUDGET = ["--batch-size", "32", "--eval-batch-size", "128", "--scheduler", "linear",
           "--max-train", "2000", "--max-eval", "500", "--epochs", "2", "--max-length", "48"]
TASKS = [grid.Task("rt", "minilm", "rotten-tomatoes", _BUDGET, title="Rotten Tomatoes (2,000 train, 500 eval)"),
         grid.Task("debates", "minilm", "debates-2016", _BUDGET, title="2016 debates, party (898 train, 224 eval)")]

#: candidate -> (what it is, options of `vectorfit train`, learning rate); in the order they are run.
#: The paper's parametrization and today's learning rate are named explicitly, so the rows keep their meaning
#: whatever the defaults become.
_PAPER = ["--method", "vectorfit", "--sigma-parametrization", "absolute", "--lr-bias", "1e-2"]
CANDIDATES: dict[str, tuple[str, list[str], float]] = {
    "default": ("the defaults before this study: s and b at 1e-2, absolute s", _PAPER, 1e-2),
    "bias-lr": ("biases at 1e-3, s and head at 1e-2", [*_PAPER[:-2], "--lr-bias", "1e-3"], 1e-2),
    "bias-lr3e-3": ("biases at 3e-3, s and head at 1e-2", [*_PAPER[:-2], "--lr-bias", "3e-3"], 1e-2),
    "relative": ("relative s (s = s0 (1 + t)), all at 1e-2",
                 ["--method", "vectorfit", "--sigma-parametrization", "relative", "--lr-bias", "1e-2"], 1e-2),
    "relative+bias-lr": ("relative s, biases at 1e-3, s and head at 1e-2",
                         ["--method", "vectorfit", "--sigma-parametrization", "relative", "--lr-bias", "1e-3"], 1e-2),
    "lr3e-3": ("everything at 3e-3", _PAPER[:-2] + ["--lr-bias", "3e-3"], 3e-3),
    "warmup": ("10% linear warm-up", [*_PAPER, "--warmup-ratio", "0.1"], 1e-2),
    "clip-vector": ("each vector's gradient clipped to norm 0.01", [*_PAPER, "--max-grad-norm-per-vector", "0.01"],
                    1e-2),
    "meanpool": ("a mean-pooling head (--pooling mean), s and b at 1e-2", [*_PAPER, "--pooling", "mean"], 1e-2),
    "no-bias": ("singular values only (VectorFit(Σ)), for reference", [*_PAPER[:-2], "--no-bias"], 1e-2),
    "meanpool+bias-lr3e-3": ("a mean-pooling head with today's default rates (biases at 3e-3)",
                             ["--method", "vectorfit", "--sigma-parametrization", "absolute", "--lr-bias", "3e-3",
                              "--pooling", "mean"], 1e-2),
}


def cell(task: grid.Task, candidate: str, seed: int) -> Path:
    return RESULTS / "runs" / f"{task.key}__{candidate}__s{seed}.json"


def run_all(names: list[str], seeds: list[int], args) -> None:
    for name in names:
        _, options, lr = CANDIDATES[name]
        grid.METHODS[f"stall-{name}"] = (options, "stall")  # every option explicit: no recipe tag
        for task in TASKS:
            for seed in seeds:
                out = cell(task, name, seed)
                if out.is_file():
                    continue
                print(f"{out.stem} ...", flush=True)
                record = grid.run_cell(task, f"stall-{name}", seed, lr, out, RESULTS / "tmp", args)
                if record:
                    m = record["metrics"]
                    print(f"  accuracy {m.get('eval_accuracy'):.4f} stalled={m.get('stalled')}"
                          f" train {m['train_seconds']:.0f}s", flush=True)
            report()


def report() -> None:
    lines = ["# The stall study", "",
             "MiniLM, VectorFit with AVF, the quick budget (2,000 training examples at most, 500 eval at most, 2 epochs,",
             "48 tokens, batch 32, linear decay), 10 seeds. *Stalled*: the eval accuracy is at or below the majority",
             "class's share. Produced by `benchmarks/quality/stall_study.py`.", ""]
    header = "| candidate | what | " + " | ".join(f"{t.key}: stalled | {t.key}: accuracy % (mean ± sd) | {t.key}: "
                                                  f"without stalls" for t in TASKS) + " |"
    lines += [header, "|" + "---|" * (2 + 3 * len(TASKS))]
    for name, (what, _, _) in CANDIDATES.items():
        cells = []
        any_run = False
        for task in TASKS:
            recs = [json.loads(p.read_text())["metrics"] for p in sorted((RESULTS / "runs").glob(
                f"{task.key}__{name}__s*.json"))] if (RESULTS / "runs").is_dir() else []
            if not recs:
                cells += ["", "", ""]
                continue
            any_run = True
            acc = [100 * r["eval_accuracy"] for r in recs]
            stalled = sum(bool(r.get("stalled")) for r in recs)
            ok = [a for a, r in zip(acc, recs) if not r.get("stalled")]
            sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
            cells += [f"{stalled}/{len(recs)}", f"{statistics.mean(acc):.1f} ± {sd:.1f}",
                      f"{statistics.mean(ok):.1f}" if ok else "–"]
        if any_run:
            lines.append(f"| `{name}` | {what} | " + " | ".join(cells) + " |")
    lines += ["", "Per seed (accuracy %, * = stalled):", ""]
    for task in TASKS:
        for name in CANDIDATES:
            recs = {int(p.stem.rsplit("__s", 1)[1]): json.loads(p.read_text())["metrics"]
                    for p in sorted((RESULTS / "runs").glob(f"{task.key}__{name}__s*.json"))} \
                if (RESULTS / "runs").is_dir() else {}
            if recs:
                shown = ", ".join(f"{s}: {100 * m['eval_accuracy']:.1f}{'*' if m.get('stalled') else ''}"
                                  for s, m in sorted(recs.items()))
                lines.append(f"- {task.key} `{name}`: {shown}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "stall.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if not args.report:
        names = [n.strip() for n in args.candidates.split(",") if n.strip()]
        unknown = [n for n in names if n not in CANDIDATES]
        if unknown:
            ap.error(f"unknown candidates {unknown}; choose among {', '.join(CANDIDATES)}")
        run_all(names, [int(s) for s in args.seeds.split(",")], args)
    report()
    print((RESULTS / "stall.md").read_text())


if __name__ == "__main__":
    main()
