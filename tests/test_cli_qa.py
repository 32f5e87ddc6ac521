"""End to end: the ``question-answering`` task through the ``vectorfit`` command: the real MiniLM on small synthetic
SQuAD files (v1.1 with LoRA, v2.0 with its unanswerable questions with VectorFit), evaluate, merge, every method on
a tiny random BERT, and bad input (no network)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("torchmetrics")

from vectorfit import main  # noqa: E402

COUNTRIES = ["Norland", "Estavia", "Brenmark", "Quorra", "Talvene", "Ostrima", "Pellucid", "Varnholt", "Ismeer",
             "Cardova", "Lunet", "Dravik"]
CITIES = ["Aster", "Belmond", "Corvin", "Dunmere", "Eskar", "Falwick", "Galen", "Harrow", "Ilford", "Jarvik",
          "Kessel", "Lorne"]
GOODS = ["copper", "wheat", "timber", "wool", "salt", "glass", "tea", "silk", "iron", "olives", "cheese", "coal"]
FILLER = ["It is known for its rivers.", "Many people visit it in summer.", "Its winters are long."]


def squad(v2: bool = False) -> dict:
    """Twelve short articles, two questions each (three with v2.0's unanswerable one); contexts long enough to be
    cut into several windows of 128 tokens."""
    rng = random.Random(0)
    data = []
    for i, country in enumerate(COUNTRIES):
        city, good = CITIES[i], GOODS[i]
        filler = " ".join(rng.choice(FILLER) for _ in range(24))
        context = f"{country} is a small country. {filler} The capital of {country} is {city}. {country} mainly" \
                  f" exports {good}."
        qas = [{"id": f"{i}-capital", "question": f"What is the capital of {country}?",
                "answers": [{"text": city, "answer_start": context.index(f"is {city}.") + 3}]},
               {"id": f"{i}-export", "question": f"What does {country} export?",
                "answers": [{"text": good, "answer_start": context.index(good)}]}]
        if v2:
            qas.append({"id": f"{i}-king", "question": f"Who is the king of {country}?", "answers": [],
                        "is_impossible": True})
        data.append({"title": country, "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "v2.0" if v2 else "1.1", "data": data}


@pytest.fixture(scope="module")
def squad_files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("squad")
    files = {"v1": d / "train-v1.1.json", "v2": d / "train-v2.0.json"}
    files["v1"].write_text(json.dumps(squad(), indent=1))
    files["v2"].write_text(json.dumps(squad(v2=True), indent=1))
    return files


FAST = ["--max-length", "128", "--doc-stride", "32", "--batch-size", "8", "--max-steps", "2", "--max-train", "12",
        "--max-eval", "6", "--no-plots", "--no-progress", "--logging-steps", "1"]


def _train(out: Path, model: str, data, *extra) -> int:
    return main(["train", "--model", model, "--data", str(data), "--output", str(out), *FAST, *extra])


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _in_range(metrics: dict) -> None:
    for key in ("eval_exact_match", "eval_f1"):
        assert 0.0 <= metrics[key] <= 100.0
    assert metrics["eval_f1"] >= metrics["eval_exact_match"] and metrics["eval_loss"] > 0


@pytest.fixture(scope="module")
def minilm_v2_run(squad_files, tmp_path_factory) -> Path:
    """VectorFit (with AVF) on the real MiniLM and SQuAD v2.0 data, recognised without --task."""
    out = tmp_path_factory.mktemp("runs") / "minilm-v2"
    assert _train(out, "minilm", squad_files["v2"]) == 0
    return out


def test_minilm_on_squad_v2_with_vectorfit(minilm_v2_run, capsys):
    metrics = _metrics(minilm_v2_run)
    _in_range(metrics)
    assert metrics["task"] == "question-answering" and metrics["primary_metric"] == "eval_f1"
    assert metrics["method"] == "vectorfit" and metrics["null_answers"] is True
    assert metrics["eval_has_ans_total"] + metrics["eval_no_ans_total"] == 6
    info = json.loads((minilm_v2_run / "run.json").read_text())
    assert info["task_name"] == "question-answering" and info["qa"]["doc_stride"] == 32
    assert info["qa"]["max_length"] == 128 and info["windows"]["eval"] > 6  # long contexts: several windows
    predictions = json.loads((minilm_v2_run / "eval_predictions.json").read_text())
    assert len(predictions) == 6 and all(isinstance(v, str) for v in predictions.values())
    assert (minilm_v2_run / "adapter").is_dir()
    # vectorfit evaluate RUN reproduces the training's last evaluation
    assert main(["evaluate", str(minilm_v2_run)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for key in ("eval_exact_match", "eval_f1", "eval_no_ans_f1"):
        assert evaluated[key] == pytest.approx(metrics[key])
    assert evaluated["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-4)
    assert evaluated["num_examples"] == 6


def test_merged_minilm_evaluates_alike_from_model_and_data(minilm_v2_run, squad_files, tmp_path, capsys):
    merged = tmp_path / "merged"
    assert main(["merge", str(minilm_v2_run), "--output", str(merged)]) == 0
    capsys.readouterr()
    config = json.loads((merged / "config.json").read_text())
    assert config["architectures"] == ["BertForQuestionAnswering"]
    assert json.loads((merged / "vectorfit_qa.json").read_text())["doc_stride"] == 32
    # the merged model is a question-answering model: recognised from the model itself
    assert main(["evaluate", "--model", str(merged), "--data", str(squad_files["v2"]), "--max-eval", "6"]) == 0
    merged_metrics = json.loads(capsys.readouterr().out)
    trained = _metrics(minilm_v2_run)
    assert merged_metrics["eval_f1"] == pytest.approx(trained["eval_f1"], abs=1e-6)
    assert merged_metrics["eval_loss"] == pytest.approx(trained["eval_loss"], rel=1e-3)
    # --max-length sets the windows; one no longer than the run's stride (32) is refused with both named
    assert main(["evaluate", "--model", str(merged), "--data", str(squad_files["v2"]), "--max-length", "32"]) == 2
    assert "--doc-stride 32 must lie in [0, --max-length 32)" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(merged), "--data", str(squad_files["v2"]), "--max-eval", "6",
                 "--max-length", "48"]) == 0
    assert json.loads(capsys.readouterr().out)["num_examples"] == 6


def test_minilm_on_squad_v1_with_lora(squad_files, tmp_path, capsys):
    out = tmp_path / "minilm-lora"
    assert _train(out, "minilm", squad_files["v1"], "--task", "question-answering", "--method", "lora",
                  "--lora-r", "2") == 0
    metrics = _metrics(out)
    _in_range(metrics)
    assert metrics["null_answers"] is False and "eval_no_ans_f1" not in metrics
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["eval_f1"] == pytest.approx(metrics["eval_f1"])
    assert evaluated["eval_exact_match"] == pytest.approx(metrics["eval_exact_match"])


def test_a_finished_run_is_not_replaced(minilm_v2_run, squad_files, capsys):
    before = (minilm_v2_run / "metrics.json").read_bytes()
    assert _train(minilm_v2_run, "minilm", squad_files["v2"]) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert (minilm_v2_run / "metrics.json").read_bytes() == before


def test_squad_data_picks_question_answering(squad_files, tmp_path):
    from vectorfit.selection import choose_task, list_tasks

    tasks = list_tasks()
    assert choose_task(tasks, "minilm", data=str(squad_files["v1"]))[0].name == "question-answering"
    flat = tmp_path / "qa.jsonl"
    flat.write_text(json.dumps({"question": "q", "context": "c", "answers": []}) + "\n")
    assert choose_task(tasks, "minilm", data=str(flat))[0].name == "question-answering"
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("text,label\ngood,1\nbad,0\n")
    assert choose_task(tasks, "minilm", data=str(reviews))[0].name == "text-classification"
    assert choose_task(tasks, "minilm", data="rotten-tomatoes")[0].name == "text-classification"
    assert choose_task(tasks, "minilm", data=str(squad_files["v1"]), task="qa")[0].name == "question-answering"


# ------------------------------------------------------------------------------------------------ tiny BERT
@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    import torch
    from transformers import BertConfig, BertForQuestionAnswering, BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "is", "the", "capital", "of", "does", "export",
             "who", "king", "?", "."] + sorted({w.lower() for w in COUNTRIES + CITIES + GOODS}) + \
        sorted({w.lower().strip(".") for s in FILLER for w in s.split()} | {"a", "small", "country", "mainly",
                                                                             "exports"})
    d = tmp_path_factory.mktemp("tiny-bert-qa")
    BertTokenizerFast(vocab={w: i for i, w in enumerate(dict.fromkeys(words))}).save_pretrained(d)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=160)
    BertForQuestionAnswering(config).save_pretrained(d)
    return d


@pytest.mark.parametrize("method", ["vectorfit", "svfit", "svft", "bitfit", "full", "lora", "adalora"])
def test_every_method_trains_question_answering(method, tiny_bert, squad_files, tmp_path):
    out = tmp_path / method
    extra = ["--max-steps", "1", "--max-train", "8", "--max-eval", "4"]
    assert _train(out, str(tiny_bert), squad_files["v2"], "--method", method, *extra) == 0
    metrics = _metrics(out)
    _in_range(metrics)
    assert metrics["task"] == "question-answering" and metrics["train_steps"] == 1
    assert metrics["trainable_params"] < metrics["total_params"] or method == "full"
    assert (out / ("model" if method == "full" else "adapter")).is_dir()


def test_resume_continues_a_question_answering_run(tiny_bert, squad_files, tmp_path):
    """One epoch checkpointed, then --resume to two: the run continues from the checkpoint (its step count) with
    its stored window settings."""
    out = tmp_path / "resumed"
    common = ["--max-train", "8", "--max-eval", "4", "--batch-size", "4", "--doc-stride", "48"]
    fast = [o for o in FAST if o not in ("--max-steps", "2")]
    code = main(["train", "--model", str(tiny_bert), "--data", str(squad_files["v2"]), "--output", str(out), *fast,
                 *common, "--epochs", "1"])
    assert code == 0 and (out / "checkpoints").is_dir()
    first = _metrics(out)
    code = main(["train", "--model", str(tiny_bert), "--data", str(squad_files["v2"]), "--output", str(out), *fast,
                 *common, "--epochs", "2", "--resume"])
    assert code == 0
    second = _metrics(out)
    _in_range(second)
    assert second["resumed_from"].endswith(f"checkpoint-{first['train_steps']}")
    assert second["train_steps"] == 2 * first["train_steps"]
    assert json.loads((out / "run.json").read_text())["args"]["doc_stride"] == 48


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_input_is_one_clear_line(squad_files, tiny_bert, tmp_path, capsys):
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n{"text": "ok", "label": 1}\n')
    assert _train(tmp_path / "r1", str(tiny_bert), reviews, "--task", "question-answering") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs 'question', 'context' and 'answers' columns" in err[0]
    assert not (tmp_path / "r1" / "metrics.json").exists()

    from transformers import GPT2Config, GPT2LMHeadModel

    lm = tmp_path / "tiny-gpt2"
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=99, n_positions=64)).save_pretrained(lm)
    assert _train(tmp_path / "r2", str(lm), squad_files["v1"], "--task", "question-answering") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "task 'question-answering' does not train model" in err[0]

    from transformers import BertGenerationConfig, BertGenerationEncoder

    gen = tmp_path / "bert-generation"
    BertGenerationEncoder(BertGenerationConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1,
                                               num_attention_heads=4, intermediate_size=64)).save_pretrained(gen)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (gen / name).write_bytes((tiny_bert / name).read_bytes())
    assert _train(tmp_path / "r3", str(gen), squad_files["v1"], "--task", "question-answering") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no question-answering class" in err[0]

    bad = json.loads(squad_files["v1"].read_text())
    for article in bad["data"]:
        for qa in article["paragraphs"][0]["qas"]:
            qa["answers"][0]["answer_start"] += 1
    misplaced = tmp_path / "misplaced.json"
    misplaced.write_text(json.dumps(bad))
    assert _train(tmp_path / "r4", str(tiny_bert), misplaced) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # counted among the questions read: 12 (--max-train) + 5 (a fifth of 24) for eval
    assert len(err) == 2 and "skipped 17 example(s)" in err[0] and "(the first: id '" in err[0]
    assert "no usable example left" in err[1] and not (tmp_path / "r4" / "metrics.json").exists()
