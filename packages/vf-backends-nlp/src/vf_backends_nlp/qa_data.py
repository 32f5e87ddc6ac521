"""Question-answering examples: SQuAD v1.1 / v2.0 files and the flat form, split into train and eval.

:func:`load_qa_data` reads

* a SQuAD file (``.json``, optionally ``.gz``/``.bz2``): ``{"version": ..., "data": [{"title", "paragraphs":
  [{"context", "qas": [{"id", "question", "answers": [{"text", "answer_start"}], "is_impossible"?}]}]}]}``;
  v2.0's unanswerable questions have no answers (``is_impossible: true``; their ``plausible_answers`` are not
  read);
* the flat form, through :func:`vf_backends_nlp.records.load_records` (JSON lines, a JSON array, CSV/TSV, a
  ``save_to_disk`` folder, Parquet/Arrow, a hub dataset): rows with ``question``, ``context`` and ``answers``,
  the latter as ``datasets``' squad has it (``{"text": [...], "answer_start": [...]}``), as a list of
  ``{"text", "answer_start"}``, or either written as a JSON string (CSV); an empty answer list (or a true
  ``is_impossible``) is an unanswerable question.

Split: a SQuAD file gets the fixed split of every text task over its questions (:func:`vf_core.assets.
train_eval_split`, ``eval_fraction`` and ``seed``), then ``max_train`` / ``max_eval`` keep the first of each.
``--data`` takes one file: to keep SQuAD's own train and dev sets, save them as one ``datasets`` folder with
``train`` and ``validation`` splits (their split is kept, as for every text task).

Misplaced answers: an example whose first answer's text is not at its ``answer_start`` in the context cannot be
trained on (the other gold answers only count as texts when scoring); it is skipped and counted (both splits, after ``max_train`` / ``max_eval``), and one warning line on
stderr names the first such example and the count. No example left is a :class:`DataError`.

Null answers (SQuAD v2.0): :attr:`QAData.null_answers` is True for a file whose ``version`` starts with ``v2``
or ``2``, and for any data with an unanswerable question; only then may the model answer nothing.

Example::

    >>> from vf_backends_nlp.qa_data import load_qa_data
    >>> data = load_qa_data("dev-v2.0.json", max_eval=200)                # doctest: +SKIP
    >>> data.eval[0].question, data.eval[0].answers, data.null_answers     # doctest: +SKIP
    ('In what country is Normandy located?', ['France', 'France'], True)
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from vf_core.assets import DataError, train_eval_split

from .data import _open_text
from .data_peek import data_suffix, peek_text
from .records import Records, load_records

__all__ = ["QAExample", "QAData", "load_qa_data", "read_squad", "examples_from_rows", "looks_like_qa_data",
           "DataError"]

#: the columns of the flat form
QUESTION, CONTEXT, ANSWERS = "question", "context", "answers"


@dataclass
class QAExample:
    """One question about one context, with its gold answers (none: unanswerable)."""

    id: str
    question: str
    context: str
    answers: list[str] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


@dataclass
class QAData:
    """The train and eval examples, whether the model may answer nothing, and what was skipped."""

    train: list[QAExample]
    eval: list[QAExample]
    null_answers: bool
    skipped: int = 0
    first_skipped: Optional[str] = None


# ------------------------------------------------------------------------------------------------ recognising
def _has_qa_keys(obj: Any) -> bool:
    return isinstance(obj, dict) and all(k in obj for k in (QUESTION, CONTEXT, ANSWERS))


def looks_like_qa_data(spec: str) -> bool:
    """Whether ``spec`` is a SQuAD file (a ``.json`` whose top-level ``data`` items have ``paragraphs``) or a
    JSON-lines / JSON-array file whose first record has ``context``, ``question`` and ``answers``, or a
    ``save_to_disk`` folder with those columns. Reads at most 64 KB; never raises."""
    try:
        path = Path(spec).expanduser()
        if path.is_dir():
            return any(_has_qa_keys(json.loads(info.read_text(encoding="utf-8")).get("features"))
                       for info in [path / "dataset_info.json", *path.glob("*/dataset_info.json")][:4]
                       if info.is_file())
        kind = data_suffix(path)
        if not path.is_file() or kind not in (".json", ".jsonl", ".ndjson"):
            return False
        head = peek_text(path).lstrip()
        if head.startswith("{") and re.search(r'"data"\s*:\s*\[', head) and re.search(r'"paragraphs"\s*:', head):
            return True
        decoder = json.JSONDecoder()
        start = 1 if head.startswith("[") else 0
        while start < len(head) and head[start].isspace():
            start += 1
        first, _ = decoder.raw_decode(head, start)
        return _has_qa_keys(first)
    except Exception:  # a claim never raises: an unreadable or odd file is simply not recognised
        return False


# ------------------------------------------------------------------------------------------------ SQuAD files
def _read_squad_object(path: Path) -> Optional[dict]:
    """The parsed top-level object of a SQuAD file, or None when ``path`` is not one."""
    if data_suffix(path) != ".json":
        return None
    try:
        with _open_text(path) as fh:
            text = fh.read()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if not text.lstrip().startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None  # perhaps JSON lines: the flat reader decides
    return obj if isinstance(obj, dict) and isinstance(obj.get("data"), list) else None


def read_squad(obj: dict, source: str) -> tuple[list[dict], bool]:
    """Flat rows (``id``, ``title``, ``question``, ``context``, ``answers`` as ``{"text", "answer_start"}``) of a
    parsed SQuAD file, and whether it declares version 2."""
    rows = []
    for a, article in enumerate(obj["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise DataError(f"{source}: data[{a}] has no 'paragraphs' list; a SQuAD file is {{\"data\": [{{\"title\","
                            " \"paragraphs\": [{\"context\", \"qas\": [...]}]}]}")
        for p, paragraph in enumerate(paragraphs):
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str) \
                    or not isinstance(paragraph.get("qas"), list):
                raise DataError(f"{source}: data[{a}].paragraphs[{p}] needs a 'context' string and a 'qas' list")
            for q, qa in enumerate(paragraph["qas"]):
                if not isinstance(qa, dict) or not isinstance(qa.get("question"), str):
                    raise DataError(f"{source}: data[{a}].paragraphs[{p}].qas[{q}] has no 'question' string")
                answers = [] if qa.get("is_impossible") else (qa.get("answers") or [])
                rows.append({"id": str(qa.get("id", f"data[{a}].paragraphs[{p}].qas[{q}]")),
                             "title": article.get("title"), QUESTION: qa["question"],
                             CONTEXT: paragraph["context"], ANSWERS: answers})
    version = str(obj.get("version", "")).lower().lstrip("v")
    return rows, version.startswith("2")


# ------------------------------------------------------------------------------------------------ flat rows
def _answers(value: Any, where: str) -> tuple[list[str], list[int]]:
    """``(texts, starts)`` of an ``answers`` value in any of the accepted shapes."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return [], []
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise DataError(f"{where}: 'answers' is a string but not JSON ({text[:60]!r}); give"
                            " {\"text\": [...], \"answer_start\": [...]} or a list of {text, answer_start}") from None
    if value is None:
        return [], []
    if isinstance(value, dict):
        texts, starts = value.get("text"), value.get("answer_start")
        if isinstance(texts, str):
            texts, starts = [texts], [starts]
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise DataError(f"{where}: 'answers' needs lists 'text' and 'answer_start' of the same length")
    elif isinstance(value, list):
        if not all(isinstance(a, dict) and "text" in a and "answer_start" in a for a in value):
            raise DataError(f"{where}: each answer needs 'text' and 'answer_start'")
        texts, starts = [a["text"] for a in value], [a["answer_start"] for a in value]
    else:
        raise DataError(f"{where}: 'answers' is a {type(value).__name__}; give {{\"text\": [...], \"answer_start\":"
                        " [...]} or a list of {text, answer_start}")
    try:
        return [str(t) for t in texts], [int(s) for s in starts]
    except (TypeError, ValueError):
        raise DataError(f"{where}: an 'answer_start' is not a whole number: {starts!r}") from None


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"))


def examples_from_rows(rows: list[dict], columns: list[str], source: str, where) -> list[QAExample]:
    """Examples of flat rows of ``source``; ``where(i)`` names row ``i`` in errors. A missing column is one clear
    :class:`DataError`."""
    missing = [c for c in (QUESTION, CONTEXT, ANSWERS) if c not in columns]
    if missing:
        raise DataError(f"{source}: question-answering needs 'question', 'context' and 'answers'"
                        f" columns (or a SQuAD .json file); missing: {', '.join(missing)}; its columns:"
                        f" {', '.join(map(str, columns)) or '(none)'}")
    out = []
    for i, row in enumerate(rows):
        question, context = row.get(QUESTION), row.get(CONTEXT)
        if not isinstance(question, str) or not isinstance(context, str):
            raise DataError(f"{where(i)}: 'question' and 'context' must be strings")
        texts, starts = ([], []) if _truthy(row.get("is_impossible")) else _answers(row.get(ANSWERS), where(i))
        out.append(QAExample(str(row.get("id") if row.get("id") not in (None, "") else i), question, context,
                             texts, starts))
    return out


def _misplaced(example: QAExample) -> bool:
    """Whether the first answer (the one training marks) is not at its ``answer_start``; the others only count as
    texts when scoring, so an offset slip there costs nothing."""
    return any(example.context[s:s + len(t)] != t for t, s in zip(example.answers[:1], example.starts[:1]))


# ------------------------------------------------------------------------------------------------ loading
def load_qa_data(spec: Union[str, Path], *, eval_fraction: float = 0.2, seed: int = 0,
                 max_train: Optional[int] = None, max_eval: Optional[int] = None, data_config: Optional[str] = None,
                 split: Optional[str] = None, warn: bool = True) -> QAData:
    """The train and eval :class:`QAExample` lists of ``spec`` (see the module docstring)."""
    path = Path(str(spec)).expanduser()
    squad = _read_squad_object(path) if path.is_file() else None
    if squad is not None:
        rows, version2 = read_squad(squad, str(path))
        if not rows:
            raise DataError(f"data {str(spec)!r} holds no questions")
        train_idx, eval_idx = train_eval_split(len(rows), eval_fraction=eval_fraction, seed=seed)
        name = str(path)
        parts = [examples_from_rows([rows[i] for i in idx[:cap]], [QUESTION, CONTEXT, ANSWERS], name,
                                    lambda i, idx=idx: f"{name}, question {idx[i] + 1}")
                 for idx, cap in ((train_idx, max_train), (eval_idx, max_eval))]
    else:
        version2 = False
        recs: tuple[Records, Records] = load_records(spec, eval_fraction=eval_fraction, seed=seed,
                                                     max_train=max_train, max_eval=max_eval,
                                                     data_config=data_config, split=split)
        parts = [examples_from_rows(r.rows, r.columns, r.source, r.where) for r in recs]
    kept, skipped, first = [], 0, None
    for part in parts:
        good = [ex for ex in part if not _misplaced(ex)]
        for ex in part:
            if first is None and _misplaced(ex):
                first = ex.id
        skipped += len(part) - len(good)
        kept.append(good)
    if skipped and warn:
        print(f"vectorfit: warning: {spec}: skipped {skipped} example(s) whose answer text is not at its answer_start"
              f" in the context (the first: id {first!r})", file=sys.stderr)
    if not kept[0] and not kept[1]:
        raise DataError(f"data {str(spec)!r}: no usable example left (every answer's text differs from the context at"
                        " its answer_start; answer_start counts characters from 0)")
    null = version2 or any(not ex.answerable for part in kept for ex in part)
    return QAData(kept[0], kept[1], null, skipped, first)
