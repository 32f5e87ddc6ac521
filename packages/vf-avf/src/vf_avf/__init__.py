"""Adaptive Vector Freezing (AVF) and pluggable freezing policies for VectorFit.

Paper: Hegde, Kaur, Tiwari, "VectorFit: Adaptive Singular & Bias Vector Fine-Tuning of Pre-trained
Foundation Models", https://arxiv.org/abs/2503.19530 (AVF: method spec section 1.2).

* :class:`AVFConfig` selects a policy by name (``topk_ema`` = the paper's AVF, ``random``, ``dropout``,
  ``none``, or any installed plugin's) and validates its fields.
* :class:`VectorFreezer` applies it: ``loss.backward(); freezer.step(step); optimizer.step()``.
* :class:`vf_avf.integrations.trainer.AVFCallback` (or :func:`vf_avf.integrations.trainer.add_avf`) does it
  inside a Hugging Face ``Trainer``, checkpoints included; :mod:`vf_avf.plot` draws the strength heatmap.

Example:
    >>> import torch
    >>> from vf_core import VectorFitConfig, get_vectorfit_model
    >>> from vf_avf import AVFConfig, VectorFreezer
    >>> vf = get_vectorfit_model(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)),
    ...                          VectorFitConfig(target_modules=["0", "1"]))
    >>> freezer = VectorFreezer(vf, AVFConfig(t_i=0.4, t_f=0.05, n_f=5, k=2), total_steps=1000)
    >>> freezer.avf_steps
    (400, 450, 500, 550, 600)
"""

__version__ = "0.1.0"

from typing import Any

from .config import AVFConfig, ScheduledConfig
from .errors import FreezerStateError
from .freezer import AVFRecord, VectorFreezer
from .policies import (
    Decision,
    DropoutConfig,
    FreezingPolicy,
    NoFreezingConfig,
    RandomConfig,
    ScheduledPolicy,
    TopKEMAConfig,
)
from .registry import PolicyRecord, get_policy, list_policies
from .schedule import Schedule
from .strength import strengths

__all__ = [
    "__version__",
    "AVFConfig",
    "ScheduledConfig",
    "TopKEMAConfig",
    "RandomConfig",
    "DropoutConfig",
    "NoFreezingConfig",
    "VectorFreezer",
    "AVFRecord",
    "FreezingPolicy",
    "ScheduledPolicy",
    "Decision",
    "PolicyRecord",
    "list_policies",
    "get_policy",
    "Schedule",
    "strengths",
    "FreezerStateError",
]
# also public, loaded on first use so that ``import vf_avf`` needs neither transformers nor matplotlib
# (and kept out of ``__all__`` so that ``from vf_avf import *`` does not load them): AVFCallback, add_avf,
# plot_strengths

_LAZY = {"AVFCallback": "vf_avf.integrations.trainer", "add_avf": "vf_avf.integrations.trainer",
         "plot_strengths": "vf_avf.plot"}


def __getattr__(name: str) -> Any:  # transformers and matplotlib load only when asked for
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vf_avf' has no attribute {name!r}")
