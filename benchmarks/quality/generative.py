#!/usr/bin/env python
"""The generative benchmarks' tables in the converged grid's layout (issue 20), from their committed records.

Reads ``benchmarks/generation/results/runs/*.json`` (one ``vectorfit train`` run each: perplexity for the
causal-lm task; ROUGE for seq2seq and exact match / F1 for question answering when such records exist) and
``benchmarks/diffusion/results/runs/*.json`` (subject fidelity and prior preservation of the DreamBooth-style
runs), and lays each out as the classification grid does: method, trainable parameters, mean ± standard deviation
over seeds, the seeds. Nothing is run again; the numbers are the records'. The budgets and learning rates are the
benchmarks' own (see their READMEs): these tables are *not* tuned per method as the classification grid is.

Example::

    python benchmarks/quality/generative.py          # prints the tables
    python benchmarks/quality/grid.py --report       # writes them into results/quality_converged.md too
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
GENERATION = ROOT / "benchmarks" / "generation" / "results" / "runs"
DIFFUSION = ROOT / "benchmarks" / "diffusion" / "results" / "runs"

NAMES = {"base": "base model, not adapted", "vectorfit": "VectorFit (AVF)", "vectorfit-no-avf": "VectorFit, no AVF",
         "vectorfit-noavf": "VectorFit, no AVF", "lora-r1": "LoRA r=1", "lora-r8": "LoRA r=8", "bitfit": "BitFit",
         "full": "full fine-tuning", "svft": "SVFT", "svfit": "SVFit", "adalora": "AdaLoRA"}
ORDER = ["base", "vectorfit", "vectorfit-no-avf", "vectorfit-noavf", "lora-r1", "lora-r8", "adalora", "svft", "svfit",
         "bitfit", "full"]
#: per task of the generation benchmark: (metric key in metrics.json, shown as, higher is better)
GENERATION_METRICS = {"causal-lm": [("eval_perplexity", "eval perplexity", False)],
                      "seq2seq": [("eval_rougeL", "eval ROUGE-L", True), ("eval_rouge1", "eval ROUGE-1", True),
                                  ("eval_rouge2", "eval ROUGE-2", True)],
                      "question-answering": [("eval_exact_match", "eval EM", True), ("eval_f1", "eval F1", True)]}
DIFFUSION_METRICS = [("fidelity_%", "subject fidelity %", True), ("prior_%", "prior preservation %", True)]


def _stats(values: list) -> dict:
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": values}


def _fmt(s: Optional[dict], digits: int = 2) -> str:
    if not s:
        return "–"
    return f"{s['mean']:.{digits}f}" + (f" ± {s['sd']:.{digits}f}" if s["sd"] is not None else "")


def _rows(records: list[dict], metrics: list, get) -> list[dict]:
    """One row per method: trainable parameters, each metric's stats over the seeds, the seeds."""
    by_method: dict = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r)
    rows = []
    for method in sorted(by_method, key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m)):
        rs = by_method[method]
        row = {"method": method, "label": NAMES.get(method, method),
               "params": get(rs[0], "trainable_params") or 0,
               "seeds": sorted(r.get("seed") for r in rs if r.get("seed") is not None and method != "base")}
        for key, _, _ in metrics:
            values = [get(r, key) for r in rs if get(r, key) is not None]
            row[key] = _stats(values) if values else None
        rows.append(row)
    return rows


def _table(title: str, rows: list[dict], metrics: list, digits: int) -> list[str]:
    head = "| method | trainable params | " + " | ".join(name for _, name, _ in metrics) + " | seeds |"
    lines = [title, "", head, "|---|---:|" + "---:|" * len(metrics) + "---:|"]
    for r in rows:
        cells = [_fmt(r[key], digits) for key, _, _ in metrics]
        seeds = ",".join(map(str, r["seeds"])) if r["seeds"] else "–"
        lines.append(f"| {r['label']} | {r['params']:,} | " + " | ".join(cells) + f" | {seeds} |")
    return lines + [""]


def collate(generation: Path = GENERATION, diffusion: Path = DIFFUSION) -> tuple[list[str], dict]:
    """``(markdown lines, summary)`` of both benchmarks' records (empty when there are none)."""
    lines, summary = [], {}
    gen = [json.loads(p.read_text()) for p in sorted(generation.rglob("*.json"))] if generation.is_dir() else []
    by_task: dict = {}
    for r in gen:
        metrics = r.get("metrics") or {}
        task = r.get("task") or metrics.get("task") or ("causal-lm" if "eval_perplexity" in metrics else None)
        if task in GENERATION_METRICS:
            by_task.setdefault(task, []).append(r)
    for task, records in by_task.items():
        if any(r["method"] == "base" for r in records):  # the base row: its metrics, no trainable parameters
            for r in records:
                if r["method"] == "base":
                    r.setdefault("metrics", {})["trainable_params"] = 0
        metrics = [m for m in GENERATION_METRICS[task] if any(m[0] in (r.get("metrics") or {}) for r in records)]
        rows = _rows(records, metrics, lambda r, k: (r.get("metrics") or {}).get(k))
        summary[f"generation/{task}"] = rows
        lines += _table(f"### Generation benchmark, `{task}` (benchmarks/generation; its own budget, each"
                        " method's default learning rate)", rows, metrics, 2)
    diff = [json.loads(p.read_text()) for p in sorted(diffusion.glob("*.json"))] if diffusion.is_dir() else []
    if diff:
        rows = _rows(diff, DIFFUSION_METRICS, lambda r, k: r.get(k))
        summary["diffusion"] = rows
        lines += _table("### Diffusion benchmark (benchmarks/diffusion; subject fidelity and prior preservation;"
                        " its own budget)", rows, DIFFUSION_METRICS, 1)
    if lines:
        lines = ["## Generative benchmarks, collated from their records", "",
                 "The same layout as above, from the committed records of the generation and diffusion benchmarks"
                 " (not re-run; their budgets and learning rates are the benchmarks' own, not swept per method). A method with"
                 " fewer seeds than 3 shows them."
                 + ("" if any(t != "causal-lm" for t in by_task) else " No ROUGE or EM/F1 records exist yet: the"
                    " generation benchmark has run the causal-lm task only."), ""] + lines
    return lines, summary


if __name__ == "__main__":
    text, _ = collate()
    print("\n".join(text) if text else "no records")
    sys.exit(0)
