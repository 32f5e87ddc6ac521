"""The run directory written by ``vectorfit train`` and read by the other commands.

Layout of ``DIR`` (``--output``)::

    run.json              what was run: backend, task, model, data (and its options), method, training options,
                          label names and kind of labels, library versions
    metrics.json          eval metrics (eval_accuracy or eval_pearson/eval_spearman/eval_mse...), trainable_params,
                          total_params, train_seconds, per-epoch history
    adapter/              vectorfit/svfit/svft: a VectorFit adapter (VectorFitModel.from_pretrained);
                          lora/adalora: a PEFT adapter; bitfit: the trained biases and head (bitfit_model.safetensors)
    model/                full: the fine-tuned model in the backend's format
    strengths.json        training strength of every trainable vector over training (vector methods)
    avf_history.json      what the freezing policy froze, and when (when AVF ran)
    plots/                training_strength.png, weight_change_spectra.png, leading_sv_change.png
    checkpoints/          the engine's checkpoints (resume with ``vectorfit train --output DIR --resume``)
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from .errors import CLIError

__all__ = ["Run", "RUN_FILE", "METRICS_FILE", "write_json", "read_json", "is_run_dir", "launch_rank",
           "launch_world_size"]

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
STRENGTHS_FILE = "strengths.json"
AVF_FILE = "avf_history.json"
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
PLOTS_DIR = "plots"
CHECKPOINTS_DIR = "checkpoints"


def _default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: Union[str, os.PathLike], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (a temporary file renamed over ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, default=_default, allow_nan=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: Union[str, os.PathLike]) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CLIError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CLIError(f"{path} is not valid JSON ({exc})") from None


def is_run_dir(path: Union[str, os.PathLike]) -> bool:
    return (Path(path) / RUN_FILE).is_file()


@dataclass
class Run:
    """A run directory and its ``run.json``."""

    path: Path
    info: dict

    @classmethod
    def open(cls, path: Union[str, os.PathLike]) -> "Run":
        path = Path(path).expanduser()
        if not path.is_dir():
            raise CLIError(f"run directory {str(path)!r} does not exist")
        if not (path / RUN_FILE).is_file():
            raise CLIError(f"{str(path)!r} is not a run directory (no {RUN_FILE}); give the --output of a"
                           " `vectorfit train` run")
        info = read_json(path / RUN_FILE)
        if not isinstance(info, dict) or "backend" not in info or "method" not in info:
            raise CLIError(f"{path / RUN_FILE} is not a vectorfit run description")
        return cls(path, info)

    # --------------------------------------------------------------------------------------- accessors
    @property
    def backend(self) -> str:
        return self.info["backend"]

    @property
    def method(self) -> str:
        return self.info["method"]["name"]

    @property
    def model_spec(self) -> str:
        return self.info["model"]

    @property
    def label_names(self) -> Optional[list[str]]:
        return self.info.get("label_names")

    @property
    def task(self) -> str:
        """The kind of labels: ``classification`` or ``regression``."""
        return self.info.get("task", "classification")

    @property
    def task_name(self) -> Optional[str]:
        """The :class:`~vf_core.tasks.Task` that trained the run (None for runs made before tasks had names)."""
        return self.info.get("task_name")

    @property
    def num_labels(self) -> int:
        names = self.label_names
        return len(names) if names else 1

    @property
    def adapter_dir(self) -> Path:
        return self.path / ADAPTER_DIR

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIR

    @property
    def plots_dir(self) -> Path:
        return self.path / PLOTS_DIR

    def metrics(self) -> dict:
        p = self.path / METRICS_FILE
        return read_json(p) if p.is_file() else {}


def launch_rank() -> int:
    """This process's rank when a launcher (``torchrun``, ``accelerate launch``, ``deepspeed``) started several,
    read from ``RANK``; 0 otherwise. Only rank 0 writes the run folder."""
    return int(os.environ.get("RANK", "0") or 0)


def launch_world_size() -> int:
    """How many processes the launcher started (``WORLD_SIZE``), 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


LOCK_FILE = ".vectorfit.lock"


class RunLock:
    """An exclusive lock on a run directory while a run writes it, so that a second run started into the same
    ``--output`` is refused at once instead of interleaving its files with the first's. The lock is the operating
    system's (``flock`` on the file ``DIR/.vectorfit.lock``): it is released when the run ends, however it ends, so
    a crashed run never leaves a stale lock. Where ``fcntl`` does not exist (Windows) it is a no-op.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d, RunLock(d):
        ...     pass
    """

    def __init__(self, directory: Union[str, os.PathLike]) -> None:
        self.path = Path(directory) / LOCK_FILE
        self._fh = None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise CLIError(f"{self.path.parent} is being written by another run (pid {holder}); wait for it to end,"
                           " or choose another --output") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fh is not None:
            import fcntl

            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
