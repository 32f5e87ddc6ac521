"""Text data through Hugging Face ``datasets``: a folder written by ``save_to_disk``, a Parquet or Arrow file, or a
dataset named on the hub (``datasets.load_dataset``, the local cache first; ``HF_HUB_OFFLINE=1``: the cache only).

:func:`read_hf_source` turns any of them into rows (one ``dict`` per example), their column names and the
splits they came with, which :func:`vf_backends_nlp.data.load_text_dataset` then reads as it reads a CSV file:
the same column defaults, label parsing and task recognition. A source with a ``train`` split and a
``validation`` (or else ``test``) split is used as it is; anything else gets the fixed split. A ``ClassLabel``
column gives its class names, in their order.

``datasets`` is imported only here, when such a source is given (``pip install "vf-backends-nlp[datasets]"``).

Example (a folder written by ``save_to_disk``)::

    >>> from datasets import Dataset, DatasetDict                              # doctest: +SKIP
    >>> DatasetDict(train=Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}),
    ...             validation=Dataset.from_dict({"text": ["c"], "label": [1]})).save_to_disk("reviews")
    >>> read_hf_source("reviews").splits                                        # doctest: +SKIP
    ['train', 'validation']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from vf_core.assets import DataError

from vf_core.hub import offline

__all__ = ["HFSource", "read_hf_source", "is_hf_source", "looks_like_hub_dataset"]

_FILE_SUFFIXES = (".parquet", ".arrow")


@dataclass
class HFSource:
    """What a ``datasets`` source holds: per split, its rows; the column names; the class names of a
    ``ClassLabel`` column, by column."""

    rows: dict[str, list[dict]]
    columns: list[str]
    class_names: dict[str, list[str]]

    @property
    def splits(self) -> list[str]:
        return list(self.rows)

    def given_split(self) -> Optional[tuple[str, str]]:
        """``(train split, eval split)`` when the source comes split (train plus validation or test)."""
        if "train" not in self.rows:
            return None
        for name in ("validation", "valid", "dev", "test"):
            if name in self.rows:
                return "train", name
        return None


def _is_saved_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def looks_like_hub_dataset(spec: str) -> bool:
    """``name`` or ``org/name`` that is no local path: a dataset on the hub (or in its local cache)."""
    text = str(spec)
    suffixes = [s.lower() for s in Path(text).suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".csv", ".tsv", ".tab", ".txt", ".jsonl", ".ndjson", ".json",
                                     *_FILE_SUFFIXES):
        return False  # a file name: a missing file is reported as one
    return (not Path(text).expanduser().exists() and text.count("/") <= 1
            and not text.startswith((".", "/", "~")) and all(part for part in text.split("/"))
            and all(c.isalnum() or c in "-_./" for c in text))


def is_hf_source(spec: str) -> bool:
    """Whether ``spec`` is a ``save_to_disk`` folder or a Parquet/Arrow file (hub names are decided later)."""
    path = Path(str(spec)).expanduser()
    return _is_saved_folder(path) or (path.is_file() and path.suffix.lower() in _FILE_SUFFIXES)


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise DataError("reading Parquet/Arrow files, save_to_disk folders or hub datasets needs the datasets"
                        " library: pip install 'vf-backends-nlp[datasets]'") from None
    return datasets


def read_hf_source(spec: str, *, config: Optional[str] = None, split: Optional[str] = None) -> HFSource:
    """Read ``spec`` (a ``save_to_disk`` folder, a ``.parquet``/``.arrow`` file, or a hub dataset name with its
    ``config`` and ``split``) into an :class:`HFSource`; one clear :class:`DataError` for what cannot be read."""
    datasets = _import_datasets()
    path = Path(str(spec)).expanduser()
    try:
        if _is_saved_folder(path):
            loaded = datasets.load_from_disk(str(path))
        elif path.is_file() and path.suffix.lower() == ".parquet":
            loaded = datasets.Dataset.from_parquet(str(path))
        elif path.is_file() and path.suffix.lower() == ".arrow":
            loaded = datasets.Dataset.from_file(str(path))
        else:
            loaded = datasets.load_dataset(str(spec), config, split=split)
    except DataError:
        raise
    except (FileNotFoundError, ConnectionError, ValueError, OSError) as exc:
        hint = (" (HF_HUB_OFFLINE=1: only the local datasets cache is read; load it once where the hub is reachable)"
                if offline("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") else "")
        raise DataError(f"data {str(spec)!r}: cannot be read as a Hugging Face dataset"
                        f" ({type(exc).__name__}: {' '.join(str(exc).split())[:240]}){hint}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split is not None:
            if split not in loaded:
                raise DataError(f"data {str(spec)!r} has no split {split!r}; its splits: {', '.join(loaded)}")
            parts = {split: loaded[split]}
        else:
            parts = dict(loaded)
    else:
        parts = {split or "train": loaded}
    first = next(iter(parts.values()))
    names = {c: list(f.names) for c, f in first.features.items() if isinstance(f, datasets.ClassLabel)}
    rows = {}
    for name, ds in parts.items():
        table = ds.to_list()
        for column, labels in names.items():  # class ids become their names, kept in their declared order
            for row in table:
                value = row.get(column)
                if isinstance(value, int) and 0 <= value < len(labels):
                    row[column] = labels[value]
        rows[name] = table
    return HFSource(rows, list(first.column_names), names)

