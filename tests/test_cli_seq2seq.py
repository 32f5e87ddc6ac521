"""End to end: the ``seq2seq`` task through the ``vectorfit`` command (train with every method, ``--resume``,
``evaluate``, ``generate``, ``merge``), on tiny random BART and T5 models built from configs with a word-level
tokenizer trained offline (``packages/vf-backends-nlp/tests/seq2seq_tiny.py``), and its bad inputs."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

pytest.importorskip("transformers")
pytest.importorskip("torchmetrics")

from vectorfit import main  # noqa: E402
from vectorfit_test_utils import REPO  # noqa: E402


def _load_tiny():
    name = "vf_nlp_tests_seq2seq_tiny"
    if name not in sys.modules:
        path = REPO / "packages" / "vf-backends-nlp" / "tests" / "seq2seq_tiny.py"
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


tiny = _load_tiny()

FAST = ["--max-train", "16", "--max-eval", "8", "--batch-size", "8", "--max-new-tokens", "8", "--max-length", "16",
        "--no-progress", "--logging-steps", "1"]
PROMPTS = ["the cat sat on the mat", "a big dog ran home"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq2seq")
    return {"bart": tiny.save_tiny_seq2seq(root / "bart", "bart"), "t5": tiny.save_tiny_seq2seq(root / "t5", "t5"),
            "gpt2": tiny.save_tiny_decoder(root / "gpt2"), "pairs": tiny.write_pairs(root / "pairs.jsonl", n=40),
            "root": root}


def _train(out, model, data, *extra):
    return main(["train", "--model", str(model), "--data", str(data), "--output", str(out), *FAST, *extra])


def _metrics(out) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _check_scores(metrics: dict, beams: int = 1) -> None:
    for key in ("eval_rouge1", "eval_rouge2", "eval_rougeL"):
        assert 0.0 <= metrics[key] <= 100.0, (key, metrics[key])
    assert metrics["eval_loss"] > 0 and 0 <= metrics["eval_gen_len"] <= 8
    assert metrics["primary_metric"] == "eval_rougeL" and metrics["engine"] == "transformers.Seq2SeqTrainer"
    assert metrics["max_new_tokens"] == 8 and metrics["num_beams"] == beams


@pytest.fixture(scope="module")
def vf_run(assets):
    """VectorFit with AVF on the tiny BART, the task recognised from the model and the data (no --task)."""
    out = assets["root"] / "vf"
    assert _train(out, assets["bart"], assets["pairs"], "--max-steps", "4", "--lr", "1e-2", "--avf-t-i", "0.25",
                  "--avf-t-f", "0.25", "--avf-n-f", "2", "--avf-k", "2") == 0
    return out


def _generate(target, capsys, *extra) -> list[str]:
    capsys.readouterr()
    argv = ["generate", str(target), "--json"] + [x for p in PROMPTS for x in ("--prompt", p)] + list(extra)
    assert main(argv) == 0
    return [row["generation"] for row in json.loads(capsys.readouterr().out)]


def test_vectorfit_run_with_avf(vf_run, assets):
    metrics = _metrics(vf_run)
    _check_scores(metrics)
    run = json.loads((vf_run / "run.json").read_text())
    assert run["task_name"] == "seq2seq" and run["task"] == "seq2seq" and run["method"]["avf"]["policy"] == "topk_ema"
    assert (metrics["source_column"], metrics["target_column"]) == ("source", "target")
    assert metrics["train_steps"] == 4 and json.loads((vf_run / "avf_history.json").read_text())["history"]
    # no new head: only the vectors train (2 + 2 layers of BART, its decoder with cross-attention too)
    assert metrics["trainable_breakdown"]["total"] == metrics["trainable_params"] < metrics["total_params"]
    for name in ("training_strength.png", "weight_change_spectra.png"):
        assert (vf_run / "plots" / name).stat().st_size > 1000
    from transformers import AutoModelForSeq2SeqLM
    from vf_core import VectorFitModel

    vf = VectorFitModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(assets["bart"]), vf_run / "adapter")
    assert len(vf.vectors) == 2 * (2 * 6 + 2 * 10)  # sigma and bias of 6 roles per encoder layer, 10 per decoder


EXTRA = {"full": ("--num-beams", "2"), "bitfit": ("--max-length", "5", "--max-target-length", "3")}


@pytest.mark.parametrize("method", ["svfit", "svft", "bitfit", "full", "lora", "adalora"])
def test_every_method_trains_bart(method, assets, tmp_path):
    out = tmp_path / method
    assert _train(out, assets["bart"], assets["pairs"], "--task", "seq2seq", "--method", method, "--max-steps", "2",
                  "--no-plots", *EXTRA.get(method, ())) == 0
    metrics = _metrics(out)
    _check_scores(metrics, beams=2 if method == "full" else 1)
    # bitfit's 24 sources (5 to 9 words + </s>) are cut to 5 tokens, its targets (3 words + </s>) to 3
    assert metrics["truncated"] == ({"sources": 24, "targets": 24} if method == "bitfit"
                                    else {"sources": 0, "targets": 0})
    if method == "full":
        assert metrics["trainable_params"] == metrics["total_params"] and (out / "model" / "config.json").is_file()
    else:
        assert 0 < metrics["trainable_params"] < metrics["total_params"] and (out / "adapter").is_dir()


def test_t5_trains_singular_values_only_and_resumes(assets, tmp_path):
    out = tmp_path / "t5"
    assert _train(out, assets["t5"], assets["pairs"], "--task", "seq2seq", "--epochs", "1", "--no-plots",
                  "--avf-t-i", "0.5", "--avf-t-f", "0.25", "--avf-n-f", "2", "--avf-k", "1") == 0
    first = _metrics(out)
    _check_scores(first)
    assert first["train_steps"] == 2 and first["trainable_breakdown"].get("bias", 0) == 0  # T5 has no biases
    # --resume from the epoch-1 checkpoint (VectorFit checkpoints of the Seq2SeqTrainer hold only the vectors)
    assert main(["train", "--output", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    resumed = _metrics(out)
    assert resumed["train_steps"] == 4 and resumed["resumed_from"].endswith("checkpoint-2")
    assert len(resumed["epoch_history"]) == 2
    from safetensors.torch import load_file

    saved = load_file(str(out / "checkpoints" / "checkpoint-4" / "model.safetensors"))
    assert sum(t.numel() for t in saved.values()) == resumed["trainable_params"]  # the vectors, not the base


def test_bert2bert_generates_with_the_ids_its_config_holds(assets, tmp_path, capsys):
    """A warm-started EncoderDecoderModel keeps its decoder start / end ids in config.json only: the run, generation
    and the merged model take them from there (not an internal error in generate)."""
    b2b = tiny.save_tiny_bert2bert(assets["root"] / "bert2bert")
    out = tmp_path / "b2b"
    assert _train(out, b2b, assets["pairs"], "--max-steps", "2", "--lr", "1e-2", "--no-plots") == 0
    metrics = _metrics(out)
    _check_scores(metrics)
    assert metrics["task"] == "seq2seq" and metrics["trainable_breakdown"]["bias"] > 0  # BERT has biases
    from transformers import AutoModelForSeq2SeqLM
    from vf_core import VectorFitModel

    vf = VectorFitModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(b2b), out / "adapter")
    assert len(vf.vectors) == 2 * (2 * 6 + 2 * 10)  # encoder: q k v o f1 f2; decoder: + cross-attention q k v o
    greedy = _generate(out, capsys)
    merged = tmp_path / "merged"
    assert main(["merge", str(out), "--output", str(merged)]) == 0
    assert _generate(merged, capsys) == greedy
    config = AutoModelForSeq2SeqLM.from_pretrained(merged).generation_config
    assert (config.decoder_start_token_id, config.eos_token_id, config.pad_token_id) == (2, 1, 0)


def test_evaluate_scores_the_run_as_training_did(vf_run, tmp_path, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(vf_run)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    trained = _metrics(vf_run)
    for key in ("eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_gen_len"):
        assert evaluated[key] == pytest.approx(trained[key])
    assert evaluated["eval_loss"] == pytest.approx(trained["eval_loss"], rel=1e-4)
    assert evaluated["num_examples"] == 8 and (vf_run / "eval_metrics.json").is_file()
    # the command's lengths instead of the run's: one new token at most, sources cut to two tokens
    assert main(["evaluate", str(vf_run), "--max-new-tokens", "1", "--max-length", "2", "--num-beams", "2"]) == 0
    short = json.loads(capsys.readouterr().out)
    assert short["eval_gen_len"] <= 1 < trained["eval_gen_len"]
    assert short["eval_loss"] != pytest.approx(trained["eval_loss"], rel=1e-4)
    # other data, its columns found by their default names (document, summary), not the run's
    other = tiny.write_pairs(tmp_path / "news.jsonl", n=10, seed=1, source="document", target="summary")
    assert main(["evaluate", str(vf_run), "--data", str(other), "--max-eval", "2"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["num_examples"] == 2 and 0 <= evaluated["eval_rougeL"] <= 100


def test_generate_merge_and_from_pretrained_agree(vf_run, assets, tmp_path, capsys):
    greedy = _generate(vf_run, capsys)
    assert len(greedy) == 2 and any(greedy)  # the tiny BART generates words, so equal outputs mean something
    assert len(_generate(vf_run, capsys, "--num-beams", "2")) == 2
    sampled = _generate(vf_run, capsys, "--temperature", "1.5", "--seed", "3")
    assert sampled == _generate(vf_run, capsys, "--temperature", "1.5", "--seed", "3")  # seeded sampling repeats

    merged = tmp_path / "merged"
    assert main(["merge", str(vf_run), "--output", str(merged)]) == 0
    assert _generate(merged, capsys) == greedy  # recognised as a seq2seq model, the run's 8 new tokens kept
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(merged), AutoTokenizer.from_pretrained(merged)
    assert type(model).__name__ == "BartForConditionalGeneration" and model.generation_config.max_new_tokens == 8
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    ids = model.generate(**enc, num_beams=1, do_sample=False)
    assert [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)] == greedy


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vectorfit: error: "), lines
    return lines[0]


def test_data_without_the_columns_is_one_line(assets, tmp_path, capsys):
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "the cat", "answer": "a dog"}\n' * 10)
    out = tmp_path / "bad"
    capsys.readouterr()
    assert _train(out, assets["bart"], data, "--task", "seq2seq", "--max-steps", "1") == 2
    line = _one_error_line(capsys)
    assert "no source column" in line and "question, answer" in line and "--source-column" in line
    assert not (out / "metrics.json").exists()
    # named columns that exist work
    assert _train(tmp_path / "named", assets["bart"], data, "--task", "seq2seq", "--source-column", "question",
                  "--target-column", "answer", "--max-steps", "1", "--no-plots", "--method", "bitfit") == 0


def test_models_that_are_not_seq2seq_are_refused(assets, tmp_path, capsys):
    from transformers import BertConfig, BertForSequenceClassification

    bert = tmp_path / "bert"
    BertForSequenceClassification(BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                             intermediate_size=64)).save_pretrained(bert)
    for model in (assets["gpt2"], bert):
        capsys.readouterr()
        assert _train(tmp_path / "out", model, assets["pairs"], "--task", "seq2seq") == 2
        line = _one_error_line(capsys)
        assert "task 'seq2seq' does not train model" in line and "text-classification" in line
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_a_finished_run_is_not_replaced(vf_run, assets, capsys):
    before = (vf_run / "metrics.json").read_bytes()
    capsys.readouterr()
    assert _train(vf_run, assets["bart"], assets["pairs"], "--max-steps", "1") == 2
    assert "already holds a finished run" in _one_error_line(capsys)
    assert (vf_run / "metrics.json").read_bytes() == before
