"""`vectorfit generate --input FILE`: the prompts of a text, JSON-lines, JSON or CSV file, and one clear error for a
file that holds none."""

from __future__ import annotations

import argparse
import json

import pytest

from vectorfit.commands import _prompts
from vectorfit.errors import CLIError


def _read(path):
    return _prompts(argparse.Namespace(prompt=None, input=str(path)))


def test_every_file_kind_gives_its_prompts(tmp_path):
    (tmp_path / "p.txt").write_text("first prompt\n\nsecond prompt\n")
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n{"source": "b", "id": 2}\n')
    (tmp_path / "p.json").write_text(json.dumps(["a", {"text": "b"}]))
    (tmp_path / "p.csv").write_text('id,prompt\n1,"a, with a comma"\n2,b\n')
    (tmp_path / "p.tsv").write_text("source\tid\na\t1\n")
    assert _read(tmp_path / "p.txt") == ["first prompt", "second prompt"]
    assert _read(tmp_path / "p.jsonl") == ["a", "b"]
    assert _read(tmp_path / "p.json") == ["a", "b"]
    assert _read(tmp_path / "p.csv") == ["a, with a comma", "b"]
    assert _read(tmp_path / "p.tsv") == ["a"]
    assert _prompts(argparse.Namespace(prompt=["x", "y"], input=None)) == ["x", "y"]


def test_a_file_without_prompts_is_one_clear_error(tmp_path):
    (tmp_path / "q.csv").write_text("id,question\n1,a\n")
    (tmp_path / "q.json").write_text('{"prompt": "a"}')
    with pytest.raises(CLIError, match=r"q.csv: row 2 has no 'prompt', 'source' or 'text'"):
        _read(tmp_path / "q.csv")
    with pytest.raises(CLIError, match="holds an array"):
        _read(tmp_path / "q.json")
    with pytest.raises(CLIError, match="one of the two"):
        _prompts(argparse.Namespace(prompt=["x"], input=str(tmp_path / "q.csv")))
