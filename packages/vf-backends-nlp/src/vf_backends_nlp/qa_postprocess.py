"""From a question-answering model's start and end logits back to answers: spans of the original contexts.

For each example, :func:`predict_answers` looks at every window of its context (:class:`~vf_backends_nlp.
qa_features.Windows`): the ``n_best`` highest start logits and the ``n_best`` highest end logits among all tokens;
a pair is a candidate when both tokens are context tokens, the end is not before the start and the span has at
most ``max_answer_length`` tokens. Its score is ``start_logit + end_logit``; the best candidate over all windows is
the answer, read from the context through the tokens' character offsets (so the text is exactly the context's).

Null answers (SQuAD v2.0, ``null_answers=True``): a window's null score is the start plus end logit of its CLS
token; the example's is the minimum over its windows (the window most sure that an answer is there). The
prediction is ``""`` (no answer) when ``null score - best span score > null_threshold`` or when no span is a
candidate. Without null answers (v1.1) the best span is always given (``""`` only if there is no candidate at
all).

Example (one window of ``"[CLS] q [SEP] Paris is big [SEP]"``; "Paris" is token 3)::

    >>> import numpy as np
    >>> from vf_backends_nlp.qa_features import Windows
    >>> from vf_backends_nlp.qa_data import QAExample
    >>> ex = QAExample("1", "q", "Paris is big")
    >>> w = Windows([{}], [0], [[None, None, None, (0, 5), (6, 8), (9, 12), None]], [0])
    >>> start = np.array([[0., 0., 0., 5., 1., 0., 0.]]); end = np.array([[0., 0., 0., 4., 0., 1., 0.]])
    >>> predict_answers(start, end, w, [ex])
    ['Paris']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .qa_data import QAExample
from .qa_features import Windows

__all__ = ["predict_answers", "Candidate", "best_span"]


@dataclass
class Candidate:
    """The best span of an example: its text, its score, its character span; and the example's null score."""

    text: str
    score: float
    start: int
    end: int
    null_score: float


def _window_best(start: np.ndarray, end: np.ndarray, offsets, n_best: int, max_answer_length: int):
    length = len(offsets)
    start, end = start[:length], end[:length]  # logits beyond the window's tokens are the batch's padding
    context = np.array([span is not None for span in offsets])
    s = np.argsort(-start, kind="stable")[:n_best][:, None]
    e = np.argsort(-end, kind="stable")[:n_best][None, :]
    ok = context[s] & context[e] & (e >= s) & (e - s + 1 <= max_answer_length)
    if not ok.any():
        return None
    scores = np.where(ok, start[s] + end[e], -np.inf)
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)  # the first best, in rank order
    first, last = int(s[i, 0]), int(e[0, j])
    return float(scores[i, j]), offsets[first][0], offsets[last][1]


def best_span(start_logits, end_logits, windows: Windows, examples: Sequence[QAExample], *, n_best: int = 20,
              max_answer_length: int = 30) -> list[Optional[Candidate]]:
    """Per example, the best span over its windows with its null score, or None when no span is a candidate."""
    start_logits, end_logits = np.asarray(start_logits, dtype=np.float64), np.asarray(end_logits, dtype=np.float64)
    best: list[Optional[tuple]] = [None] * len(examples)
    null = [float("inf")] * len(examples)
    for f, index in enumerate(windows.example_index):
        offsets, cls = windows.offsets[f], windows.cls_index[f]
        null[index] = min(null[index], float(start_logits[f][cls] + end_logits[f][cls]))
        found = _window_best(start_logits[f], end_logits[f], offsets, n_best, max_answer_length)
        if found is not None and (best[index] is None or found[0] > best[index][0]):
            best[index] = found
    out = []
    for i, example in enumerate(examples):
        if best[i] is None:
            out.append(None)
            continue
        score, a, b = best[i]
        out.append(Candidate(example.context[a:b], score, a, b, null[i]))
    return out


def predict_answers(start_logits, end_logits, windows: Windows, examples: Sequence[QAExample], *, n_best: int = 20,
                    max_answer_length: int = 30, null_answers: bool = False, null_threshold: float = 0.0) -> list[str]:
    """The predicted answer text of each example (see the module docstring); ``""`` means no answer."""
    out = []
    for found in best_span(start_logits, end_logits, windows, examples, n_best=n_best,
                           max_answer_length=max_answer_length):
        if found is None or (null_answers and found.null_score - found.score > null_threshold):
            out.append("")
        else:
            out.append(found.text)
    return out
