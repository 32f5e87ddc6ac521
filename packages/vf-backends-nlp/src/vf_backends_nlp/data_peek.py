"""What a data file holds, told from its first 64 KB: the text tasks' data claims read files through this module.

A claim must be cheap and must never raise, so it reads at most :data:`PEEK_BYTES` of a file (``.gz`` / ``.bz2``
decompressed) and looks at its first record only; the run reads the whole file later and reports what is wrong
with it. Used by the claims of ``text-classification`` (:mod:`vf_backends_nlp.tasks`), ``causal-lm``,
``seq2seq`` and ``question-answering``.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "pairs.jsonl"
    >>> _ = path.write_text(json.dumps({"source": "a b", "target": "b"}) + "\\n")
    >>> data_suffix(path), first_record(path)
    ('.jsonl', {'source': 'a b', 'target': 'b'})
    >>> local_text_file_or_source(str(path)) == MAYBE
    True
"""

from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path
from typing import Any

from vf_core.tasks import MAYBE, NO

from .hf_datasets import is_hf_source, looks_like_hub_dataset

__all__ = ["PEEK_BYTES", "TEXT_SUFFIXES", "data_suffix", "peek_text", "first_record", "local_text_file_or_source"]

#: the most a claim reads of a file
PEEK_BYTES = 64 * 1024
#: the text formats the text tasks read (each optionally compressed with ``.gz`` / ``.bz2``)
TEXT_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".jsonl", ".ndjson", ".json")
_COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open}


def data_suffix(path: Path) -> str:
    """The format suffix of ``path``, lower case, a compression suffix left out (``rows.CSV.gz`` -> ``.csv``)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def peek_text(path: Path) -> str:
    """The first :data:`PEEK_BYTES` of ``path`` as text (decompressed, undecodable bytes replaced, BOM dropped)."""
    opener = _COMPRESSED.get(Path(path).suffix.lower(), open)
    with opener(path, "rb") as fh:
        return fh.read(PEEK_BYTES).decode("utf-8", errors="replace").lstrip("\ufeff")


def first_record(path: Path) -> Any:
    """The first record of a data file: the first line of JSON lines, the first item of a JSON array (when it ends
    within the peek), a JSON file's single value, or a CSV / TSV header as a dict of its column names (values empty).
    Raises ``OSError`` / ``ValueError`` when the file cannot tell; callers of a claim catch them."""
    kind = data_suffix(path)
    head = peek_text(path)
    if kind in (".jsonl", ".ndjson"):
        return json.loads(next((line for line in head.splitlines() if line.strip()), ""))
    if kind == ".json":
        text = head.lstrip()
        if text.startswith("["):
            return json.JSONDecoder().raw_decode(text[1:].lstrip())[0]
        return json.loads(text)
    header = head.splitlines()[0] if head else ""
    separator = "\t" if kind in (".tsv", ".tab") or "\t" in header else ","
    return {name.strip().strip('"'): "" for name in header.split(separator)}


def local_text_file_or_source(spec: str) -> int:
    """MAYBE for a local text file of a readable format or a ``datasets`` source (a ``save_to_disk`` folder, a
    Parquet / Arrow file, a hub dataset name): the columns are read when the run starts. NO otherwise; never raises."""
    path = Path(spec).expanduser()
    try:
        if path.is_file() and data_suffix(path) in TEXT_SUFFIXES:
            return MAYBE
        return MAYBE if is_hf_source(spec) or looks_like_hub_dataset(spec) else NO
    except Exception:  # an unreadable path or an odd name: not ours
        return NO
