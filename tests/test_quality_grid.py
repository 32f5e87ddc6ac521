"""The converged grid's pure logic (benchmarks/quality/grid.py, generative.py): the sweep and its extension rule,
the order of the runs, the records and resuming, the table and the README section. No training: records are
written by hand."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from vectorfit_test_utils import REPO

QUALITY = REPO / "benchmarks" / "quality"


def _load(name: str):
    sys.path.insert(0, str(QUALITY))
    spec = importlib.util.spec_from_file_location(f"quality_{name}", QUALITY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


grid = _load("grid")
LADDER = grid.LADDER


def _scores(curve: dict, seeds=(0,)) -> dict:
    """Scores of every ladder point of ``curve`` (lr -> validation metric) for ``seeds``; loss = 1 - metric."""
    return {(lr, s): (v, -(1 - v)) for lr, v in curve.items() for s in seeds}


def test_start_points_are_the_three_ladder_points_around_the_default():
    assert grid.start_points(1e-2) == [3e-3, 1e-2, 3e-2]
    assert grid.start_points(2e-4) == [1e-4, 3e-4, 1e-3]  # 2e-4 is nearer 3e-4 than 1e-4 in log scale
    assert grid.start_points(1e-6) == LADDER[:3] and grid.start_points(1.0) == LADDER[-3:]  # kept inside


def test_sweep_asks_for_the_start_points_first():
    points, missing, best = grid.sweep([1e-3, 3e-3, 1e-2], {}, [0])
    assert points == [1e-3, 3e-3, 1e-2] and missing == [(1e-3, 0), (3e-3, 0), (1e-2, 0)] and best is None


def test_sweep_extends_at_the_edge_until_the_best_is_inside():
    start = [1e-3, 3e-3, 1e-2]
    curve = {1e-3: 0.6, 3e-3: 0.7, 1e-2: 0.8}  # still rising at the top edge
    points, missing, best = grid.sweep(start, _scores(curve), [0])
    assert points == start + [3e-2] and missing == [(3e-2, 0)] and best is None
    curve[3e-2] = 0.75  # falls again: 1e-2 is inside
    points, missing, best = grid.sweep(start, _scores(curve), [0])
    assert missing == [] and best == 1e-2 and points == start + [3e-2]
    # the bottom edge, by the same rule
    low = {1e-3: 0.8, 3e-3: 0.7, 1e-2: 0.6, 3e-4: 0.85, 1e-4: 0.7}
    points, missing, best = grid.sweep(start, _scores(low), [0])
    assert points == [1e-4, 3e-4] + start and best == 3e-4


def test_sweep_stops_after_the_extensions_and_at_the_ladder_end():
    rising = {lr: i / 10 for i, lr in enumerate(LADDER)}
    points, missing, best = grid.sweep([1e-3, 3e-3, 1e-2], _scores(rising), [0], max_extensions=2)
    assert points == [1e-3, 3e-3, 1e-2, 3e-2, 1e-1] and missing == [] and best == 1e-1  # at most 2 more
    points, missing, best = grid.sweep(LADDER[-3:], _scores(rising), [0])
    assert points == LADDER[-3:] and best == LADDER[-1]  # nothing beyond the ladder


def test_sweep_scores_are_means_over_seeds_and_losses_break_ties():
    start = [1e-3, 3e-3, 1e-2]
    scores = {(1e-3, 0): (0.5, -1.0), (1e-3, 1): (0.5, -1.0),
              (3e-3, 0): (0.9, -0.5), (3e-3, 1): (0.5, -1.0),  # mean 0.7, a lucky seed
              (1e-2, 0): (0.7, -0.4), (1e-2, 1): (0.7, -0.4)}  # mean 0.7, lower loss
    assert grid.sweep(start, scores, [0])[2] == 3e-3  # seed 0 alone
    _, missing, _ = grid.sweep(start, scores, [0, 1])
    assert missing == [(3e-2, 0), (3e-2, 1)]  # both seeds: the tie goes to 1e-2, an edge: extend
    diverged = {**scores, (3e-2, 0): (-math.inf, -math.inf), (3e-2, 1): (-math.inf, -math.inf)}
    assert grid.sweep(start, diverged, [0, 1])[2] == 1e-2  # a diverged point scores worst


def test_plan_goes_seed_0_sweep_then_second_seed_then_final_seeds():
    flat = {1e-3: 0.6, 3e-3: 0.8, 1e-2: 0.7}
    plan = grid.plan_method("lora-r8", _scores(flat, seeds=(0,)))
    assert plan.phase == "sweep seeds 0,1" and plan.chosen == 3e-3 and plan.chosen_from == [0]
    assert plan.missing == [(1e-3, 1), (3e-3, 1), (1e-2, 1)]
    plan = grid.plan_method("lora-r8", _scores(flat, seeds=(0, 1)))
    assert plan.phase == "final seeds" and plan.missing == [(3e-3, 2)] and plan.chosen_from == [0, 1]
    plan = grid.plan_method("lora-r8", {**_scores(flat, seeds=(0, 1)), (3e-3, 2): (0.8, -0.2)})
    assert plan.phase == "done" and plan.missing == []


def test_next_runs_take_every_methods_earliest_phase_first():
    done0 = _scores({1e-3: 0.6, 3e-3: 0.8, 1e-2: 0.7})
    plans = [grid.plan_method("lora-r8", done0), grid.plan_method("full", {})]
    runs = grid.next_runs(plans)
    assert runs and all(m == "full" and s == 0 for m, _, s in runs)  # full's seed-0 sweep before LoRA's seed 1
    assert grid.next_runs([grid.plan_method("lora-r8", {**_scores({1e-3: .6, 3e-3: .8, 1e-2: .7}, (0, 1)),
                                                        (3e-3, 2): (.8, -.2)})]) == []


def test_runs_left_counts_the_sweep_so_far_and_the_final_seeds():
    assert grid.runs_left(grid.plan_method("lora-r8", {}), {}) == 7  # 3 rates x seeds 0, 1, then seed 2
    rising = _scores({1e-3: 0.6, 3e-3: 0.7, 1e-2: 0.8})  # seed 0 at an edge: one more rate for both seeds
    assert grid.runs_left(grid.plan_method("lora-r8", rising), rising) == 2 * 4 - 3 + 1
    flat = {**_scores({1e-3: .6, 3e-3: .8, 1e-2: .7}, (0, 1))}
    assert grid.runs_left(grid.plan_method("lora-r8", flat), flat) == 1
    done = {**flat, (3e-3, 2): (.8, -.2)}
    assert grid.runs_left(grid.plan_method("lora-r8", done), done) == 0


def _record(results: Path, task: str, method: str, lr: float, seed: int, val: float, ev: float, *,
            params: int = 1000, diverged: bool = False, recipe: int = None) -> None:
    path = grid.record_path(results, task, method, lr, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = None if diverged else {
        "eval_accuracy": ev, "best_validation_accuracy": val, "best_validation_loss": 1 - val,
        "trainable_params": params, "total_params": 10 ** 6, "best_step": 10, "train_steps": 30, "stalled": False,
        "validation_history": [{"step": 10, "epoch": 1.0}, {"step": 20, "epoch": 2.0}]}
    path.write_text(json.dumps({"task": task, "method": method, "lr": lr, "seed": seed, "diverged": diverged,
                                "recipe": grid.RECIPE if recipe is None else recipe, "metrics": metrics,
                                "wall_seconds": 60.0, "machine": {"cpu": "test CPU", "cpus": 2}}))


def test_records_resume_and_drive_the_plan(tmp_path):
    results = tmp_path / "converged"
    for lr, val in ((1e-3, 0.6), (3e-3, 0.8), (1e-2, 0.7)):
        _record(results, "debates", "lora-r8", lr, 0, val, val - 0.05, params=8000)
    _record(results, "debates", "lora-r8", 3e-2, 0, 0.99, 0.99, recipe=grid.RECIPE + 1)  # another recipe: ignored
    grid.record_path(results, "debates", "lora-r8", 1e-3, 1).with_suffix(".failed").write_text("crash")
    records = grid.load_records(results, "debates")
    assert set(records) == {("lora-r8", 1e-3, 0), ("lora-r8", 3e-3, 0), ("lora-r8", 1e-2, 0)}
    args = grid.parse_args(["--results", str(results), "--tasks", "debates", "--methods", "lora-r8,full"])
    plans = grid.plans_for(grid.TASK_BY_KEY["debates"], records, args.methods, args)
    assert grid.next_runs(plans)[0] == ("full", 1e-4, 0)  # full's seed-0 sweep before anything else
    _record(results, "debates", "full", 1e-4, 0, 0.5, 0.5, diverged=True)
    assert grid.scores_of(grid.load_records(results, "debates"), "full", "eval_accuracy")[(1e-4, 0)][0] == -math.inf


def test_report_table_json_and_readme_section(tmp_path, monkeypatch):
    results = tmp_path / "converged"
    for method, params, base in (("vectorfit", 1000, 0.70), ("lora-r8", 9000, 0.68), ("full", 10 ** 6, 0.72),
                                 ("vectorfit-noavf", 1000, 0.69)):
        for lr, bump in ((3e-3, 0.0), (1e-2, 0.05), (3e-2, 0.01), (1e-3, 0.0), (1e-4, 0.0), (3e-4, 0.05)):
            for seed in (0, 1, 2):
                _record(results, "debates", method, lr, seed, base + bump, base + bump + seed / 100, params=params)
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\ntext\n")
    monkeypatch.setattr(grid, "ROOT", tmp_path)  # the README written is the temporary one
    args = grid.parse_args(["--results", str(results), "--report", "--readme"])
    summary = grid.report(args)
    vf = summary["tasks"]["debates"]["methods"]["vectorfit"]
    assert vf["chosen_lr"] == 1e-2 and vf["phase"] == "done" and vf["n"] == 3
    assert vf["mean"] == pytest.approx(76.0) and vf["sd"] == pytest.approx(1.0) and vf["params"] == 1000
    assert summary["tasks"]["debates"]["methods"]["full"]["chosen_lr"] == 3e-4
    md = (tmp_path / "quality_converged.md").read_text()
    assert "| VectorFit | 1.0K | 0.01 | 76.0 ± 1.0 | 3 | 1, 1, 1 | done (3 seeds) |" in md
    assert "**75.0/75.0**" in md  # the sweep: both sweep seeds at the chosen rate
    assert json.loads((tmp_path / "quality_converged.json").read_text())["tasks"]["debates"]["runs"] == 72
    text = readme.read_text()
    assert text.startswith("# Title") and text.count(grid.START) == 1
    assert "VectorFit (AVF) is 2.0 points above LoRA r=8 with 9.0x fewer trainable parameters;" in text
    assert "AVF adds +1.0 points over no AVF" in text and "`rt`: not started (at least 70 runs)." in text
    assert summary["tasks"]["debates"]["runs_left_at_least"] == 42  # 6 methods not started: 3 rates x 2 seeds + 1
    assert "At least 42 runs to go (about 1 h at that median" in md
    grid.report(args)  # rewritten in place, not appended
    assert readme.read_text().count(grid.START) == 1


def test_generative_tables_collate_the_records_as_they_are(tmp_path):
    generative = _load("generative")
    gen, diff = tmp_path / "gen", tmp_path / "diff"
    gen.mkdir()
    diff.mkdir()
    (gen / "base.json").write_text(json.dumps({"method": "base", "metrics": {"eval_perplexity": 250.0}}))
    for seed, ppl in ((0, 100.0), (1, 102.0)):
        (gen / f"lora-r8__s{seed}.json").write_text(json.dumps({"method": "lora-r8", "seed": seed, "metrics": {
            "task": "causal-lm", "eval_perplexity": ppl, "trainable_params": 98304}}))
    (diff / "vectorfit__s0.json").write_text(json.dumps({"method": "vectorfit", "seed": 0, "trainable_params": 6016,
                                                         "fidelity_%": 42.0, "prior_%": 88.9}))
    (gen / "question-answering").mkdir()  # the reading tasks' records sit in a folder per task
    for seed, em, f1 in ((0, 60.0, 70.0), (1, 64.0, 74.0)):
        (gen / "question-answering" / f"full__s{seed}.json").write_text(json.dumps({
            "method": "full", "seed": seed, "task": "question-answering",
            "metrics": {"eval_exact_match": em, "eval_f1": f1, "trainable_params": 22566146}}))
    lines, summary = generative.collate(gen, diff)
    text = "\n".join(lines)
    assert "| full fine-tuning | 22,566,146 | 62.00 ± 2.83 | 72.00 ± 2.83 | 0,1 |" in text
    assert "No ROUGE or EM/F1 records" not in text
    assert "| base model, not adapted | 0 | 250.00 | – |" in text
    assert "| LoRA r=8 | 98,304 | 101.00 ± 1.41 | 0,1 |" in text
    assert "| VectorFit (AVF) | 6,016 | 42.0 | 88.9 | 0 |" in text
    assert [r["method"] for r in summary["generation/causal-lm"]] == ["base", "lora-r8"]
    assert generative.collate(tmp_path / "none", tmp_path / "none") == ([], {})
