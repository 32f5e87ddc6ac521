"""Rows of a local file or a ``datasets`` source, split into train and eval the same way for every text task.

:func:`load_records` reads JSON lines / JSON / CSV / TSV (optionally ``.gz``/``.bz2``, :func:`vf_backends_nlp.data.read_table`),
a ``save_to_disk`` folder, a Parquet or Arrow file, or a hub dataset name (:mod:`vf_backends_nlp.hf_datasets`)
into :class:`Records`: the rows as dicts, with the line (or row number) each came from, so that a bad example
can be named. A source that comes split (train plus validation or test) keeps its splits; anything else gets
classification's fixed split (:func:`vf_core.assets.train_eval_split`, ``eval_fraction`` and ``seed``), then
``max_train`` / ``max_eval`` keep the first rows of each (a fixed random subsample).

Example::

    >>> from vf_backends_nlp.records import load_records
    >>> train, ev = load_records("chats.jsonl", max_eval=100)        # doctest: +SKIP
    >>> train.rows[0]["messages"][0]["role"], train.lines[0]         # doctest: +SKIP
    ('user', 3)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from vf_core.assets import DataError, train_eval_split

from .data import read_table
from .hf_datasets import is_hf_source, looks_like_hub_dataset, read_hf_source

__all__ = ["Records", "load_records", "pick_column", "DataError"]


@dataclass
class Records:
    """Rows of one split, the columns of the source, and where each row came from (``source``, line)."""

    rows: list[dict]
    columns: list[str]
    source: str
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, i: int) -> str:
        """``"FILE, line N"`` of row ``i``, for error messages."""
        return f"{self.source}, {'line' if Path(self.source).suffix.lower() in _LINE_FILES else 'row'} {self.lines[i]}"


_LINE_FILES = (".jsonl", ".ndjson", ".csv", ".tsv", ".tab", ".txt", ".json", ".gz", ".bz2")


def pick_column(given: Optional[str], defaults: Sequence[str], columns: Sequence[str], what: str,
                source: str, option: str) -> str:
    """The column to read: ``given`` (it must exist), else the first of ``defaults`` present; a clear
    :class:`DataError` naming the columns there are and the option that names one (``--text-column``)."""
    if given is not None:
        if given not in columns:
            raise DataError(f"{source}: no column {given!r} ({option}); its columns: {', '.join(map(str, columns))}")
        return given
    for name in defaults:
        if name in columns:
            return name
    raise DataError(f"{source}: no {what} column (looked for {', '.join(defaults)}); its columns:"
                    f" {', '.join(map(str, columns)) or '(none)'}; name one with {option}")


def load_records(spec: Union[str, Path], *, eval_fraction: float = 0.2, seed: int = 0,
                 max_train: Optional[int] = None, max_eval: Optional[int] = None, data_config: Optional[str] = None,
                 split: Optional[str] = None) -> tuple[Records, Records]:
    """``(train, eval)`` :class:`Records` of ``spec`` (see the module docstring); errors are :class:`DataError`."""
    text = str(spec)
    if is_hf_source(text) or looks_like_hub_dataset(text):
        source = read_hf_source(text, config=data_config, split=split)
        pair = source.given_split()
        parts = [source.rows[name] for name in pair] if pair else list(source.rows.values())
        rows = [row for part in parts for row in part]
        columns, name = source.columns, text
        lines = list(range(1, len(rows) + 1))
        given = len(parts[0]) if pair else None
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise DataError(f"data {text!r}: no such file, save_to_disk folder or dataset name")
        rows, columns, lines = read_table(path)
        name, given = str(path), None
    if not rows:
        raise DataError(f"data {text!r} holds no examples")
    if given is not None:
        train_idx, eval_idx = list(range(given)), list(range(given, len(rows)))
        random.Random(seed).shuffle(train_idx)
        random.Random(seed).shuffle(eval_idx)
    else:
        train_idx, eval_idx = train_eval_split(len(rows), eval_fraction=eval_fraction, seed=seed)
    return tuple(Records([rows[i] for i in idx[:cap]], columns, name, [lines[i] for i in idx[:cap]])
                 for idx, cap in ((train_idx, max_train), (eval_idx, max_eval)))
