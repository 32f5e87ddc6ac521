"""End to end: the text tasks through the ``vectorfit`` command, on a tiny random BERT saved to a temp dir and tiny
CSVs (no network)."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from vf_core import VectorFitModel  # noqa: E402
from vectorfit import main  # noqa: E402

WORDS_POS = ["good", "great", "fun", "superb", "lovely"]
WORDS_NEG = ["bad", "awful", "boring", "dull", "weak"]
FILLER = ["the", "a", "movie", "film", "was", "is", "plot", "acting", "very", "and"]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS_POS + WORDS_NEG + FILLER
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(d / "vocab.txt")).save_pretrained(d)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    BertForSequenceClassification(config).save_pretrained(d)
    return d


def _sentence(rng: random.Random, positive: bool) -> str:
    words = rng.sample(FILLER, 3) + [rng.choice(WORDS_POS if positive else WORDS_NEG)]
    rng.shuffle(words)
    return " ".join(words)


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    lines = ["review,sentiment"]
    for i in range(48):
        positive = i % 2 == 0
        lines.append(f"{_sentence(rng, positive)},{'pos' if positive else 'neg'}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_regression(tmp_path_factory) -> Path:
    rng = random.Random(1)
    path = tmp_path_factory.mktemp("data") / "scores.jsonl"
    rows = []
    for i in range(40):
        positive = i % 2 == 0
        rows.append(json.dumps({"text": _sentence(rng, positive), "score": round(rng.uniform(0.5, 3.0)
                                                                               * (1 if positive else -1), 2)}))
    path.write_text("\n".join(rows) + "\n")
    return path


COMMON = ["--text-column", "review", "--label-column", "sentiment", "--batch-size", "8", "--max-length", "16",
          "--no-progress", "--logging-steps", "1"]


def _train(tmp_path, model, data, *extra, name="run"):
    out = tmp_path / name
    code = main(["train", "--model", str(model), "--data", str(data), "--output", str(out), *extra])
    return code, out


@pytest.fixture(scope="module")
def vectorfit_run(tiny_bert, tiny_csv, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    full_code, full = _train(tmp, tiny_bert, tiny_csv, *COMMON, "--method", "full", "--epochs", "1", "--no-plots",
                             name="full")
    assert full_code == 0
    code, out = _train(tmp, tiny_bert, tiny_csv, *COMMON, "--epochs", "2", "--lr", "2e-2",
                       "--avf-t-i", "0.3", "--avf-t-f", "0.2", "--avf-n-f", "2", "--avf-k", "2", name="vf")
    assert code == 0
    return out, full


def test_train_writes_metrics_adapter_plots(vectorfit_run, tiny_bert):
    out, _ = vectorfit_run
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("eval_accuracy", "trainable_params", "total_params", "train_seconds", "epoch_history"):
        assert key in metrics
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert 0 < metrics["trainable_params"] < metrics["total_params"]
    assert len(metrics["epoch_history"]) == 2
    run = json.loads((out / "run.json").read_text())
    assert run["label_names"] == ["neg", "pos"] and run["method"]["avf"]["policy"] == "topk_ema"
    # the adapter loads on a fresh base with VectorFitModel.from_pretrained and gives the trained function
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    vf = VectorFitModel.from_pretrained(base, out / "adapter")
    assert len(vf.vectors) == 2 * 6 * 2  # 2 layers x 6 roles x (sigma, bias)
    for name in ("training_strength.png", "weight_change_spectra.png", "leading_sv_change.png"):
        assert (out / "plots" / name).stat().st_size > 1000
    assert json.loads((out / "avf_history.json").read_text())["history"]
    strengths = json.loads((out / "strengths.json").read_text())
    assert len(strengths["history"]) >= 2
    assert metrics["compared_with_full_run"].endswith("full")  # the sibling full run was found for Fig. 9


def test_evaluate_run_and_merged_model(vectorfit_run, tmp_path, capsys):
    out, _ = vectorfit_run
    assert main(["evaluate", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    trained = json.loads((out / "metrics.json").read_text())
    assert evaluated["eval_accuracy"] == pytest.approx(trained["eval_accuracy"])
    merged = tmp_path / "merged"
    assert main(["merge", str(out), "--output", str(merged)]) == 0
    capsys.readouterr()
    assert (merged / "config.json").is_file() and (merged / "tokenizer.json").is_file()
    assert main(["evaluate", "--model", str(merged), "--data", str(json.loads((out / "run.json").read_text())["data"]),
                 "--text-column", "review", "--label-column", "sentiment"]) == 0
    merged_metrics = json.loads(capsys.readouterr().out)
    assert merged_metrics["eval_accuracy"] == pytest.approx(trained["eval_accuracy"])
    assert merged_metrics["eval_loss"] == pytest.approx(evaluated["eval_loss"], rel=1e-4, abs=1e-5)
    # --max-length overrides the run's truncation: two tokens ([CLS] [SEP]) leave no text, so the loss moves
    assert main(["evaluate", str(out), "--max-length", "2"]) == 0
    cut = json.loads(capsys.readouterr().out)
    assert cut["num_examples"] == evaluated["num_examples"] and cut["eval_loss"] != pytest.approx(evaluated["eval_loss"])


def test_merge_from_model_and_adapter(vectorfit_run, tiny_bert, tmp_path, capsys):
    out, _ = vectorfit_run
    merged = tmp_path / "m2"
    assert main(["merge", "--model", str(tiny_bert), "--adapter", str(out / "adapter"), "--output", str(merged)]) == 0
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(merged)
    assert model.config.num_labels == 2


def test_inspect_adapter_run_and_model(vectorfit_run, tiny_bert, capsys):
    out, _ = vectorfit_run
    assert main(["inspect", str(out / "adapter"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "vectorfit adapter" and info["family"] == "bert"
    assert info["roles"] == ["q", "k", "v", "o", "f1", "f2"]
    assert set(info["trainable_by_kind"]) == {"sigma", "bias"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert info["trainable_params"] == metrics["trainable_params"]
    assert main(["inspect", str(out)]) == 0
    assert "VectorFit adapter" in capsys.readouterr().out
    assert main(["inspect", str(tiny_bert), "--json"]) == 0
    model_info = json.loads(capsys.readouterr().out)
    assert model_info["family"] == "bert"
    assert model_info["methods"]["vectorfit"] == metrics["trainable_params"]
    assert model_info["methods"]["full"] == metrics["total_params"]


def test_plot_command_compares_with_full(vectorfit_run, tmp_path, capsys):
    out, full = vectorfit_run
    assert main(["plot", str(out), "--compare-full", str(full), "--output", str(tmp_path / "p")]) == 0
    assert "compared with full fine-tuning run" in capsys.readouterr().out
    spectra = json.loads((tmp_path / "p" / "spectra.json").read_text())
    assert spectra["full"] and set(spectra["full"]) == set(spectra["method"])
    name = next(iter(spectra["method"]))
    # VectorFit's weight change U diag(s - s0) V^T has singular values |s - s0|: as many as min(d_out, d_in)
    assert len(spectra["method"][name]["delta"]) == 32


METHOD_ARGS = {
    "vectorfit": ["--method", "vectorfit"],
    "vectorfit-noavf": ["--method", "vectorfit", "--no-avf"],
    "vectorfit-sigma": ["--method", "vectorfit", "--no-avf", "--no-bias"],
    "vectorfit-attn": ["--method", "vectorfit", "--roles", "q,k,v,o"],
    "svfit": ["--method", "svfit", "--svfit-rank", "4"],
    "svft": ["--method", "svft", "--svft-pattern", "banded"],
    "bitfit": ["--method", "bitfit"],
    "full": ["--method", "full"],
    "lora-r1": ["--method", "lora", "--lora-r", "1"],
    "lora-r8": ["--method", "lora", "--lora-r", "8"],
    "adalora": ["--method", "adalora"],
}


@pytest.mark.parametrize("method", list(METHOD_ARGS))
def test_each_method_runs_one_step(method, tiny_bert, tiny_csv, tmp_path):
    if method in ("lora-r1", "lora-r8", "adalora"):
        pytest.importorskip("peft")
    code, out = _train(tmp_path, tiny_bert, tiny_csv, *COMMON, *METHOD_ARGS[method], "--max-steps", "1",
                       "--no-plots", "--no-checkpoints")
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_steps"] == 1 and "eval_accuracy" in metrics
    assert metrics["trainable_params"] <= metrics["total_params"]
    if method == "full":
        assert metrics["trainable_params"] == metrics["total_params"] and (out / "model" / "config.json").is_file()
    else:
        assert (out / "adapter" / "adapter_config.json").is_file()
    counts = {"vectorfit-sigma": ("bias", 0), "svft": ("m", None)}
    if method in counts:
        kind, expected = counts[method]
        got = metrics["trainable_breakdown"][kind]
        assert got == expected if expected is not None else got > 0


def test_trainable_counts_order(tiny_bert, tiny_csv, tmp_path, capsys):
    assert main(["inspect", str(tiny_bert), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)["methods"]
    assert m["vectorfit (sigma only)"] < m["vectorfit"] < m["lora r=8"] < m["full"]
    assert m["vectorfit (attention only)"] < m["vectorfit"]


def test_regression_data_and_resume(tiny_bert, tiny_regression, tmp_path, capsys):
    args = ["--batch-size", "8", "--max-length", "16", "--no-progress", "--no-plots", "--method", "vectorfit",
            "--no-avf"]
    code, out = _train(tmp_path, tiny_bert, tiny_regression, *args, "--epochs", "1", name="reg")
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "regression" and {"eval_pearson", "eval_mse"} <= set(metrics)
    assert metrics["primary_metric"] == "eval_pearson"
    # resume from the epoch-1 checkpoint with a longer budget: options come from run.json
    capsys.readouterr()
    assert main(["train", "--output", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["train_steps"] == 2 * metrics["train_steps"]
    assert resumed["resumed_from"].endswith(f"checkpoint-{metrics['train_steps']}")


def test_resume_with_avf_restores_freezer(tiny_bert, tiny_csv, tmp_path):
    args = [*COMMON, "--avf-t-i", "2", "--avf-t-f", "2", "--avf-n-f", "3", "--avf-k", "3"]
    code, out = _train(tmp_path, tiny_bert, tiny_csv, *args, "--epochs", "1", "--no-plots", name="avf")
    assert code == 0
    steps = json.loads((out / "metrics.json").read_text())["train_steps"]
    assert main(["train", "--output", str(out), "--resume", "--epochs", "2"]) == 0
    history = json.loads((out / "avf_history.json").read_text())["history"]
    assert [r["step"] for r in history] == [2, 4, 6] and steps < 6 <= 2 * steps


# ------------------------------------------------------------------------------------------------ bad input
def _cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "vectorfit", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_input_missing_data_file(tiny_bert, tmp_path):
    _one_line_error(_cli("train", "-m", str(tiny_bert), "-d", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "o")),
                    "nope.csv", "no such file")


def test_bad_input_missing_column(tiny_bert, tiny_csv, tmp_path):
    _one_line_error(_cli("train", "-m", str(tiny_bert), "-d", str(tiny_csv), "-o", str(tmp_path / "o"),
                         "--text-column", "body", "--label-column", "sentiment"), "'body'", "does not exist")
    assert not (tmp_path / "o").exists()  # the folder the failed run created is gone again, lock and all
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    _one_line_error(_cli("train", "-m", str(tiny_bert), "-d", str(tiny_csv), "-o", str(tmp_path / "mine"),
                         "--text-column", "body"), "'body'")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"  # a folder that was there stays


def test_bad_input_unparseable_labels(tiny_bert, tiny_csv, tmp_path):
    _one_line_error(_cli("train", "-m", str(tiny_bert), "-d", str(tiny_csv), "-o", str(tmp_path / "o"),
                         "--text-column", "review", "--label-column", "sentiment", "--task", "regression"),
                    "not a finite number", "regression")


def test_bad_input_unknown_model(tiny_csv, tmp_path):
    _one_line_error(_cli("train", "-m", str(tmp_path / "no-such-model"), "-d", str(tiny_csv), "-o",
                         str(tmp_path / "o")), "unknown model")


def test_bad_input_usage_errors(tiny_bert, tiny_csv, tmp_path):
    _one_line_error(_cli("train", "-m", str(tiny_bert), "-d", str(tiny_csv), "-o", str(tmp_path / "o"),
                         "--method", "prompt-tuning"), "invalid choice")
    _one_line_error(_cli("train", "-d", str(tiny_csv), "-o", str(tmp_path / "o")), "--model")
    if importlib.util.find_spec("vf_backends_vision") is not None:
        _one_line_error(_cli("train", "-m", str(tiny_bert), "-d", "mnist-5k", "-o", str(tmp_path / "o")),
                        "'vision' backend")
    _one_line_error(_cli("evaluate", str(tmp_path)), "not a run directory")
    _one_line_error(_cli("train", "-m", str(tiny_bert), "-d", str(tiny_csv), "-o", str(tmp_path / "o"),
                         "--method", "lora", "--avf"), "--avf")


def test_help_of_every_command_is_complete():
    for command in ("train", "evaluate", "generate", "merge", "inspect", "plot", "list"):
        proc = _cli(command, "--help")
        assert proc.returncode == 0 and proc.stderr == ""
        assert f"usage: vectorfit {command}" in proc.stdout
    text = _cli("train", "--help").stdout
    for option in ("--model", "--data", "--method", "--output", "--resume", "--lora-r", "--roles", "--no-bias",
                   "--no-avf", "--avf-k", "--max-length", "--compare-full", "--text-column", "--label-column"):
        assert option in text
    for method in ("vectorfit", "svfit", "svft", "bitfit", "full", "lora", "adalora"):
        assert method in text


def test_mean_pooling_head_trains_evaluates_and_merges(tiny_bert, tiny_csv, tmp_path, capsys):
    code, out = _train(tmp_path, tiny_bert, tiny_csv, *COMMON, "--epochs", "1", "--no-avf", "--no-plots",
                       "--pooling", "mean")
    assert code == 0
    assert json.loads((out / "run.json").read_text())["args"]["pooling"] == "mean"
    trained = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0  # the base is rebuilt with the run's pooling before the adapter
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["eval_loss"] == pytest.approx(trained["eval_loss"], rel=1e-4)
    merged = tmp_path / "merged"
    assert main(["merge", str(out), "--output", str(merged)]) == 0
    assert json.loads((merged / "config.json").read_text())["vectorfit_pooling"] == "mean"
    capsys.readouterr()
    assert main(["evaluate", "--model", str(merged), "--data", str(tiny_csv), "--text-column", "review",
                 "--label-column", "sentiment"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["eval_loss"] == pytest.approx(trained["eval_loss"], rel=1e-4)


def test_a_non_finite_loss_stops_the_run(tiny_bert, tiny_csv, tmp_path, capsys):
    code, out = _train(tmp_path, tiny_bert, tiny_csv, *COMMON, "--epochs", "3", "--method", "full", "--lr", "1e12",
                       "--max-grad-norm", "0", "--no-plots")
    assert code == 2
    err = capsys.readouterr().err
    assert "vectorfit: error: the training loss became" in err and "Lower --lr" in err
    assert not (out / "metrics.json").exists()


def test_train_and_evaluate_a_hub_id_from_the_local_cache(tiny_bert, tiny_csv, tmp_path, monkeypatch, capsys):
    """`--model org/name` with HF_HUB_OFFLINE=1 and the model in the hub cache (laid out as the hub does)."""
    from vf_core.testing.hub_cache import lay_out_hub_cache

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = lay_out_hub_cache(tiny_bert, tmp_path / "hf" / "hub", "someone/tiny-bert")
    code, out = _train(tmp_path, "someone/tiny-bert", tiny_csv, *COMMON, "--epochs", "1", "--no-plots", "--no-avf")
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == "someone/tiny-bert" and run["model_path"] == str(snapshot)
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    assert "eval_accuracy" in json.loads(capsys.readouterr().out)
    code, _ = _train(tmp_path, "someone/not-cached", tiny_csv, *COMMON, "--epochs", "1", name="missing")
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not in the local Hugging Face cache" in err


def test_train_on_a_save_to_disk_folder_keeps_its_splits(tiny_bert, tiny_csv, tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    import csv as _csv

    with open(tiny_csv) as fh:
        rows = list(_csv.DictReader(fh))
    folder = tmp_path / "reviews"
    datasets.DatasetDict(
        train=datasets.Dataset.from_list(rows[:40]), validation=datasets.Dataset.from_list(rows[40:])
    ).save_to_disk(folder)
    code, out = _train(tmp_path, tiny_bert, folder, *COMMON, "--epochs", "1", "--no-plots", "--no-avf")
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert run["num_train"] == 40 and run["num_eval"] == len(rows) - 40
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["num_examples"] == len(rows) - 40
    code, _ = _train(tmp_path, tiny_bert, folder, *COMMON, "--split", "dev", name="nosplit")
    assert code == 2 and "has no split 'dev'" in capsys.readouterr().err


def test_generate_refuses_classifiers_and_bad_prompts(vectorfit_run, tmp_path):
    """`vectorfit generate` takes runs of generating tasks only, and exactly one of --prompt / --input."""
    vectorfit_run = vectorfit_run[0]
    _one_line_error(_cli("generate", str(vectorfit_run), "--prompt", "hello"), "does not generate text",
                    "vectorfit evaluate")
    _one_line_error(_cli("generate", str(vectorfit_run)), "--prompt", "--input")
    _one_line_error(_cli("generate", str(vectorfit_run), "--input", str(tmp_path / "none.txt")), "no such file")
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "a"}\n{"question": "b"}\n')
    _one_line_error(_cli("generate", str(vectorfit_run), "--input", str(bad)), "line 2", "'prompt'")


@pytest.mark.multiprocess
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_the_command_trains_in_two_processes_under_torchrun(tiny_bert, tiny_csv, tmp_path, capsys):
    """``torchrun --nproc_per_node 2 -m vectorfit train``: DDP on gloo through the Trainer; rank 0 alone writes the
    run folder, the metrics are the one-process ones (the ranks' losses averaged, not summed), and the checkpoint
    holds the trained tensors only."""
    from safetensors.torch import load_file

    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "vectorfit", "train", "--model", str(tiny_bert), "--data", str(tiny_csv), "--output", str(out),
               *COMMON, "--batch-size", "4", "--epochs", "1", "--no-plots", "--device", "cpu",
               "--avf-t-i", "0.4", "--avf-t-f", "0.2", "--avf-n-f", "2", "--avf-k", "2"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trainable params:") == 1  # the summary, printed once
    metrics = json.loads((out / "metrics.json").read_text())
    steps = metrics["train_steps"]
    assert steps == -(-metrics["num_train"] // 8)  # 2 processes x 4 examples a step
    history = json.loads((out / "avf_history.json").read_text())["history"]
    assert len(history) == 2 and history[-1]["step"] < steps  # the schedule fits the 2-process step count
    saved = load_file(str(out / "checkpoints" / f"checkpoint-{steps}" / "model.safetensors"))
    assert sum(t.numel() for t in saved.values()) == metrics["trainable_params"]
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0  # one process scores the saved adapter as the two did
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["eval_accuracy"] == metrics["eval_accuracy"]
    # the Trainer pads the ranks' last eval batches to even sizes and weighs the loss of the padded batch: close,
    # not exact (twice the loss was the Trainer's scaling for models that sum over the ranks' tokens)
    assert evaluated["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-2)
