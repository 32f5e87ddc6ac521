"""Exact match and F1 of extractive answers, SQuAD's way, as percentages.

Answerable questions are scored by torchmetrics' SQuAD metric (``torchmetrics.functional.text.squad``: the
official normalisation (lower case, punctuation and the articles a/an/the removed, whitespace collapsed), exact
match and token F1, the best over the gold answers). It cannot score a question without gold answers (an empty
list crashes it), so unanswerable questions (SQuAD v2.0) are scored here as SQuAD v2.0's official script does:
exact match = F1 = 100 when the prediction normalises to nothing (``""``, or only articles and punctuation), else 0.
The overall scores average both kinds over all questions; with unanswerable questions present, the scores of each
kind are given too (``has_ans_*``, ``no_ans_*``).

Example::

    >>> m = squad_metrics(["the Eiffel Tower!", "Paris", ""], [["Eiffel Tower"], ["in Paris, France"], []])
    >>> {k: round(v, 2) for k, v in m.items()}   # "Paris" against "in Paris, France": F1 = 2 * 1 * 1/3 / (4/3)
    {'exact_match': 66.67, 'f1': 83.33, 'has_ans_exact_match': 50.0, 'has_ans_f1': 75.0, 'no_ans_exact_match': 100.0, 'no_ans_f1': 100.0, 'has_ans_total': 2, 'no_ans_total': 1}
"""

from __future__ import annotations

import re
import string
from typing import Optional, Sequence

__all__ = ["squad_metrics", "normalize_answer"]

_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def squad_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]],
                  num_labels: Optional[int] = None) -> dict:
    """``{"exact_match", "f1"}`` (percent, over all questions) of ``predictions`` against each question's gold
    answer texts (``[]``: unanswerable); plus per-kind scores and counts when some question is unanswerable.
    ``num_labels`` is unused (the signature of :attr:`vf_core.tasks.Task.metrics`)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} questions")
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    answerable = [i for i, gold in enumerate(references) if gold]
    no_answer = [i for i, gold in enumerate(references) if not gold]
    has_em = has_f1 = 0.0
    if answerable:
        from torchmetrics.functional.text.squad import squad

        scores = squad([{"prediction_text": predictions[i], "id": str(i)} for i in answerable],
                       [{"answers": {"text": list(references[i]), "answer_start": [0] * len(references[i])},
                         "id": str(i)} for i in answerable])
        has_em, has_f1 = float(scores["exact_match"]), float(scores["f1"])
    no_score = 100.0 * sum(normalize_answer(predictions[i]) == "" for i in no_answer) / max(len(no_answer), 1)
    total = len(predictions)
    out = {"exact_match": (has_em * len(answerable) + no_score * len(no_answer)) / total,
           "f1": (has_f1 * len(answerable) + no_score * len(no_answer)) / total}
    if no_answer:
        out.update({"has_ans_exact_match": has_em, "has_ans_f1": has_f1, "no_ans_exact_match": no_score,
                    "no_ans_f1": no_score, "has_ans_total": len(answerable), "no_ans_total": len(no_answer)})
    return out
