"""The validation split and early stopping of ``vectorfit train`` (``--validation-fraction``, ``--early-stopping``).

A fair comparison of fine-tuning methods (https://arxiv.org/abs/2503.19530, Table 1) picks each method's
learning rate and its number of steps on data that the reported score never sees. ``--validation-fraction F``
holds out a fixed share of the *training* examples (after ``--max-train``, drawn with ``--data-seed``); the
evaluations during training then score that validation split, and the final metrics are computed once, at the
end, on the eval split. ``--early-stopping P`` stops when the task's headline metric on the validation split has
not improved for ``P`` evaluations in a row, and the best evaluation's trained state is put back before the final
metrics and the adapter are written.

The best state is kept in memory (the parameters that train, and batch-norm statistics), not in checkpoints,
so it works the same with ``--no-checkpoints`` and for every engine (the Trainer's callback and the vision
backend's loop call :meth:`EarlyStopping.update` after each evaluation).

Example::

    >>> import torch
    >>> from vectorfit.early_stopping import EarlyStopping, validation_indices
    >>> validation_indices(10, 0.2, seed=0)[1]
    [7, 8]
    >>> net = torch.nn.Linear(2, 1)
    >>> stop = EarlyStopping(net, metric="eval_accuracy", patience=2)
    >>> [stop.update(step, {"eval_accuracy": acc}) for step, acc in ((10, 0.5), (20, 0.7), (30, 0.6), (40, 0.6))]
    [False, False, False, True]
    >>> stop.best_step, stop.finish()["restored_best"]
    (20, True)
"""

from __future__ import annotations

import math
import random
from typing import Any, Mapping, Optional

__all__ = ["EarlyStopping", "validation_indices", "greater_is_better"]

#: metric names where lower is better (anything else: higher is better)
_LOWER = ("loss", "perplexity", "mse", "mae", "rmse", "error", "fid")


def greater_is_better(metric: str) -> bool:
    """Whether a higher ``metric`` is better: False for losses, perplexity and errors, True otherwise."""
    name = metric.lower()
    return not any(part in name for part in _LOWER)


def validation_indices(n: int, fraction: float, *, seed: int = 0) -> tuple[list[int], list[int]]:
    """``(train, validation)`` indices of ``n`` training examples: a fixed random ``fraction`` of them (at least
    one, and at least one left to train on) is held out, drawn with ``seed``; both lists in their original order."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must lie strictly between 0 and 1, got {fraction}")
    if n < 2:
        raise ValueError(f"{n} training example(s) cannot be split into a training and a validation part")
    k = min(n - 1, max(1, int(round(fraction * n))))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = sorted(order[:k])
    taken = set(held)
    return [i for i in range(n) if i not in taken], held


class EarlyStopping:
    """Tracks the validation metric after each evaluation, keeps the best trained state and says when to stop.

    Args:
        model: the model being trained; the parameters that train at construction time (and batch-norm
            statistics) are what is kept and restored.
        metric: the metric to watch, as the evaluations report it (``"eval_accuracy"``).
        patience: evaluations without improvement before stopping; None or 0: never stop, only keep the best.
        higher_is_better: direction of ``metric`` (default: :func:`greater_is_better`).
        min_delta: the smallest change that counts as an improvement.
        keep_best: keep a copy of the best state for :meth:`finish` to put back (default: when ``patience`` is
            set; without it, the curve is only recorded and the run ends with its last state).
    """

    def __init__(self, model, *, metric: str, patience: Optional[int] = None,
                 higher_is_better: Optional[bool] = None, min_delta: float = 0.0,
                 keep_best: Optional[bool] = None) -> None:
        import torch

        self.metric = metric
        self.patience = patience or None
        self.higher = greater_is_better(metric) if higher_is_better is None else higher_is_better
        self.min_delta = float(min_delta)
        self.keep_best = bool(self.patience) if keep_best is None else keep_best
        self._tensors = [(f"param:{n}", p) for n, p in model.named_parameters() if p.requires_grad]
        self._tensors += [(f"buffer:{n}:{b}", t) for n, m in model.named_modules()
                          if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                          for b, t in m.named_buffers(recurse=False) if t is not None]
        self.history: list[dict] = []
        self.best_value: Optional[float] = None
        self.best_step: Optional[int] = None
        self.best_entry: Optional[dict] = None
        self._best_state: Optional[list] = None
        self.waited = 0
        self.stopped_at: Optional[int] = None

    def improves(self, value: Optional[float]) -> bool:
        """Whether ``value`` beats the best so far (a missing or non-finite value never does)."""
        if value is None or not math.isfinite(float(value)):
            return False
        if self.best_value is None:
            return True
        delta = float(value) - self.best_value
        return delta > self.min_delta if self.higher else -delta > self.min_delta

    def update(self, step: int, metrics: Mapping[str, Any], *, epoch: Optional[float] = None) -> bool:
        """Record one evaluation of the validation split; returns True when training should stop now."""
        entry = {"step": int(step)}
        if epoch is not None:
            entry["epoch"] = epoch
        entry.update({_validation_name(k): v for k, v in metrics.items()
                      if k.startswith("eval_") and isinstance(v, (int, float))
                      and not k.endswith(("_runtime", "_per_second", "_preparation_time"))})
        if isinstance(metrics.get("train_loss"), (int, float)):
            entry["train_loss"] = metrics["train_loss"]
        self.history.append(entry)
        value = metrics.get(self.metric)
        if self.improves(value):
            self.best_value, self.best_step, self.best_entry = float(value), int(step), entry
            self._snapshot()
            self.waited = 0
        else:
            self.waited += 1
        if self.patience and self.waited >= self.patience:
            self.stopped_at = int(step)
            return True
        return False

    def _snapshot(self) -> None:
        if not self.keep_best:
            return
        self._best_state = [t.detach().clone() for _, t in self._tensors]

    def restore(self) -> bool:
        """Put the best evaluation's state back into the model; False when there was none (nothing changed)."""
        if self._best_state is None:
            return False
        import torch

        with torch.no_grad():
            for (_, tensor), saved in zip(self._tensors, self._best_state):
                tensor.copy_(saved)
        return True

    def finish(self) -> dict:
        """End of training: the best state put back (when kept); returns :meth:`summary`."""
        self.restored = self.restore()
        return self.summary()

    def summary(self) -> dict:
        """What ``metrics.json`` keeps: the validation curve, the best evaluation and whether training stopped."""
        name = _validation_name(self.metric)
        return {
            "validation_history": self.history,
            "best_step": self.best_step,
            f"best_{name}": self.best_value,
            "best_validation_loss": (self.best_entry or {}).get("validation_loss"),
            "early_stopping_patience": self.patience,
            "stopped_early": self.stopped_at is not None,
            "stopped_at_step": self.stopped_at,
            "restored_best": bool(getattr(self, "restored", False)),
        }


def _validation_name(key: str) -> str:
    return "validation_" + key[len("eval_"):] if key.startswith("eval_") else f"validation_{key}"
