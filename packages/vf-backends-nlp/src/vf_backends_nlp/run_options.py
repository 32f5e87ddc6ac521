"""What every text task's runner does the same way around a run: reading an option from the command line or from
the run being evaluated, quieting transformers, and saving a tokenizer beside a model.

Example::

    >>> import argparse
    >>> from vf_backends_nlp.run_options import RunOptions
    >>> opts = RunOptions(argparse.Namespace(data="d.jsonl", text_column=None))
    >>> opts.data, opts.pick("text_column", "text")
    ('d.jsonl', 'text')
"""

from __future__ import annotations

import os
from typing import Any, Optional

from vf_core.tasks import RunRecord

__all__ = ["RunOptions", "quiet_transformers", "save_tokenizer_beside"]


class RunOptions:
    """The options of a command for a run: ``vectorfit evaluate RUN`` (or ``generate``) reads the data the run
    was trained on, with the run's stored options, unless the command line gives others.

    Attributes:
        data: ``--data``, else the run's data.
        same_data: whether that is the run's own data (then its stored options, such as the columns and the
            split's seed, apply).
        stored: the run's stored command-line options (``run.json``'s ``args``), or ``{}``.
    """

    def __init__(self, args, run: Optional[RunRecord] = None) -> None:
        self.args = args
        self.stored: dict = dict(run.info.get("args", {})) if run is not None else {}
        self.data = getattr(args, "data", None) or (run.info["data"] if run is not None else None)
        self.same_data = run is not None and self.data == run.info.get("data")

    def pick(self, key: str, default: Any = None) -> Any:
        """The command line's ``key``, else the run's (when the data is the run's own), else ``default``."""
        given = getattr(self.args, key, None)
        if given is not None:
            return given
        return self.stored.get(key, default) if self.same_data else default

    def split_options(self) -> dict:
        """``eval_fraction``, ``seed``, ``max_train``, ``max_eval``, ``data_config`` and ``split`` for
        :func:`vf_backends_nlp.records.load_records`: the fixed split of the run's data is the run's."""
        return dict(eval_fraction=self.pick("eval_fraction", 0.2), seed=self.pick("data_seed", 0),
                    max_train=getattr(self.args, "max_train", None), max_eval=self.pick("max_eval"),
                    data_config=self.pick("data_config"), split=self.pick("data_split"))


def quiet_transformers() -> None:
    """With ``TRANSFORMERS_VERBOSITY=error`` (the command's default), no info lines and no weight-loading bar."""
    from transformers.utils import logging as hf_logging

    if os.environ.get("TRANSFORMERS_VERBOSITY", "") == "error":
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # the weight-loading bar; the Trainer's bars are its own


def save_tokenizer_beside(directory: str, base: Optional[str]) -> None:
    """Save the tokenizer of the model ``base`` into ``directory`` (a saved model loads with it); a base without a
    tokenizer is skipped: a model without a tokenizer is still a model."""
    if not base:
        return
    from .models import load_tokenizer

    try:
        load_tokenizer(base).save_pretrained(directory)
    except Exception:
        pass
