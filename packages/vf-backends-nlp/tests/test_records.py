"""records.py: rows of any text task's data, the fixed split, the given splits of a datasets folder, and the
errors that name the file, the row and the option."""

from __future__ import annotations

import json

import pytest
from vf_core.assets import DataError, train_eval_split

from vf_backends_nlp.records import load_records, pick_column


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_fixed_split_is_classifications_and_names_lines(tmp_path):
    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(20)]
    train, ev = load_records(_jsonl(tmp_path / "d.jsonl", rows), eval_fraction=0.25, seed=3)
    train_idx, eval_idx = train_eval_split(20, eval_fraction=0.25, seed=3)
    assert [r["prompt"] for r in train.rows] == [f"p{i}" for i in train_idx]
    assert [r["prompt"] for r in ev.rows] == [f"p{i}" for i in eval_idx]
    assert ev.where(0) == f"{tmp_path / 'd.jsonl'}, line {eval_idx[0] + 1}"
    capped, _ = load_records(tmp_path / "d.jsonl", eval_fraction=0.25, seed=3, max_train=4)
    assert capped.rows == train.rows[:4]


def test_a_datasets_folder_keeps_its_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(6)]}),
                          "validation": datasets.Dataset.from_dict({"text": ["v0", "v1"]})}).save_to_disk(str(folder))
    train, ev = load_records(str(folder))
    assert sorted(r["text"] for r in train.rows) == [f"t{i}" for i in range(6)]
    assert sorted(r["text"] for r in ev.rows) == ["v0", "v1"]


def test_columns_and_errors(tmp_path):
    columns = ["source", "summary"]
    assert pick_column(None, ("target", "summary"), columns, "target", "f.jsonl", "--target-column") == "summary"
    with pytest.raises(DataError, match=r"no column 'tgt' \(--target-column\); its columns: source, summary"):
        pick_column("tgt", ("target",), columns, "target", "f.jsonl", "--target-column")
    with pytest.raises(DataError, match="name one with --text-column"):
        pick_column(None, ("text",), columns, "text", "f.jsonl", "--text-column")
    with pytest.raises(DataError, match="no such file"):
        load_records(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="no examples"):
        load_records(tmp_path / "empty.jsonl")
