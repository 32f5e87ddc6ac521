"""ROUGE-1, ROUGE-2 and ROUGE-L of generated texts against references, as percentages: the ``seq2seq`` task's
metrics, from torchmetrics' maintained ``ROUGEScore`` (which needs neither ``rouge-score`` nor nltk for these three).

What is measured: each text is lower-cased and cut into tokens: runs of letters and digits of any script (Unicode
``\w``: "Bär", "café" and "naïve" stay whole, where torchmetrics' default keeps only ``a-z0-9`` and splits them),
and each character of the scripts written without spaces (Chinese, Japanese, Korean) on its own, as multilingual
ROUGE implementations do; punctuation is dropped. For English text this is torchmetrics' default. No stemming
(``use_stemmer=False``: the stemmer would need nltk) and no sentence splitting (``rougeLsum`` is not computed). For each pair the F-measure
of n-gram overlap (ROUGE-1, ROUGE-2) or of the longest common subsequence (ROUGE-L) is taken, then averaged over
the pairs and multiplied by 100. An empty prediction or reference scores 0 for that pair.

Example (worked by hand: the prediction's 3 words hold 2 of the reference's 6, so P = 2/3, R = 1/3, F = 4/9; one of
its 2 bigrams is among the reference's 5, so F = 2/7; the longest common subsequence is "the cat", as ROUGE-1)::

    >>> from vf_backends_nlp.rouge import rouge_scores
    >>> {k: round(v, 2) for k, v in rouge_scores(["The cat sat."], ["the cat was on the mat"]).items()}
    {'rouge1': 44.44, 'rouge2': 28.57, 'rougeL': 44.44}
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

__all__ = ["rouge_scores", "rouge_stall", "rouge_tokens", "ROUGE_KEYS"]

#: one token per character of the scripts written without spaces, else runs of letters and digits of any script
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]|[^\W_]+")


def rouge_tokens(text: str) -> list[str]:
    """The tokens ROUGE compares (see the module docstring).

    >>> rouge_tokens("Der Bär, café! 猫が座った")
    ['der', 'bär', 'café', '猫', 'が', '座', 'っ', 'た']
    """
    return _TOKEN.findall(text.lower())

#: the metrics computed, as named in ``metrics.json`` after the ``eval_`` prefix
ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """``{"rouge1", "rouge2", "rougeL"}``: mean F-measures over the pairs, in percent (0 for no pairs)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return {key: 0.0 for key in ROUGE_KEYS}
    from torchmetrics.text.rouge import ROUGEScore

    scorer = ROUGEScore(use_stemmer=False, rouge_keys=ROUGE_KEYS, normalizer=lambda text: text,
                        tokenizer=rouge_tokens)
    result = scorer(list(predictions), list(references))
    return {key: 100.0 * float(result[f"{key}_fmeasure"]) for key in ROUGE_KEYS}


def rouge_stall(metrics) -> Optional[str]:
    """Why a ``seq2seq`` run's eval metrics say it learnt nothing (``metrics.json``'s ``stalled``), or None: it
    generates nothing at all, or not one word of any reference."""
    gen_len, rouge1 = metrics.get("eval_gen_len"), metrics.get("eval_rouge1")
    if gen_len is not None and gen_len == 0:
        return "the model generates empty texts on the eval set (eval_gen_len 0)"
    if rouge1 is not None and rouge1 == 0:
        return "no generated word appears in its reference (eval_rouge1 0)"
    return None
