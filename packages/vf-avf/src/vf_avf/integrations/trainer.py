"""AVF inside a Hugging Face ``Trainer``: :class:`AVFCallback` and :func:`add_avf`.

Paper: https://arxiv.org/abs/2503.19530 (Adaptive Vector Freezing, method spec section 1.2).

The callback builds a :class:`~vf_avf.VectorFreezer` when training begins (with ``total_steps`` =
``TrainerState.max_steps``, so fractions in the schedule just work) and calls ``freezer.step(global_step)``
in ``on_pre_optimizer_step``, right before ``optimizer.step()``; the user's code makes no call. The
Trainer clips gradients before that event, so with ``max_grad_norm > 0`` the frozen vectors' gradients still
count in the clipping norm (as they do when a plain loop clips before ``freezer.step``); they never reach
the optimizer.

Checkpoints: at each save the freezer's state goes into the checkpoint folder as
``vectorfit_avf_state.json``; ``trainer.train(resume_from_checkpoint=...)`` restores it, so the resumed run
freezes exactly what the uninterrupted one would have. The folder is found as
``args.resume_from_checkpoint`` if that names one, else ``<output_dir>/checkpoint-<global_step>`` (what
``resume_from_checkpoint=True`` picks); set :attr:`AVFCallback.resume_from` for a folder elsewhere.

Example:
    >>> from transformers import Trainer, TrainingArguments              # doctest: +SKIP
    >>> from vf_avf import AVFConfig
    >>> from vf_avf.integrations.trainer import add_avf
    >>> trainer = Trainer(model=vf_model, args=TrainingArguments("out", remove_unused_columns=False),
    ...                   train_dataset=train)                              # doctest: +SKIP
    >>> callback = add_avf(trainer, AVFConfig(t_i=0.4, t_f=0.05, n_f=5, k=5))   # doctest: +SKIP
    >>> trainer.train()                                                     # doctest: +SKIP
    >>> callback.freezer.history[-1].frozen                                 # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from transformers import TrainerCallback

from vf_core.errors import ConfigError

from ..config import AVFConfig, resolve_config
from ..errors import FreezerStateError
from ..freezer import VectorFreezer, registry_of

__all__ = ["AVFCallback", "add_avf", "STATE_FILE"]

#: the file the callback writes into every Trainer checkpoint folder
STATE_FILE = "vectorfit_avf_state.json"


class AVFCallback(TrainerCallback):
    """Runs a freezing policy inside ``Trainer`` and saves / restores its state with the checkpoints.

    Args:
        config: an :class:`~vf_avf.AVFConfig` (any policy), a mapping of its fields, or None (the paper's AVF
            with defaults).
        model: the :class:`~vf_core.VectorFitModel` (or its ``.vectors``); None takes the Trainer's model,
            which must then be the VectorFitModel.
        sync_ranks: passed to :class:`~vf_avf.VectorFreezer`.

    Attributes:
        freezer: the :class:`~vf_avf.VectorFreezer`, built when training begins (``history``, ``frozen``).
        resume_from: a checkpoint folder to restore the freezer from, for folders the callback cannot infer;
            ``False`` starts the freezer afresh even when training resumes.
    """

    def __init__(self, config: Union[AVFConfig, Mapping[str, Any], None] = None, model: Any = None, *,
                 sync_ranks: bool = True) -> None:
        self.config = resolve_config(dict(config) if isinstance(config, Mapping) else config)
        self.model = model
        self.sync_ranks = sync_ranks
        self.freezer: Optional[VectorFreezer] = None
        self.resume_from: Union[str, os.PathLike, bool, None] = None

    # ------------------------------------------------------------------------------------------ events
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        source = self.model if self.model is not None else model
        try:
            vectors = registry_of(source)
        except TypeError as exc:
            raise ConfigError(f"AVFCallback: {exc}; or pass model=<VectorFitModel> to AVFCallback / add_avf",
                              fields=("model",)) from None
        self.freezer = VectorFreezer(vectors, self.config, total_steps=state.max_steps or None,
                                     sync_ranks=self.sync_ranks)
        if state.global_step > 0 and self.resume_from is not False:  # resuming: the Trainer restored its state
            self._restore(args, state)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.freezer.step(state.global_step)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.freezer is None or not args.should_save:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            self.freezer.save(folder / STATE_FILE)
        else:  # a hyperparameter-search run writes elsewhere
            warnings.warn(f"AVFCallback: no checkpoint folder {folder}; the freezer state was not saved with it")

    # ------------------------------------------------------------------------------------------ resuming
    def _candidates(self, args: Any, state: Any) -> list[Path]:
        found = [self.resume_from, getattr(args, "resume_from_checkpoint", None),
                 Path(args.output_dir) / f"checkpoint-{state.global_step}"]
        return [Path(p) for p in found if isinstance(p, (str, os.PathLike))]

    def _restore(self, args: Any, state: Any) -> None:
        candidates = self._candidates(args, state)
        for folder in candidates:
            if (folder / STATE_FILE).is_file():
                self.freezer.load(folder / STATE_FILE)
                if self.freezer.last_step is not None and self.freezer.last_step != state.global_step - 1:
                    raise FreezerStateError(
                        f"{folder / STATE_FILE} was saved after step {self.freezer.last_step}, but training resumes"
                        f" at step {state.global_step}; it belongs to another checkpoint")
                return
        looked = ", ".join(str(p) for p in candidates)
        raise FreezerStateError(
            f"training resumes at step {state.global_step} but no {STATE_FILE} was found (looked in: {looked});"
            f" set AVFCallback.resume_from to the checkpoint folder that holds it, or to False to start the freezer"
            f" afresh at this step")


def add_avf(trainer: Any, config: Union[AVFConfig, Mapping[str, Any], None] = None, *, model: Any = None,
            sync_ranks: bool = True) -> AVFCallback:
    """Add an :class:`AVFCallback` for ``config`` to ``trainer`` and return it.

    ``model`` defaults to ``trainer.model``, which must be the :class:`~vf_core.VectorFitModel` (pass it as
    ``model=`` if the Trainer holds the wrapped model, ``vf.get_base_model()``).

    Example:
        >>> config = {"policy": "topk_ema", "t_i": 0.5, "t_f": 0.1, "n_f": 4, "k": 5}
        >>> callback = add_avf(trainer, config)        # doctest: +SKIP
    """
    source = model if model is not None else trainer.model
    try:
        registry_of(source)
    except TypeError as exc:
        raise ConfigError(f"add_avf: {exc}", fields=("model",)) from None
    callback = AVFCallback(config, model=source, sync_ranks=sync_ranks)
    trainer.add_callback(callback)
    return callback
