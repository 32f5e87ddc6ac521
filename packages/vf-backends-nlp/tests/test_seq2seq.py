"""The ``seq2seq`` task's library parts on tiny offline models: ROUGE values worked by hand, source/target columns,
tokenisation (truncation, -100 label padding), the model and data claims, and the generation settings' fallbacks."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import pytest

pytest.importorskip("transformers")
pytest.importorskip("torchmetrics")

from vf_core.errors import TaskError  # noqa: E402
from vf_core.tasks import MAYBE, NO, SURE  # noqa: E402

from vf_backends_nlp.records import DataError, load_records  # noqa: E402
from vf_backends_nlp.rouge import rouge_scores, rouge_stall  # noqa: E402
from vf_backends_nlp.seq2seq_data import (  # noqa: E402
    Pairs,
    Seq2SeqDataset,
    claim_seq2seq_data,
    load_pairs,
    pairs_of,
    seq2seq_collator,
)
from vf_backends_nlp.seq2seq_models import claim_seq2seq_model, load_seq2seq  # noqa: E402
from vf_backends_nlp.seq2seq_runner import generation_settings, rouge_metrics_fn  # noqa: E402
from vf_backends_nlp.tasks import claim_model as text_claim_model  # noqa: E402


def _load_tiny():
    """``seq2seq_tiny.py`` beside this file (the tests import in importlib mode: no test folder on sys.path)."""
    name = "vf_nlp_tests_seq2seq_tiny"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("seq2seq_tiny.py"))
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


tiny = _load_tiny()
save_tiny_bert2bert, save_tiny_decoder, save_tiny_seq2seq, save_tokenizer, write_pairs = (
    tiny.save_tiny_bert2bert, tiny.save_tiny_decoder, tiny.save_tiny_seq2seq, tiny.save_tokenizer, tiny.write_pairs)


# ------------------------------------------------------------------------------------------------ ROUGE
def _rounded(scores):
    return {k: round(v, 2) for k, v in scores.items()}


def test_rouge_identical_texts_score_100():
    assert rouge_scores(["the cat sat on the mat"], ["the cat sat on the mat"]) == \
        {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}


def test_rouge_partial_overlap_worked_by_hand():
    # 3 prediction words, 6 reference words, 2 shared: P 2/3, R 1/3, F 4/9. Bigrams: 1 of 2 in 5: F = 2/7.
    # The longest common subsequence is "the cat" (2 words): as ROUGE-1. Case and punctuation do not count.
    assert _rounded(rouge_scores(["The cat sat."], ["the cat was on the mat"])) == \
        {"rouge1": 44.44, "rouge2": 28.57, "rougeL": 44.44}


def test_rouge_order_matters_for_bigrams_and_lcs_only():
    # the same 4 words reversed: every unigram matches, no bigram does, the longest common subsequence is 1 word
    assert _rounded(rouge_scores(["a b c d"], ["d c b a"])) == {"rouge1": 100.0, "rouge2": 0.0, "rougeL": 25.0}


def test_rouge_is_the_mean_over_pairs_and_empty_scores_zero():
    scores = rouge_scores(["x y z", "", "p q"], ["x y z", "x", ""])
    assert _rounded(scores) == {"rouge1": 33.33, "rouge2": 33.33, "rougeL": 33.33}
    assert rouge_scores([], []) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_scores(["a", "b"], ["a"])


def test_rouge_stall_verdicts():
    assert rouge_stall({"eval_rouge1": 12.5, "eval_gen_len": 3.0}) is None
    assert "eval_rouge1 0" in rouge_stall({"eval_rouge1": 0.0, "eval_gen_len": 3.0})
    assert "empty" in rouge_stall({"eval_rouge1": 0.0, "eval_gen_len": 0.0})


# ------------------------------------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return save_tokenizer(tmp_path_factory.mktemp("tok"))


def test_default_and_named_columns(tmp_path):
    path = write_pairs(tmp_path / "news.jsonl", n=10, source="document", target="summary")
    train, ev = load_pairs(path)
    assert (len(train), len(ev)) == (8, 2)
    assert (train.source_column, train.target_column) == ("document", "summary")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(zip(train.sources + ev.sources, train.targets + ev.targets)) == \
        sorted((r["document"], r["summary"]) for r in rows)
    assert train.origin[0].startswith(f"{path}, line ")
    again, _ = load_pairs(path, source_column="summary", target_column="document")
    assert again.sources == train.targets


def test_missing_columns_name_what_is_there_and_the_option(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n' * 5)
    with pytest.raises(DataError) as err:
        load_pairs(path)
    message = str(err.value)
    assert "no source column" in message and "question, answer" in message and "--source-column" in message
    with pytest.raises(DataError, match="no column 'text' \\(--source-column\\); its columns: question, answer"):
        load_pairs(path, source_column="text")
    with pytest.raises(DataError, match="no target column .*--target-column"):
        load_pairs(path, source_column="question")
    with pytest.raises(DataError, match="both 'question'"):
        load_pairs(path, source_column="question", target_column="question")


def test_a_row_without_a_string_is_named(tmp_path):
    path = tmp_path / "holes.jsonl"
    path.write_text('{"source": "a b", "target": "a"}\n{"source": "c d", "target": 3}\n')
    train, ev = load_records(path, eval_fraction=0.5)
    with pytest.raises(DataError, match=r"holes.jsonl, line 2: the 'target' value is a int, not a string"):
        pairs_of(train if train.lines == [2] else ev)


def test_tokenisation_truncates_and_pads_labels_with_minus_100(tokenizer):
    pairs = Pairs(["the cat sat on the mat and then it ran home", "dog"], ["the cat sat on a mat", "a dog"])
    ds = Seq2SeqDataset(pairs, tokenizer, max_length=5, max_target_length=4)
    first, second = ds[0], ds[1]
    assert first["input_ids"] == tokenizer("the cat sat on")["input_ids"]  # 4 words + </s>
    assert len(first["input_ids"]) == 5 and first["input_ids"][-1] == tokenizer.eos_token_id
    assert first["labels"] == tokenizer(text_target="the cat sat")["input_ids"]  # cut to 4 with </s> kept
    assert second["input_ids"] == tokenizer("dog")["input_ids"] and second["labels"] == tokenizer("a dog")["input_ids"]
    assert ds.truncated == {"sources": 1, "targets": 1}
    batch = seq2seq_collator(tokenizer)([first, second])
    assert batch["input_ids"].tolist()[1] == second["input_ids"] + [tokenizer.pad_token_id] * 3
    assert batch["attention_mask"].tolist() == [[1] * 5, [1, 1, 0, 0, 0]]
    assert batch["labels"].tolist() == [first["labels"], second["labels"] + [-100]]
    with pytest.raises(DataError, match="at least 2"):
        Seq2SeqDataset(pairs, tokenizer, max_length=1, max_target_length=4)


# ------------------------------------------------------------------------------------------------ claims
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"bart": save_tiny_seq2seq(root / "bart", "bart"), "t5": save_tiny_seq2seq(root / "t5", "t5"),
            "gpt2": save_tiny_decoder(root / "gpt2"), "bert2bert": save_tiny_bert2bert(root / "bert2bert")}


def test_model_claims(models, tmp_path):
    assert claim_seq2seq_model(str(models["bart"])) == SURE
    assert claim_seq2seq_model(str(models["t5"])) == SURE
    assert claim_seq2seq_model(str(models["gpt2"])) == NO
    assert claim_seq2seq_model(str(models["bert2bert"])) == SURE  # a joined encoder and decoder generates too
    assert text_claim_model(str(models["bert2bert"])) == MAYBE  # not a classifier
    assert claim_seq2seq_model("facebook/bart-base") == MAYBE
    assert claim_seq2seq_model("minilm") == NO
    classifier = tmp_path / "bart-cls"
    classifier.mkdir()
    config = json.loads((models["bart"] / "config.json").read_text())
    config["architectures"] = ["BartForSequenceClassification"]
    (classifier / "config.json").write_text(json.dumps(config))
    assert claim_seq2seq_model(str(classifier)) == MAYBE
    (classifier / "config.json").write_text("{not json")
    assert claim_seq2seq_model(str(classifier)) == NO


def test_data_claims(tmp_path):
    good = write_pairs(tmp_path / "pairs.jsonl", n=3)
    assert claim_seq2seq_data(str(good)) == SURE
    news = write_pairs(tmp_path / "news.jsonl", n=3, source="document", target="summary")
    assert claim_seq2seq_data(str(news)) == SURE  # XSum's columns
    other = write_pairs(tmp_path / "qa.jsonl", n=3, source="question", target="answer")
    assert claim_seq2seq_data(str(other)) == MAYBE  # readable with --source-column/--target-column
    labelled = tmp_path / "reviews.csv"
    labelled.write_text("text,label\na b,pos\n")
    assert claim_seq2seq_data(str(labelled)) == MAYBE
    array = tmp_path / "pairs.json"
    array.write_text(json.dumps([{"source": "a", "target": "b"}] * 3))
    assert claim_seq2seq_data(str(array)) == SURE
    csv = tmp_path / "pairs.csv"
    csv.write_text('"source",target\na b,a\n')
    assert claim_seq2seq_data(str(csv)) == SURE
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{oops\n")
    assert claim_seq2seq_data(str(broken)) == MAYBE
    fake = tmp_path / "pairs.jsonl.gz"
    fake.write_bytes(b"not gzip")
    assert claim_seq2seq_data(str(fake)) == MAYBE
    assert claim_seq2seq_data("rotten-tomatoes") == NO
    assert claim_seq2seq_data(str(tmp_path / "missing.jsonl")) == NO


def test_load_refuses_a_decoder_only_model(models):
    with pytest.raises(DataError, match="model_type='gpt2'.* not an encoder-decoder model.*--task causal-lm"):
        load_seq2seq(str(models["gpt2"]))
    model, tok = load_seq2seq(str(models["t5"]))
    assert model.config.is_encoder_decoder and tok.pad_token_id == 0


def test_load_takes_generation_ids_from_the_config_when_generation_config_lacks_them(models):
    assert "decoder_start_token_id" not in json.loads((models["bert2bert"] / "generation_config.json").read_text())
    model, _ = load_seq2seq(str(models["bert2bert"]))
    generation = model.generation_config
    assert (generation.decoder_start_token_id, generation.eos_token_id, generation.pad_token_id) == (2, 1, 0)
    assert model.generate(input_ids=torch.tensor([[5, 6, 1]]), max_new_tokens=3)[0, 0].item() == 2


# ------------------------------------------------------------------------------------------------ generation settings
def test_generation_settings_fall_back_in_order(models):
    run = SimpleNamespace(info={"max_new_tokens": 8, "num_beams": 3, "args": {"max_new_tokens": None}})
    assert generation_settings(SimpleNamespace(max_new_tokens=5, num_beams=2), run) == (5, 2)
    assert generation_settings(SimpleNamespace(max_new_tokens=None, num_beams=None), run) == (8, 3)
    assert generation_settings(SimpleNamespace(), None) == (64, 1)
    model = SimpleNamespace(generation_config=SimpleNamespace(max_new_tokens=12, num_beams=4))
    assert generation_settings(SimpleNamespace(), None, model) == (12, 4)
    assert generation_settings(SimpleNamespace(), run, model) == (8, 3)  # a run's own settings first
    with pytest.raises(TaskError, match="--max-new-tokens must be at least 1, got 0"):
        generation_settings(SimpleNamespace(max_new_tokens=0), run)


def test_rouge_metrics_fn_decodes_generations(tokenizer):
    ids = [tokenizer(text_target=t)["input_ids"] for t in ("the cat", "a dog ran")]
    width = 6
    generated = np.array([[1] + x + [0] * (width - 1 - len(x)) for x in ids])  # decoder start, text, padding
    generated[1, -1] = -100  # the Trainer pads batches of another width with -100
    labels = np.full((2, 4), -100)
    metrics = rouge_metrics_fn(tokenizer, ["the cat", "a big dog ran"])(SimpleNamespace(predictions=generated,
                                                                                      label_ids=labels))
    assert metrics["rouge1"] == pytest.approx(100 * (1 + 6 / 7) / 2)
    assert metrics["gen_len"] == pytest.approx((3 + 4) / 2)  # </s> counted, padding and the start token not
    # references of another count than the predictions: the decoded labels are used instead
    labels = np.array([x + [-100] * (4 - len(x)) for x in ids])
    metrics = rouge_metrics_fn(tokenizer, ["unused"])(SimpleNamespace(predictions=generated, label_ids=labels))
    assert metrics["rouge1"] == 100.0


def test_rouge_reads_every_script():
    """Accented words stay whole and Chinese/Japanese characters count one by one (torchmetrics' default would
    score identical Japanese 0 and split 'Bär' into 'b r')."""
    from vf_backends_nlp.rouge import rouge_scores

    assert rouge_scores(["猫が座った"], ["猫が座った"]) == pytest.approx({"rouge1": 100, "rouge2": 100, "rougeL": 100})
    # 2 of 3 reference words, both predicted words right: F1 = 2 * 1 * 2/3 / (1 + 2/3) = 0.8; the one bigram of 2
    got = rouge_scores(["Der Bär"], ["der bär schläft"])
    assert got == pytest.approx({"rouge1": 80.0, "rouge2": 200 / 3, "rougeL": 80.0}, abs=1e-4)
