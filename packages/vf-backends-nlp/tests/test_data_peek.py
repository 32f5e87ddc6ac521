"""The claims' view of a data file (vf_backends_nlp.data_peek): first records of every format, never raising."""

import bz2
import gzip
import json

import pytest

from vf_backends_nlp.data_peek import data_suffix, first_record, local_text_file_or_source
from vf_core.tasks import MAYBE, NO


@pytest.mark.parametrize("name, expected", [("a.CSV", ".csv"), ("a.jsonl.gz", ".jsonl"), ("a.tsv.bz2", ".tsv"),
                                            ("a.b.json", ".json"), ("noext", "")])
def test_data_suffix_leaves_compression_out(name, expected, tmp_path):
    assert data_suffix(tmp_path / name) == expected


def test_first_record_of_each_format(tmp_path):
    rows = [{"source": "a", "target": "b"}, {"source": "c", "target": "d"}]
    (tmp_path / "r.jsonl").write_text("\n" + "\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "r.json").write_text(json.dumps(rows))
    (tmp_path / "o.json").write_text(json.dumps({"data": rows}))
    with gzip.open(tmp_path / "r.csv.gz", "wt", encoding="utf-8") as fh:
        fh.write('\ufeff"source",target\na,b\n')
    with bz2.open(tmp_path / "r.tsv.bz2", "wt", encoding="utf-8") as fh:
        fh.write("source\ttarget\na\tb\n")
    assert first_record(tmp_path / "r.jsonl") == rows[0]
    assert first_record(tmp_path / "r.json") == rows[0]
    assert first_record(tmp_path / "o.json") == {"data": rows}
    assert first_record(tmp_path / "r.csv.gz") == {"source": "", "target": ""}
    assert first_record(tmp_path / "r.tsv.bz2") == {"source": "", "target": ""}


def test_first_record_of_a_broken_file_raises_value_error(tmp_path):
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError):
        first_record(tmp_path / "bad.jsonl")


def test_local_text_file_or_source(tmp_path):
    (tmp_path / "t.txt").write_text("x\n")
    (tmp_path / "img.png").write_bytes(b"\x89PNG")
    assert local_text_file_or_source(str(tmp_path / "t.txt")) == MAYBE
    assert local_text_file_or_source(str(tmp_path / "img.png")) == NO
    assert local_text_file_or_source(str(tmp_path / "missing.csv")) == NO
