"""The question-answering task's parts as library calls: reading SQuAD v1.1 / v2.0 and flat data (misplaced answers
skipped and counted), windows with a stride (an answer in the second window maps to its tokens and back to its
exact text), post-processing of crafted logits (spans, lengths, v2 null answers), SQuAD EM/F1 on hand-computed
pairs, the claims, and the model loader's errors. Tiny word-level BERT tokenizers and configs; no network."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")

from vf_backends_nlp.qa_data import DataError, QAExample, load_qa_data, looks_like_qa_data  # noqa: E402
from vf_backends_nlp.qa_features import Windows, answer_tokens, build_windows  # noqa: E402
from vf_backends_nlp.qa_metrics import normalize_answer, squad_metrics  # noqa: E402
from vf_backends_nlp.qa_postprocess import best_span, predict_answers  # noqa: E402
from vf_core.errors import TaskError  # noqa: E402
from vf_core.tasks import MAYBE, NO, SURE  # noqa: E402

WORDS = [f"w{i}" for i in range(80)] + ["what", "is", "the", "capital", "of", "paris", "france", "?", ".", ","]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})


def _squad(version="1.1", impossible=False):
    ctx1 = "Paris is the capital of France."
    ctx2 = "w1 w2 w3 w4 w5 w6 w7 w8."
    qas1 = [{"id": "a", "question": "What is the capital of France?",
             "answers": [{"text": "Paris", "answer_start": 0}, {"text": "Paris", "answer_start": 0}]},
            {"id": "b", "question": "What is Paris?", "answers": [{"text": "the capital of France",
                                                                    "answer_start": 9}]}]
    qas2 = [{"id": "c", "question": "w1?", "answers": [{"text": "w5 w6", "answer_start": 12}]},
            {"id": "d", "question": "w2?", "answers": [{"text": "w8", "answer_start": 21}]}]
    if impossible:
        qas2.append({"id": "e", "question": "w9?", "answers": [], "is_impossible": True,
                     "plausible_answers": [{"text": "w3", "answer_start": 6}]})
    return {"version": version, "data": [{"title": "T1", "paragraphs": [{"context": ctx1, "qas": qas1}]},
                                         {"title": "T2", "paragraphs": [{"context": ctx2, "qas": qas2}]}]}


def _write(path, obj):
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ reading
def test_squad_v1_file_is_read_and_split(tmp_path):
    path = _write(tmp_path / "train-v1.1.json", _squad())
    data = load_qa_data(path, eval_fraction=0.25)
    assert (len(data.train), len(data.eval)) == (3, 1) and not data.null_answers and data.skipped == 0
    by_id = {ex.id: ex for ex in data.train + data.eval}
    assert set(by_id) == {"a", "b", "c", "d"}
    assert by_id["a"].answers == ["Paris", "Paris"] and by_id["a"].starts == [0, 0]
    assert by_id["b"].context[9:9 + 21] == "the capital of France"
    again = load_qa_data(path, eval_fraction=0.25)
    assert [ex.id for ex in again.eval] == [ex.id for ex in data.eval]  # the fixed split
    assert len(load_qa_data(path, eval_fraction=0.25, max_train=1).train) == 1


def test_squad_v2_unanswerable_questions(tmp_path):
    data = load_qa_data(_write(tmp_path / "dev-v2.0.json", _squad("v2.0", impossible=True)), eval_fraction=0.4)
    examples = {ex.id: ex for ex in data.train + data.eval}
    assert data.null_answers and examples["e"].answers == [] and not examples["e"].answerable
    assert examples["c"].answerable
    # a v2.0 file offers null answers even when the kept questions are all answerable
    assert load_qa_data(_write(tmp_path / "v2-all-answerable.json", _squad("v2.0"))).null_answers


def test_flat_rows_in_every_answer_shape(tmp_path):
    rows = [{"id": "q1", "question": "What is the capital of France?", "context": "Paris is the capital of France.",
             "answers": {"text": ["Paris"], "answer_start": [0]}},
            {"id": "q2", "question": "What?", "context": "It is w3.", "answers": [{"text": "w3", "answer_start": 6}]},
            {"id": "q3", "question": "Who?", "context": "Nobody knows.", "answers": {"text": [], "answer_start": []}},
            {"id": "q4", "question": "Why?", "context": "Because w7.", "answers": []}]
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_qa_data(path, eval_fraction=0.25)
    got = {ex.id: (ex.answers, ex.starts) for ex in data.train + data.eval}
    assert got == {"q1": (["Paris"], [0]), "q2": (["w3"], [6]), "q3": ([], []), "q4": ([], [])}
    assert data.null_answers  # unanswerable questions in the data
    csv = tmp_path / "qa.csv"
    csv.write_text('id,question,context,answers\nx,Where?,"In Paris, France.","{""text"": [""Paris""], '
                   '""answer_start"": [3]}"\ny,When?,Never.,\n')
    got = {ex.id: (ex.answers, ex.starts) for part in (load_qa_data(csv).train, load_qa_data(csv).eval)
           for ex in part}
    assert got == {"x": (["Paris"], [3]), "y": ([], [])}


def test_a_datasets_folder_keeps_its_splits(tmp_path):
    datasets = pytest.importorskip("datasets")

    def rows(prefix, n):
        return {"id": [f"{prefix}{i}" for i in range(n)], "question": ["What?"] * n,
                "context": [f"It is w{i}." for i in range(n)],
                "answers": [{"text": [f"w{i}"], "answer_start": [6]} for i in range(n)]}

    folder = tmp_path / "squad-folder"
    datasets.DatasetDict(train=datasets.Dataset.from_dict(rows("t", 5)),
                         validation=datasets.Dataset.from_dict(rows("v", 3))).save_to_disk(str(folder))
    assert looks_like_qa_data(str(folder))
    data = load_qa_data(str(folder))
    assert sorted(ex.id for ex in data.train) == [f"t{i}" for i in range(5)]
    assert sorted(ex.id for ex in data.eval) == ["v0", "v1", "v2"]
    assert data.eval[0].answers == [data.eval[0].context[6:-1]] and not data.null_answers


def test_misplaced_answers_are_skipped_counted_and_named(tmp_path, capsys):
    obj = _squad()
    obj["data"][1]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 11  # " w5 w6" is at 12
    obj["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["text"] = "a capital"
    data = load_qa_data(_write(tmp_path / "bad.json", obj), eval_fraction=0.25)
    assert data.skipped == 2 and data.first_skipped in ("b", "c")
    assert sorted(ex.id for ex in data.train + data.eval) == ["a", "d"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipped 2 example(s)" in err[0] and f"id {data.first_skipped!r}" in err[0]
    for qa in (q for a in obj["data"] for p in a["paragraphs"] for q in p["qas"]):
        for answer in qa["answers"]:
            answer["answer_start"] = 1
    with pytest.raises(DataError, match="no usable example left"):
        load_qa_data(_write(tmp_path / "all-bad.json", obj), warn=False)


def test_data_without_the_columns_is_one_clear_error(tmp_path):
    path = tmp_path / "reviews.jsonl"
    path.write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n')
    with pytest.raises(DataError, match="needs 'question', 'context' and 'answers' columns.*missing: question, context,"
                                        " answers; its columns: text, label"):
        load_qa_data(path)
    path = tmp_path / "odd.jsonl"
    path.write_text('{"question": "q", "context": "c", "answers": 3}\n{"question": "q", "context": "c", "answers": []}\n')
    with pytest.raises(DataError, match="odd.jsonl, line 1: 'answers' is a int"):
        load_qa_data(path, eval_fraction=0.5)


def test_recognising_qa_data_never_raises(tmp_path):
    assert looks_like_qa_data(str(_write(tmp_path / "squad.json", _squad())))
    flat = tmp_path / "flat.jsonl"
    flat.write_text(json.dumps({"question": "q", "context": "c", "answers": []}) + "\n")
    assert looks_like_qa_data(str(flat))
    array = tmp_path / "flat.json"
    array.write_text(json.dumps([{"context": "c", "question": "q", "answers": {"text": [], "answer_start": []}}]))
    assert looks_like_qa_data(str(array))
    other = tmp_path / "reviews.jsonl"
    other.write_text('{"text": "good", "label": 1}\n')
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\xff\xfe{not json")
    assert not any(looks_like_qa_data(str(p)) for p in (other, garbage, tmp_path / "missing.json", tmp_path))


# ------------------------------------------------------------------------------------------------ windows
def test_answer_tokens_from_offsets():
    offsets = [None, None, None, (0, 5), (6, 8), (9, 12), (12, 13), None]
    assert answer_tokens(offsets, 0, 5) == (3, 3)
    assert answer_tokens(offsets, 6, 12) == (4, 5)
    assert answer_tokens(offsets, 9, 13) == (5, 6)
    assert answer_tokens(offsets, 0, 14) is None  # ends past the window
    assert answer_tokens([None, (20, 22), (23, 25)], 10, 21) is None  # starts before it


def test_an_answer_in_the_second_window_maps_to_its_tokens_and_back(tokenizer):
    context = " ".join(f"w{i}" for i in range(40)) + " . Paris , France ."
    start = context.index("Paris , France")
    example = QAExample("x", "what is the capital of france ?", context, ["Paris , France"], [start])
    windows = build_windows(tokenizer, [example], max_length=32, stride=8)
    assert len(windows) >= 2 and set(windows.example_index) == {0}
    question_tokens = 7 + 2  # [CLS] what is the capital of france ? [SEP]
    for w, feature in enumerate(windows.features):
        assert len(feature["input_ids"]) <= 32 and windows.cls_index[w] == 0
        assert all(span is None for span in windows.offsets[w][:question_tokens])
    holding = [w for w, f in enumerate(windows.features) if f["start_positions"] != 0]
    assert holding and holding[0] >= 1  # not in the first window
    for w, feature in enumerate(windows.features):
        if w not in holding:
            assert (feature["start_positions"], feature["end_positions"]) == (0, 0)  # CLS
    w = holding[0]
    s, e = windows.features[w]["start_positions"], windows.features[w]["end_positions"]
    assert tokenizer.decode(windows.features[w]["input_ids"][s:e + 1]) == "paris, france"
    # consecutive windows share `stride` context tokens
    first_ctx = [span for span in windows.offsets[0] if span is not None]
    second_ctx = [span for span in windows.offsets[1] if span is not None]
    assert first_ctx[-8:] == second_ctx[:8]
    # logits peaked on those tokens (in that window only) read back the exact text of the context
    length = max(len(f["input_ids"]) for f in windows.features)
    start_logits = np.full((len(windows), length), -5.0)
    end_logits = np.full((len(windows), length), -5.0)
    start_logits[w, s], end_logits[w, e] = 5.0, 5.0
    assert predict_answers(start_logits, end_logits, windows, [example]) == ["Paris , France"]


def test_windows_errors(tokenizer):
    example = QAExample("x", "what ?", "w1 w2 w3", ["w2"], [3])
    with pytest.raises(TaskError, match="--doc-stride 30 leaves no room"):
        build_windows(tokenizer, [example], max_length=32, stride=30)
    long_question = QAExample("y", " ".join(["what"] * 50), "w1 w2 w3 w4", ["w4"], [9])
    windows = build_windows(tokenizer, [long_question], max_length=24, stride=4)  # the question is cut
    assert windows.features[0]["start_positions"] > 0 and len(windows.features[0]["input_ids"]) <= 24


# ------------------------------------------------------------------------------------------------ answers
def _two_windows():
    """One example over two windows of 6 tokens: [CLS] q [SEP] c c [SEP]; context 'aa bb cc dd'."""
    example = QAExample("x", "q", "aa bb cc dd")
    offsets = [[None, None, None, (0, 2), (3, 5), None], [None, None, None, (6, 8), (9, 11), None]]
    return example, Windows([{}, {}], [0, 0], offsets, [0, 0])


def test_best_span_over_windows_and_its_limits():
    example, windows = _two_windows()
    start = np.array([[1.0, 9.0, 0.0, 2.0, 0.5, 9.0], [0.0, 0.0, 0.0, 3.0, 0.0, 0.0]])
    end = np.array([[1.0, 9.0, 0.0, 0.0, 2.5, 9.0], [0.0, 0.0, 0.0, 1.0, 0.5, 0.0]])
    found = best_span(start, end, windows, [example])[0]
    # window 0: 'aa bb' 2+2.5 = 4.5 beats window 1's 'cc' 3+1 = 4; question/special tokens never count
    assert (found.text, found.score, found.start, found.end) == ("aa bb", 4.5, 0, 5)
    assert found.null_score == 0.0  # min(1+1, 0+0)
    assert predict_answers(start, end, windows, [example], max_answer_length=1) == ["cc"]  # 'aa bb' is 2 tokens
    assert predict_answers(start, end, windows, [example], n_best=1) == ["cc"]  # window 0's best start/end
    # an end before its start is no candidate
    start2 = np.array([[0, 0, 0, 1.0, 5.0, 0], [-9.0] * 6])
    end2 = np.array([[0, 0, 0, 5.0, 0.5, 0], [-9.0] * 6])
    # (start bb, end aa) = 10 is excluded; 'aa' = 1 + 5 = 6 beats 'bb' = 5.5 and 'aa bb' = 1.5
    assert predict_answers(start2, end2, windows, [example]) == ["aa"]


def test_null_answers_only_when_asked_and_beyond_the_threshold():
    example, windows = _two_windows()
    start = np.array([[4.0, 0, 0, 2.0, 0, 0], [3.0, 0, 0, 1.0, 0, 0]])
    end = np.array([[4.0, 0, 0, 1.0, 0, 0], [3.0, 0, 0, 0.5, 0, 0]])
    # null = min(8, 6) = 6; best span 'aa' = 3: 6 - 3 = 3
    assert best_span(start, end, windows, [example])[0].null_score == 6.0
    assert predict_answers(start, end, windows, [example]) == ["aa"]  # v1.1: always a span
    assert predict_answers(start, end, windows, [example], null_answers=True) == [""]
    assert predict_answers(start, end, windows, [example], null_answers=True, null_threshold=3.0) == ["aa"]
    assert predict_answers(start, end, windows, [example], null_answers=True, null_threshold=2.9) == [""]
    # logits padded past a window's tokens (a longer batch) are never read
    padded_start = np.concatenate([start, np.full((2, 3), 50.0)], axis=1)
    padded_end = np.concatenate([end, np.full((2, 3), 50.0)], axis=1)
    assert predict_answers(padded_start, padded_end, windows, [example]) == ["aa"]


# ------------------------------------------------------------------------------------------------ metrics
def test_squad_metrics_against_hand_computed_values():
    assert normalize_answer("The  Eiffel-Tower, an icon!") == "eiffeltower icon"
    m = squad_metrics(["the Eiffel Tower!", "Paris", "a blue whale", ""],
                      [["Eiffel Tower"], ["in Paris, France"], ["blue whale", "whale"], ["x"]])
    # EM: 1, 0, 1, 0 -> 50; F1: 1, 2*(1*1/3)/(1+1/3) = 0.5, 1, 0 -> 62.5
    assert m == pytest.approx({"exact_match": 50.0, "f1": 62.5})
    # partial overlap, best over gold answers: pred 'big red dog' vs 'red dog runs' P=2/3 R=2/3 -> F1 2/3
    assert squad_metrics(["big red dog"], [["cat", "red dog runs"]])["f1"] == pytest.approx(200 / 3)
    v2 = squad_metrics(["Paris", "", "the", "London"], [["Paris"], [], [], []])
    # answerable: EM 100; unanswerable: '' and 'the' (normalises to nothing) right, 'London' wrong
    assert v2 == pytest.approx({"exact_match": 75.0, "f1": 75.0, "has_ans_exact_match": 100.0, "has_ans_f1": 100.0,
                                "no_ans_exact_match": 200 / 3, "no_ans_f1": 200 / 3, "has_ans_total": 1,
                                "no_ans_total": 3})
    assert squad_metrics([""], [["Paris"]]) == {"exact_match": 0.0, "f1": 0.0}
    with pytest.raises(ValueError):
        squad_metrics(["a"], [])


# ------------------------------------------------------------------------------------------------ task, models
def _model_dir(path, architectures, model_type="bert"):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"architectures": architectures, "model_type": model_type}))
    return str(path)


def test_claims(tmp_path):
    from vf_backends_nlp.qa_task import QUESTION_ANSWERING, claim_data, claim_model

    assert claim_model(_model_dir(tmp_path / "qa", ["BertForQuestionAnswering"])) == SURE
    assert claim_model(_model_dir(tmp_path / "enc", ["BertModel"])) == MAYBE
    assert claim_model(_model_dir(tmp_path / "lm", ["GPT2LMHeadModel"], "gpt2")) == NO
    assert claim_model(_model_dir(tmp_path / "llama", ["LlamaForCausalLM"], "llama")) == NO
    assert claim_model("minilm") == MAYBE and claim_model("org/some-model") == MAYBE
    assert claim_model(str(tmp_path / "missing")) == NO
    assert claim_data(str(_write(tmp_path / "squad.json", _squad()))) == SURE
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("text,label\ngood,1\n")
    assert claim_data(str(reviews)) == MAYBE and claim_data("rotten-tomatoes") == NO
    assert QUESTION_ANSWERING.headline == "eval_f1" and QUESTION_ANSWERING.new_head and not QUESTION_ANSWERING.generates


def test_a_model_without_a_question_answering_class_is_one_clear_error(tmp_path):
    from transformers import BertGenerationConfig, BertGenerationEncoder

    d = tmp_path / "bert-generation"
    BertGenerationEncoder(BertGenerationConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1,
                                               num_attention_heads=4, intermediate_size=64)).save_pretrained(d)
    from vf_backends_nlp.qa_runner import load_question_answering

    with pytest.raises(DataError, match="model_type='bert-generation'.* has no question-answering class"):
        load_question_answering(str(d))
