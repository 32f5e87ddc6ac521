"""Question-answering features: each (question, context) pair cut into windows of at most ``max_length`` tokens.

:func:`build_windows` tokenises every pair with ``truncation="only_second"`` (the context is cut, never the
question; ``"only_first"`` with the context first for tokenizers that pad on the left), ``stride`` tokens shared by
consecutive windows of a long context, and the offsets of each token in the original text. Each window keeps

* its model inputs (``input_ids``, ``attention_mask``, ``token_type_ids`` when the model has them) and the
  training targets ``start_positions`` / ``end_positions``: the first and last token of the (first) gold answer
  when the whole answer lies inside the window, else the CLS token's index (also for unanswerable questions);
* beside the inputs, in the same order (:class:`Windows`): the example each window came from, and per token its
  character span in the context (None for question, special and padding tokens), which post-processing reads
  answers back through (:mod:`vf_backends_nlp.qa_postprocess`).

A question too long to leave the context room for ``stride + 1`` tokens keeps its first tokens (the rest is cut).
Offsets need a fast (Rust) tokenizer.

Example::

    >>> windows = build_windows(tokenizer, examples, max_length=384, stride=128)   # doctest: +SKIP
    >>> len(windows), windows.example_index[:3], windows.features[0]["start_positions"]  # doctest: +SKIP
    (1042, [0, 0, 1], 57)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from vf_core.errors import TaskError

from .qa_data import QAExample

__all__ = ["Windows", "WindowDataset", "build_windows", "answer_tokens"]

Span = Optional[tuple[int, int]]
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class Windows:
    """Windows of tokens over the examples' contexts, and what maps them back (see the module docstring)."""

    features: list[dict] = field(default_factory=list)
    example_index: list[int] = field(default_factory=list)
    offsets: list[list[Span]] = field(default_factory=list)
    cls_index: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.features)


class WindowDataset(torch.utils.data.Dataset):
    """The windows' model inputs and targets, as the Trainer's collator wants them (padding per batch)."""

    def __init__(self, windows: Windows) -> None:
        self.features = windows.features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        return dict(self.features[i])


def answer_tokens(offsets: Sequence[Span], start_char: int, end_char: int) -> Optional[tuple[int, int]]:
    """``(first token, last token)`` covering the characters ``[start_char, end_char)`` among the tokens with an
    offset (context tokens), or None when the span is not entirely inside them."""
    inside = [i for i, span in enumerate(offsets) if span is not None]
    if not inside or offsets[inside[0]][0] > start_char or offsets[inside[-1]][1] < end_char:
        return None
    first = next(i for i in inside if offsets[i][1] > start_char)
    last = next(i for i in reversed(inside) if offsets[i][0] < end_char)
    return first, max(first, last)


def _question_limit(tokenizer, max_length: int, stride: int) -> int:
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    limit = max_length - specials - stride - 1
    if stride < 0 or limit < 1:
        raise TaskError(f"--doc-stride {stride} leaves no room for the question and the context in --max-length"
                        f" {max_length} windows; use a stride well below the length (e.g. a quarter of it)")
    return limit


def _shorten(tokenizer, questions: list[str], limit: int) -> list[str]:
    """Questions cut to at most ``limit`` tokens (their first tokens)."""
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for question, ids, offsets in zip(questions, enc["input_ids"], enc["offset_mapping"]):
        out.append(question if len(ids) <= limit else question[:offsets[limit - 1][1]])
    return out


def build_windows(tokenizer, examples: Sequence[QAExample], *, max_length: int, stride: int) -> Windows:
    """Windows of ``examples`` (see the module docstring); ``stride`` is ``--doc-stride``."""
    if not getattr(tokenizer, "is_fast", False):
        raise TaskError(f"question-answering needs a fast tokenizer (offsets into the text); {type(tokenizer).__name__}"
                        " is a slow one: give a model directory with a tokenizer.json")
    question_first = getattr(tokenizer, "padding_side", "right") == "right"
    questions = _shorten(tokenizer, [ex.question.lstrip() for ex in examples],
                         _question_limit(tokenizer, max_length, stride))
    contexts = [ex.context for ex in examples]
    pair = (questions, contexts) if question_first else (contexts, questions)
    try:
        enc = tokenizer(*pair, truncation="only_second" if question_first else "only_first", max_length=max_length,
                        stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    except Exception as exc:  # the tokenizer's own complaint, one line
        raise TaskError(f"question-answering: cannot cut contexts into --max-length {max_length} windows with"
                        f" --doc-stride {stride} ({' '.join(str(exc).split())[:200]})") from None
    context_id = 1 if question_first else 0
    cls_id = tokenizer.cls_token_id
    windows = Windows()
    for i, ids in enumerate(enc["input_ids"]):
        index = enc["overflow_to_sample_mapping"][i]
        sequence = enc.sequence_ids(i)
        offsets = [tuple(span) if sequence[t] == context_id else None
                   for t, span in enumerate(enc["offset_mapping"][i])]
        cls = ids.index(cls_id) if cls_id is not None and cls_id in ids else 0
        example = examples[index]
        tokens = None
        if example.answerable:
            start = example.starts[0]
            tokens = answer_tokens(offsets, start, start + len(example.answers[0]))
        feature = {k: enc[k][i] for k in _INPUTS if k in enc}
        feature["start_positions"], feature["end_positions"] = tokens if tokens is not None else (cls, cls)
        windows.features.append(feature)
        windows.example_index.append(index)
        windows.offsets.append(offsets)
        windows.cls_index.append(cls)
    return windows
