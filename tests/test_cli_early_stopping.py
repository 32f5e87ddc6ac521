"""``vectorfit train --validation-fraction F --early-stopping P``: a validation split carved out of the training
examples, early stopping on it with the best state put back, the final metrics on the eval split; on a tiny random
BERT with a tiny CSV and a tiny random EfficientNet with a pixel CSV (no network, seconds)."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest
import torch

from vectorfit import main
from vectorfit_test_utils import write_pixels  # noqa: E402
from vectorfit.early_stopping import EarlyStopping, greater_is_better, validation_indices

WORDS = {"pos": ["good", "great", "fun"], "neg": ["bad", "awful", "dull"]}
FILLER = ["the", "a", "movie", "film", "was", "plot"]


# ------------------------------------------------------------------------------------------------ pure logic
def test_validation_indices_are_fixed_disjoint_and_complete():
    train, held = validation_indices(50, 0.2, seed=3)
    assert len(held) == 10 and sorted(train + held) == list(range(50)) and not set(train) & set(held)
    assert (train, held) == validation_indices(50, 0.2, seed=3)  # the same seed: the same split
    assert held != validation_indices(50, 0.2, seed=4)[1]
    assert len(validation_indices(3, 0.01)[1]) == 1 and len(validation_indices(3, 0.99)[0]) == 1
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError):
            validation_indices(10, bad)


def test_early_stopping_keeps_and_restores_the_best_state():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    net[0].bias.requires_grad_(False)  # what does not train is neither kept nor restored
    stop = EarlyStopping(net, metric="eval_accuracy", patience=2)
    seen = []
    for step, acc in ((1, 0.5), (2, 0.8), (3, 0.8), (4, 0.7)):
        with torch.no_grad():
            net[0].weight.fill_(step)
            net[1].running_mean.fill_(step)
        seen.append(stop.update(step, {"eval_accuracy": acc, "eval_loss": 1.0 / step, "eval_runtime": 0.1}))
    assert seen == [False, False, False, True]  # a tie is no improvement
    summary = stop.finish()
    assert float(net[0].weight.detach()[0, 0]) == 2.0 and float(net[1].running_mean[0]) == 2.0
    assert summary["best_step"] == 2 and summary["best_validation_accuracy"] == 0.8
    assert summary["stopped_early"] and summary["stopped_at_step"] == 4 and summary["restored_best"]
    assert summary["validation_history"][1] == {"step": 2, "validation_accuracy": 0.8, "validation_loss": 0.5}


def test_early_stopping_direction_and_no_patience():
    assert greater_is_better("eval_pearson") and not greater_is_better("eval_loss")
    assert not greater_is_better("eval_perplexity")
    net = torch.nn.Linear(1, 1)
    stop = EarlyStopping(net, metric="eval_loss")
    assert [stop.update(s, {"eval_loss": v}) for s, v in enumerate((3.0, 2.0, float("nan"), 2.5))] == [False] * 4
    assert stop.best_step == 1 and not stop.finish()["restored_best"]  # without patience: the curve only


# ------------------------------------------------------------------------------------------------ command checks
def test_options_are_checked_before_anything_runs():
    from vectorfit.commands import _check_validation
    from vectorfit.errors import CLIError

    text = argparse.Namespace(name="text-classification", validation=True)
    lm = argparse.Namespace(name="causal-lm", validation=False)

    def check(task, **options):
        args = argparse.Namespace(**{"validation_fraction": None, "early_stopping": None, "resume": None,
                                     **options})
        _check_validation(args, task)

    check(text, validation_fraction=0.2, early_stopping=3)
    check(text)
    check(lm)
    for task, options, needle in (
            (text, {"validation_fraction": 1.0}, "strictly between 0 and 1"),
            (text, {"early_stopping": 3}, "--validation-fraction"),
            (lm, {"validation_fraction": 0.2}, "causal-lm task does not take"),
            (text, {"validation_fraction": 0.2, "early_stopping": 2, "resume": "last"}, "cannot be resumed")):
        with pytest.raises(CLIError, match=needle):
            check(task, **options)


def test_usage_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "-m", "minilm", "-d", "debates-2016", "-o", str(tmp_path / "o"), "--early-stopping", "0"]) == 2
    assert "--early-stopping: expected a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------ text
@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory):
    pytest.importorskip("transformers")
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    d = tmp_path_factory.mktemp("es-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS["pos"] + WORDS["neg"] + FILLER
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(d / "vocab.txt")).save_pretrained(d)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    BertForSequenceClassification(config).save_pretrained(d)
    rng = random.Random(0)
    data = d / "reviews.csv"
    rows = ["text,label"]
    for i in range(50):
        label = "pos" if i % 2 else "neg"
        rows.append(" ".join(rng.sample(FILLER, 2) + [rng.choice(WORDS[label])]) + f",{label}")
    data.write_text("\n".join(rows) + "\n")
    return d, data


TEXT = ["--batch-size", "8", "--max-length", "8", "--no-progress", "--no-plots", "--no-checkpoints"]


def test_text_early_stopping_restores_the_best_and_scores_the_eval_split(tiny_text, tmp_path, capsys):
    model, data = tiny_text
    out = tmp_path / "run"
    # a learning rate so small that nothing improves after the first evaluation: patience 2 stops at the third
    assert main(["train", "-m", str(model), "-d", str(data), "-o", str(out), *TEXT, "--epochs", "6",
                 "--lr", "1e-12", "--validation-fraction", "0.25", "--early-stopping", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    run = json.loads((out / "run.json").read_text())
    assert run["num_train"] + run["num_validation"] == 40 and run["num_validation"] == 10 and run["num_eval"] == 10
    steps_per_epoch = 4  # 30 examples, batch 8
    assert metrics["stopped_early"] and metrics["best_step"] == steps_per_epoch
    assert metrics["stopped_at_step"] == 3 * steps_per_epoch == metrics["train_steps"]
    assert [h["step"] for h in metrics["validation_history"]] == [4, 8, 12]
    assert "validation_accuracy" in metrics["validation_history"][0] and "eval_accuracy" in metrics
    assert metrics["restored_best"] and metrics["best_validation_accuracy"] is not None
    capsys.readouterr()
    assert main(["evaluate", str(out), "--eval-batch-size", "16"]) == 0  # the saved adapter is the restored state
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])
    assert evaluated["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-4)


def test_text_validation_without_stopping_runs_the_whole_budget(tiny_text, tmp_path):
    model, data = tiny_text
    out = tmp_path / "run"
    assert main(["train", "-m", str(model), "-d", str(data), "-o", str(out), *TEXT, "--epochs", "2",
                 "--method", "lora", "--lora-r", "1", "--validation-fraction", "0.25"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_steps"] == 8 and not metrics["stopped_early"] and not metrics["restored_best"]
    assert len(metrics["validation_history"]) == 2 and metrics["early_stopping_patience"] is None


# ------------------------------------------------------------------------------------------------ vision
@pytest.fixture(scope="module")
def pixels(tmp_path_factory) -> Path:
    pytest.importorskip("timm")
    pytest.importorskip("accelerate")
    return write_pixels(tmp_path_factory.mktemp("es-data") / "pixels.csv")


def test_vision_early_stopping(pixels, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "test_efficientnet", "--random-init", "--image-size", "16", "--data",
                 str(pixels), "--output", str(out), "--batch-size", "16", "--eval-batch-size", "32", "--no-progress",
                 "--no-plots", "--epochs", "5", "--lr", "1e-12", "--validation-fraction", "0.2",
                 "--early-stopping", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    run = json.loads((out / "run.json").read_text())
    assert run["num_validation"] == 10 and run["num_train"] == 38
    assert metrics["stopped_early"] and len(metrics["validation_history"]) == 2 and metrics["best_step"] == 3
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0  # the saved adapter is the restored state
    assert json.loads(capsys.readouterr().out)["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])
