"""Text data through Hugging Face ``datasets``: save_to_disk folders (their own splits kept), Parquet and Arrow
files (the fixed split, as a CSV of the same rows), ClassLabel names, split selection, and clear errors."""

from __future__ import annotations

import csv

import pytest

datasets = pytest.importorskip("datasets")

from vf_backends_nlp.data import load_text_dataset  # noqa: E402
from vf_backends_nlp.hf_datasets import looks_like_hub_dataset  # noqa: E402
from vf_core.assets import DataError  # noqa: E402

TEXTS = [f"review number {i} was {'good' if i % 3 else 'bad'}" for i in range(30)]
LABELS = [1 if i % 3 else 0 for i in range(30)]


def _dataset(n0: int = 0, n1: int = 30, class_label: bool = True):
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"]) if class_label
                                  else datasets.Value("int64")})
    return datasets.Dataset.from_dict({"text": TEXTS[n0:n1], "label": LABELS[n0:n1]}, features=features)


def test_save_to_disk_with_its_own_splits(tmp_path):
    folder = tmp_path / "reviews"
    datasets.DatasetDict(train=_dataset(0, 20), validation=_dataset(20, 26), test=_dataset(26, 30)).save_to_disk(folder)
    train, ev = load_text_dataset(str(folder))
    assert sorted(train.texts) == sorted(TEXTS[:20]) and sorted(ev.texts) == sorted(TEXTS[20:26])
    assert train.label_names == ["neg", "pos"]  # the ClassLabel's names, in their order
    assert all(train.labels[i] == LABELS[TEXTS.index(t)] for i, t in enumerate(train.texts))
    capped, _ = load_text_dataset(str(folder), max_train=5)
    assert len(capped) == 5 and set(capped.texts) <= set(TEXTS[:20])
    only_test, ev2 = load_text_dataset(str(folder), split="test")  # one split: the fixed split within it
    assert sorted(only_test.texts + ev2.texts) == sorted(TEXTS[26:])
    with pytest.raises(DataError, match="no split 'dev'; its splits: train, validation, test"):
        load_text_dataset(str(folder), split="dev")


@pytest.mark.parametrize("kind", ["parquet", "arrow", "save_to_disk"])
def test_single_tables_get_the_fixed_split_like_a_csv(tmp_path, kind):
    path = tmp_path / f"reviews.{kind}"
    ds = _dataset(class_label=False)
    if kind == "parquet":
        ds.to_parquet(str(path))
    elif kind == "arrow":
        ds.save_to_disk(tmp_path / "arrow")
        path = next((tmp_path / "arrow").glob("*.arrow"))
    else:
        ds.save_to_disk(path)
    reference = tmp_path / "reviews.csv"
    with open(reference, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(zip(TEXTS, LABELS))
    got, want = load_text_dataset(str(path)), load_text_dataset(str(reference))
    for a, b in zip(got, want):
        assert a.texts == b.texts and a.labels == b.labels and a.label_names == b.label_names == ["0", "1"]


def test_missing_column_and_missing_hub_dataset(tmp_path, monkeypatch):
    path = tmp_path / "reviews.parquet"
    _dataset().to_parquet(str(path))
    with pytest.raises(DataError, match="column 'stars' does not exist"):
        load_text_dataset(str(path), label_column="stars")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(DataError, match="no-such-user/no-such-dataset.*cannot be read as a Hugging Face dataset"):
        load_text_dataset("no-such-user/no-such-dataset")


def test_what_reads_as_a_hub_name():
    assert looks_like_hub_dataset("imdb") and looks_like_hub_dataset("stanfordnlp/sst2")
    assert not looks_like_hub_dataset("missing.csv") and not looks_like_hub_dataset("a/b/c")
    assert not looks_like_hub_dataset("./local") and not looks_like_hub_dataset("data.parquet")
