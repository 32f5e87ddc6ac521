"""``toy-regression``: predict the sum of a vector with a toy residual MLP, trained by any method of the command.

The record (:data:`TASK`) says what the task accepts and how it builds, batches and scores; the runner
(:class:`ToyRunner`) is a plain PyTorch loop that gets everything about the method and the run folder from the
:class:`~vf_core.tasks.TaskContext` the command hands it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from vf_core.errors import TaskError
from vf_core.families import Family
from vf_core.metrics import regression_metrics, regression_stall
from vf_core.tasks import NO, SURE, Task, TaskContext

__all__ = ["ToyNet", "FAMILY", "TASK", "ToyRunner", "toy_sums", "build", "batches"]

MODEL, DATA, WEIGHTS = "toy-mlp", "toy-sums", "toy_model.pt"


class ToyBlock(nn.Module):
    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.nn.functional.gelu(self.up(x)))


class ToyNet(nn.Module):
    """Two residual MLP blocks and a one-output head."""

    def __init__(self, d: int = 8, hidden: int = 16, blocks: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ToyBlock(d, hidden) for _ in range(blocks))
        self.head = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x).squeeze(-1)


#: which module plays which role in ToyNet (so every method targets it with no --target-modules)
FAMILY = Family(name="toy-mlp", backend="toy", block_pattern=r"blocks\.\d+", roles={"f1": ("up",), "f2": ("down",)},
                heads=("head",), class_names=("ToyNet",), notes="the example task's model (vf-task-example)")


def build(spec: str) -> ToyNet:
    """The ``toy-mlp`` base (seeded), or a folder a full run or ``vectorfit merge`` saved."""
    torch.manual_seed(0)
    model = ToyNet()
    if spec != MODEL:
        path = Path(spec) / WEIGHTS
        if not path.is_file():
            raise TaskError(f"model {spec!r}: no {WEIGHTS} in it; give {MODEL!r} or a folder this task saved")
        model.load_state_dict(torch.load(path, weights_only=True))
    return model


def toy_sums(n_train: int = 256, n_eval: int = 64, seed: int = 0, d: int = 8):
    """``((x_train, y_train), (x_eval, y_eval))``: random vectors and their sums."""
    x = torch.randn(n_train + n_eval, d, generator=torch.Generator().manual_seed(seed))
    y = x.sum(-1)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: Optional[torch.Generator] = None):
    """Shuffled (with ``generator``) or ordered batches of ``(x, y)``."""
    order = torch.randperm(len(x), generator=generator) if generator is not None else torch.arange(len(x))
    for i in range(0, len(x), batch_size):
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]


class ToyRunner:
    """A plain loop; the method, its optimizer groups, AVF and the run folder come from the context."""

    def load_model(self, spec: str, *, run=None, num_labels: Optional[int] = None) -> ToyNet:
        return build(spec)

    def save_model(self, model: nn.Module, directory: str, run) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), Path(directory) / WEIGHTS)

    def _data(self, settings, run=None):
        stored = run.info.get("args", {}) if run is not None else {}
        seed = stored.get("data_seed", getattr(settings, "data_seed", 0))
        n_train = getattr(settings, "max_train", None) or stored.get("max_train") or 256
        n_eval = getattr(settings, "max_eval", None) or stored.get("max_eval") or 64
        return toy_sums(n_train, n_eval, seed)

    @torch.no_grad()
    def _scores(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task) -> dict:
        model.eval()
        pred = model(x)
        out = {f"eval_{k}": v for k, v in task.metrics(pred.numpy(), y.numpy()).items()}
        out["eval_loss"] = float(torch.nn.functional.mse_loss(pred, y))
        return out

    def train(self, ctx: TaskContext) -> dict:
        s, task = ctx.settings, ctx.task
        (x, y), (x_eval, y_eval) = self._data(s)
        model = task.build(s.model)
        _, total = ctx.training_steps(len(x))
        ctx.record_run(model_path=s.model, label_names=None, kind="regression", num_train=len(x),
                       num_eval=len(x_eval))
        w0 = ctx.initial_weights(model)
        prepared = ctx.prepare(model, total_steps=total)
        optimizer = torch.optim.AdamW(ctx.optimizer_groups(prepared), lr=s.lr, weight_decay=s.weight_decay)
        freezer, recorder = ctx.freezer(prepared, total), ctx.strength_recorder(prepared)
        generator = torch.Generator().manual_seed(s.seed)
        step, start, history = 0, time.perf_counter(), []
        while step < total:
            prepared.model.train()
            for xb, yb in task.collator(x, y, s.batch_size, generator):
                loss = torch.nn.functional.mse_loss(prepared.model(xb), yb)
                loss.backward()
                if freezer is not None:
                    freezer.step(step)
                ctx.clip_vector_gradients(prepared)
                optimizer.step()
                ctx.adalora_update(prepared, step)
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if step >= total:
                    break
            history.append({"step": step, **self._scores(prepared.model, x_eval, y_eval, task)})
            if recorder is not None:
                recorder.record(step, sorted(freezer.frozen) if freezer is not None else ())
        seconds = time.perf_counter() - start
        metrics = {k: v for k, v in history[-1].items() if k.startswith("eval_")}
        metrics.update({"epoch_history": history, "train_steps": step})
        return ctx.finish(prepared, metrics, train_seconds=seconds, w0=w0, recorder=recorder,
                          save_full_model=lambda d: self.save_model(prepared.model, str(d), None),
                          avf_state=freezer.state_dict() if freezer is not None else None,
                          load_full=lambda run: self.load_model(str(run.model_dir)), extra={"engine": "plain loop"})

    def evaluate(self, model: nn.Module, ctx: TaskContext) -> dict:
        (x, y), (x_eval, y_eval) = self._data(ctx.settings, ctx.run)
        if getattr(ctx.settings, "split", "eval") == "train":
            x_eval, y_eval = x, y
        return {**self._scores(model, x_eval, y_eval, ctx.task), "num_examples": len(x_eval)}


TASK = Task(
    name="toy-regression",
    backend="toy",
    description="predict the sum of a vector of numbers with a toy residual MLP (an example plugin task)",
    models=f"{MODEL!r}, or a folder this task saved (`vectorfit merge`, --method full)",
    data=f"{DATA!r}: random 8-vectors and their sums (--max-train/--max-eval examples)",
    model_aliases={MODEL: "ToyNet: 2 residual MLP blocks (8 -> 16 -> 8) and a one-output head"},
    datasets={DATA: "256 + 64 random vectors in R^8 and their sums"},
    claim_model=lambda spec: SURE if spec == MODEL or (Path(spec) / WEIGHTS).is_file() else NO,
    claim_data=lambda spec: SURE if spec == DATA else NO,
    runner=ToyRunner,
    build=build,
    collator=batches,
    metrics=regression_metrics,
    headline="eval_pearson",
    stalled=regression_stall,
    defaults={"epochs": 8.0, "batch_size": 32, "avf_k": 1},
    engine="plain PyTorch loop",
)
