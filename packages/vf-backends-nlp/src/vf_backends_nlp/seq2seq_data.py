"""The ``seq2seq`` task's data: source and target texts (summarisation, translation), tokenised for an
encoder-decoder model.

* :func:`load_pairs` reads any source :func:`vf_backends_nlp.records.load_records` reads (JSON lines, JSON, CSV,
  TSV, a ``save_to_disk`` folder, Parquet/Arrow, a hub dataset name) with the same fixed train/eval split, and picks
  the columns: ``--source-column`` (default: ``source``, then ``document``, ``article``, ``text``, ``input``) and
  ``--target-column`` (default: ``target``, then ``summary``, ``highlights``, ``output``). A row whose source or
  target is not a string is a :class:`DataError` naming its file and line.
* :class:`Seq2SeqDataset` tokenises the sources to ``max_length`` tokens and the targets (``text_target=``) to
  ``max_target_length``, cutting off the end of longer texts (the tokenizer's end-of-sequence token stays); how
  many were cut is counted (:attr:`Seq2SeqDataset.truncated`).
* :func:`seq2seq_collator` pads each batch: inputs with the pad token, labels with -100 (ignored by the loss).

Example::

    >>> from vf_backends_nlp.seq2seq_data import load_pairs, Seq2SeqDataset
    >>> train, ev = load_pairs("news.jsonl", target_column="summary")        # doctest: +SKIP
    >>> ds = Seq2SeqDataset(train, tokenizer, max_length=512, max_target_length=64)   # doctest: +SKIP
    >>> sorted(ds[0])                                                         # doctest: +SKIP
    ['attention_mask', 'input_ids', 'labels']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from vf_core.tasks import NO, SURE

from .data import BUILTIN_TEXT_DATASETS
from .data_peek import TEXT_SUFFIXES, data_suffix, first_record, local_text_file_or_source
from .records import DataError, Records, load_records, pick_column

__all__ = ["SOURCE_COLUMNS", "TARGET_COLUMNS", "Pairs", "load_pairs", "pairs_of", "Seq2SeqDataset",
           "seq2seq_collator", "claim_seq2seq_data", "DataError"]

#: the source column looked for when ``--source-column`` is not given, in order
SOURCE_COLUMNS = ("source", "document", "article", "text", "input")
#: the target column looked for when ``--target-column`` is not given, in order
TARGET_COLUMNS = ("target", "summary", "highlights", "output")


def claim_seq2seq_data(spec: str) -> int:
    """SURE for a local JSON-lines / JSON / CSV / TSV file whose first record (or header) has a source and a target
    column of the defaults (``source`` and ``target``, ``document`` and ``summary``, ``article`` and
    ``highlights``...); MAYBE for another text file or a ``datasets`` source (the columns are read when the run
    starts and can be named); NO for the built-in classification datasets and anything else. Reads at most 64 KB;
    never raises."""
    if spec in BUILTIN_TEXT_DATASETS:
        return NO
    path = Path(spec).expanduser()
    if path.is_file() and data_suffix(path) in TEXT_SUFFIXES:
        try:
            row = first_record(path)
        except Exception:  # unreadable, not JSON, a broken archive: the run will say what is wrong
            row = None
        if isinstance(row, dict) and any(c in row for c in SOURCE_COLUMNS) and any(c in row for c in TARGET_COLUMNS):
            return SURE
    return local_text_file_or_source(spec)


@dataclass
class Pairs:
    """Source and target texts of one split, and the columns they came from."""

    sources: list[str]
    targets: list[str]
    source_column: str = "source"
    target_column: str = "target"
    origin: list[str] = field(default_factory=list)  #: "FILE, line N" of each pair

    def __len__(self) -> int:
        return len(self.sources)

    def head(self, n: Optional[int]) -> "Pairs":
        """The first ``n`` pairs (all when ``n`` is None)."""
        if n is None:
            return self
        return Pairs(self.sources[:n], self.targets[:n], self.source_column, self.target_column, self.origin[:n])


def pairs_of(records: Records, source_column: Optional[str] = None, target_column: Optional[str] = None) -> Pairs:
    """The :class:`Pairs` of ``records`` (columns as given, else the defaults); a clear :class:`DataError` for a
    missing column or a row whose value is not a string."""
    src = pick_column(source_column, SOURCE_COLUMNS, records.columns, "source", records.source, "--source-column")
    tgt = pick_column(target_column, TARGET_COLUMNS, records.columns, "target", records.source, "--target-column")
    if src == tgt:
        raise DataError(f"{records.source}: the source and target columns are both {src!r}; name them apart with"
                        " --source-column and --target-column")
    sources, targets = [], []
    for i, row in enumerate(records.rows):
        for column, out in ((src, sources), (tgt, targets)):
            value = row.get(column) if isinstance(row, dict) else None
            if not isinstance(value, str):
                what = "missing" if value is None else f"a {type(value).__name__}, not a string"
                raise DataError(f"{records.where(i)}: the {column!r} value is {what}; every example needs a source"
                                " and a target text")
            out.append(value)
    origin = [records.where(i) for i in range(len(records))] if records.lines else []
    return Pairs(sources, targets, src, tgt, origin)


def load_pairs(spec, *, source_column: Optional[str] = None, target_column: Optional[str] = None,
               eval_fraction: float = 0.2, seed: int = 0, max_train: Optional[int] = None,
               max_eval: Optional[int] = None, data_config: Optional[str] = None,
               split: Optional[str] = None) -> tuple[Pairs, Pairs]:
    """``(train, eval)`` :class:`Pairs` of ``spec`` (see the module docstring); errors are :class:`DataError`."""
    train, ev = load_records(spec, eval_fraction=eval_fraction, seed=seed, max_train=max_train, max_eval=max_eval,
                             data_config=data_config, split=split)
    return pairs_of(train, source_column, target_column), pairs_of(ev, source_column, target_column)


def _tokenise(tokenizer, texts: list[str], max_length: int, *, target: bool) -> tuple[list[list[int]], list, int]:
    """``(input_ids, attention_masks, number cut)``: texts longer than ``max_length`` tokens are tokenised again
    with truncation (the tokenizer keeps its special tokens)."""
    key = "text_target" if target else "text"
    enc = tokenizer(**{key: texts})
    ids, masks = list(enc["input_ids"]), list(enc.get("attention_mask") or [[1] * len(x) for x in enc["input_ids"]])
    long = [i for i, x in enumerate(ids) if len(x) > max_length]
    if long:
        cut = tokenizer(**{key: [texts[i] for i in long]}, truncation=True, max_length=max_length)
        for j, i in enumerate(long):
            ids[i] = cut["input_ids"][j]
            if "attention_mask" in cut:
                masks[i] = cut["attention_mask"][j]
    return ids, masks, len(long)


class Seq2SeqDataset:
    """Tokenised :class:`Pairs` as the ``Seq2SeqTrainer`` wants them: ``input_ids``, ``attention_mask`` and
    ``labels`` per example (unpadded; :func:`seq2seq_collator` pads each batch).

    Attributes:
        truncated: ``{"sources": n, "targets": m}``, how many texts were cut to fit.
    """

    def __init__(self, pairs: Pairs, tokenizer, max_length: int, max_target_length: int) -> None:
        if max_length < 2 or max_target_length < 2:
            raise DataError(f"--max-length ({max_length}) and the target length ({max_target_length}) must be at"
                            " least 2 tokens")
        self.pairs = pairs
        ids, masks, cut_src = _tokenise(tokenizer, pairs.sources, max_length, target=False)
        labels, _, cut_tgt = _tokenise(tokenizer, pairs.targets, max_target_length, target=True)
        self.features = [{"input_ids": i, "attention_mask": m, "labels": y} for i, m, y in zip(ids, masks, labels)]
        self.truncated = {"sources": cut_src, "targets": cut_tgt}

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        return dict(self.features[i])


def seq2seq_collator(tokenizer, model=None):
    """Pads each batch: inputs with the tokenizer's pad token, ``labels`` with -100 (``DataCollatorForSeq2Seq``);
    the model builds its decoder inputs from the labels."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, padding="longest")
