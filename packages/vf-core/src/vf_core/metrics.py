"""Evaluation metrics shared by tasks, and the verdict of a run that learnt nothing (numpy only).

- classification: ``accuracy``, ``majority_accuracy`` (always answering the most frequent label),
  ``predicted_classes``, and ``f1_macro`` beyond two classes;
- regression: ``pearson``, ``spearman``, ``mse``, ``mae`` and ``prediction_std``.

A :class:`~vf_core.tasks.Task` names one of these as its ``metrics`` (a task's runner prefixes them with
``eval_``) and the matching ``stalled`` check.

Example:
    >>> from vf_core.metrics import classification_metrics
    >>> classification_metrics([[0.1, 0.9], [0.8, 0.2]], [1, 1])["accuracy"]
    0.5
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

__all__ = ["classification_metrics", "regression_metrics", "compute_metrics", "classification_stall",
           "regression_stall", "stall_verdict"]


def _rank(x):
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(len(x), dtype=float)
    # average the ranks of ties
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def _pearson(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def classification_metrics(predictions, labels, num_labels: Optional[int] = None) -> dict:
    """``accuracy``, ``majority_accuracy``, ``predicted_classes`` (+ ``f1_macro`` beyond 2 classes), from logits
    ``(N, K)`` or predicted classes ``(N,)``."""
    preds = np.asarray(predictions)
    labels = np.asarray(labels)
    guess = preds.argmax(-1) if preds.ndim > 1 else preds
    y = labels.reshape(-1)
    out = {"accuracy": float((guess == y).mean())}
    if len(y):
        _, counts = np.unique(y, return_counts=True)
        out["majority_accuracy"] = float(counts.max() / len(y))  # always predicting the most frequent label
        out["predicted_classes"] = int(len(np.unique(guess)))
    k = num_labels or int(max(guess.max(initial=0), y.max(initial=0)) + 1)
    if k > 2:
        f1s = []
        for c in range(k):
            tp = float(((guess == c) & (y == c)).sum())
            fp = float(((guess == c) & (y != c)).sum())
            fn = float(((guess != c) & (y == c)).sum())
            f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
        out["f1_macro"] = float(np.mean(f1s))
    return out


def regression_metrics(predictions, labels, num_labels: Optional[int] = None) -> dict:
    """``pearson``, ``spearman``, ``mse``, ``mae``, ``prediction_std`` from values ``(N,)`` or ``(N, 1)``."""
    preds = np.asarray(predictions)
    values = preds.reshape(len(preds), -1)[:, 0].astype(float)
    y = np.asarray(labels).astype(float).reshape(-1)
    return {"pearson": _pearson(values, y), "spearman": _pearson(_rank(values), _rank(y)),
            "mse": float(np.mean((values - y) ** 2)), "mae": float(np.mean(np.abs(values - y))),
            "prediction_std": float(values.std()) if len(values) else 0.0}


def compute_metrics(kind: str, predictions, labels, num_labels: Optional[int] = None) -> dict:
    """:func:`regression_metrics` for ``kind == "regression"``, else :func:`classification_metrics`."""
    if kind == "regression":
        return regression_metrics(predictions, labels, num_labels)
    return classification_metrics(predictions, labels, num_labels)


def _get(metrics: Mapping[str, Any], key: str):
    return metrics.get(f"eval_{key}", metrics.get(key))


def classification_stall(metrics: Mapping[str, Any]) -> Optional[str]:
    """Why a classifier's eval metrics show no learning: the accuracy is at or below always answering the most
    frequent label, or one class is predicted for every example. Keys with or without ``eval_``."""
    acc, majority, classes = _get(metrics, "accuracy"), _get(metrics, "majority_accuracy"), \
        _get(metrics, "predicted_classes")
    if classes == 1:
        return "every eval example gets the same class"
    if acc is not None and majority is not None and acc <= majority + 1e-9:
        return f"eval accuracy {acc:.4f} is at or below the majority class's share {majority:.4f}"
    return None


def regression_stall(metrics: Mapping[str, Any]) -> Optional[str]:
    """Why a regressor's eval metrics show no learning: every prediction is the same value."""
    std = _get(metrics, "prediction_std")
    if std is not None and std < 1e-6:
        return "every eval prediction is the same value"
    return None


def stall_verdict(metrics: Mapping[str, Any], kind: str) -> Optional[str]:
    """:func:`regression_stall` for ``kind == "regression"``, else :func:`classification_stall`."""
    return regression_stall(metrics) if kind == "regression" else classification_stall(metrics)
