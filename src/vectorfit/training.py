"""What every task shares around its engine: parameter groups, strength recording, and the run directory.

A task's runner loads model and data, has the method applied (:func:`vectorfit.methods.apply_method`, through
:meth:`vectorfit.context.RunContext.prepare`), trains with its engine, then finishes the run
(:func:`finish_run`), which saves the adapter (or model), ``metrics.json``, the strength history and the plots.
The runner reaches all of this through the :class:`~vectorfit.context.RunContext` it is handed; the plots can be
redrawn later with ``vectorfit plot DIR``.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from vf_core.tasks import Task

from . import plots
from .errors import CLIError
from .methods import MethodSpec, Prepared, family_targets, save_trained
from .rundir import (
    ADAPTER_DIR,
    AVF_FILE,
    METRICS_FILE,
    MODEL_DIR,
    PLOTS_DIR,
    RUN_FILE,
    STRENGTHS_FILE,
    Run,
    is_run_dir,
    launch_rank,
    launch_world_size,
    read_json,
    write_json,
)

__all__ = ["optimizer_groups", "LR_KINDS", "clip_vector_gradients", "StrengthRecorder", "write_run_info",
           "finish_run", "draw_plots", "find_full_run", "Timer", "optimizer_steps", "initial_weights",
           "summary_lines"]


def optimizer_steps(num_train: int, args: argparse.Namespace) -> tuple[int, int]:
    """``(steps per epoch, total optimizer steps)`` of a run: ``--max-steps`` if given, else ``--epochs`` epochs
    of ``--batch-size`` batches (at least one step); ``--batch-size`` is per process, so the processes of a
    multi-process launch take one step together."""
    per_epoch = -(-num_train // (args.batch_size * launch_world_size()))
    return per_epoch, args.max_steps or max(1, int(round(per_epoch * args.epochs)))


def initial_weights(model, spec: MethodSpec) -> tuple[list, dict]:
    """``(targets, {name: W0})``: the method's targeted modules and their weights before training, the reference
    of the run's plots."""
    targets, _, _ = family_targets(model, spec)
    return targets, plots.capture_matrices(model, [t[0] for t in targets])


#: the kinds of trainable parameter that can take their own learning rate (``--lr-sigma`` ...)
LR_KINDS = ("sigma", "bias", "head")


def optimizer_groups(prepared: Prepared, args: argparse.Namespace) -> list[dict]:
    """AdamW parameter groups of a run: every trainable parameter once, in a group per kind with its own learning
    rate (``--lr-sigma`` for the spectral vectors ``s``, ``s_r`` and ``M``, ``--lr-bias`` for the biases,
    ``--lr-head`` for the new head; each defaults to ``--lr``, except VectorFit's biases, which the command gives
    0.3 times it, ``DEFAULT_LR_SCALE``; anything else, such as LoRA's factors, takes ``--lr``). Weight decay
    spares biases, as the Trainer's default does. Empty groups are left out. Vector methods take their groups from
    :meth:`vf_core.VectorFitModel.parameter_groups`."""
    rates = {kind: getattr(args, f"lr_{kind}", None) or args.lr for kind in LR_KINDS}
    decay = getattr(args, "weight_decay", 0.0) or 0.0
    if prepared.vf is not None:
        out = prepared.vf.parameter_groups(args.lr, sigma_lr=rates["sigma"], bias_lr=rates["bias"],
                                           head_lr=rates["head"], weight_decay=decay)
    else:
        head_ids = {id(p) for h in prepared.heads for p in prepared.base.get_submodule(h).parameters()}
        groups: dict[str, list] = {"bias": [], "head": []}
        for name, param in prepared.model.named_parameters():
            if param.requires_grad and id(param) in head_ids:
                groups["head"].append(param)
            elif param.requires_grad and prepared.spec.name == "bitfit" and name.endswith("bias"):
                groups["bias"].append(param)
        out = [{"params": params, "lr": rates[kind], "name": kind, "weight_decay": 0.0 if kind == "bias" else decay}
               for kind, params in groups.items() if params]
    taken = {id(p) for group in out for p in group["params"]}
    rest = []
    for param in prepared.model.parameters():
        if param.requires_grad and id(param) not in taken:
            taken.add(id(param))
            rest.append(param)
    if rest:
        out.append({"params": rest, "lr": args.lr, "name": "other", "weight_decay": decay})
    return out


def clip_vector_gradients(vf, max_norm: float) -> None:
    """Clip the gradient of each trainable vector of ``vf`` (a VectorFitModel) to norm ``max_norm`` on its own
    (``--max-grad-norm-per-vector``); a no-op for ``max_norm <= 0`` or ``vf`` None."""
    if vf is None or not max_norm or max_norm <= 0:
        return
    for vec in vf.vectors:
        torch.nn.utils.clip_grad_norm_(vec.parameter, max_norm)  # a parameter without a gradient is skipped


#: options not stored in run.json (they do not change what the run computes)
_VOLATILE = {"func", "command", "resume", "overwrite", "no_progress", "threads", "verbose", "method_spec", "argv"}


class Timer:
    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


# ------------------------------------------------------------------------------------------------ strengths
class StrengthRecorder:
    """Records every trainable vector's training strength ``S`` (vf_core ``TrainableVector.strength``)."""

    def __init__(self, vf) -> None:
        self.vf = vf
        self.history: list[dict] = []

    def record(self, step: int, frozen: Sequence[str] = ()) -> None:
        if self.history and self.history[-1]["step"] == step:
            self.history.pop()
        self.history.append({"step": int(step), "frozen": list(frozen), "scores": self.vf.vectors.strengths()})

    def vectors(self) -> list[dict]:
        return [{"name": v.name, "layer": v.layer, "role": v.role, "kind": v.kind, "numel": v.numel}
                for v in self.vf.vectors]

    def to_json(self) -> dict:
        return {"vectors": self.vectors(), "history": self.history}


# ------------------------------------------------------------------------------------------------ run files
def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("vectorfit", "vf-core", "vf-avf", "vf-backends-nlp", "vf-backends-vision", "torch", "transformers",
                 "timm", "peft", "accelerate"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def stored_args(args: argparse.Namespace) -> dict:
    out = {}
    for key, value in vars(args).items():
        if key in _VOLATILE or callable(value):
            continue
        out[key] = str(value) if isinstance(value, Path) else value
    return out


def write_run_info(args: argparse.Namespace, *, backend: str, model_path: str, label_names: Optional[list],
                   task: str, num_train: int, num_eval: int, extra: Optional[dict] = None,
                   task_name: Optional[str] = None) -> dict:
    """Write ``DIR/run.json`` (before training starts, so that ``--resume`` finds it). ``task`` is the kind of
    labels (``classification``, ``regression``), ``task_name`` the :class:`~vf_core.tasks.Task` that ran."""
    spec: MethodSpec = args.method_spec
    info = {
        "format": "vectorfit-run/1",
        "backend": backend,
        "model": args.model,
        "model_path": model_path,
        "data": args.data,
        "task": task,
        "task_name": task_name,
        "label_names": label_names,
        "num_train": num_train,
        "num_eval": num_eval,
        "method": spec.to_json(),
        "method_label": spec.label(),
        "args": stored_args(args),
        "versions": _versions(),
        "platform": {"machine": platform.machine(), "system": platform.system(),
                     "processor": platform.processor() or None, "argv": sys.argv[1:]},
    }
    info.update(extra or {})
    if launch_rank() == 0:  # the other processes of a multi-process launch write nothing
        write_json(Path(args.output) / RUN_FILE, info)
    return info


def find_full_run(output: Path, model: str, data: str, explicit: Optional[str] = None) -> Optional[Run]:
    """The full fine-tuning run to compare against: ``--compare-full`` or a sibling run directory of ``output``
    that fine-tuned the same model on the same data with ``--method full`` and finished."""
    if explicit:
        run = Run.open(explicit)
        if run.method != "full":
            raise CLIError(f"--compare-full {explicit}: that run used method {run.method!r}, not 'full'")
        if not run.model_dir.is_dir():
            raise CLIError(f"--compare-full {explicit}: it has no model/ directory (did the run finish?)")
        return run
    parent = Path(output).resolve().parent
    try:
        siblings = sorted(p for p in parent.iterdir() if p.is_dir() and p.resolve() != Path(output).resolve())
    except OSError:
        return None
    for path in siblings:
        if not is_run_dir(path) or not (path / METRICS_FILE).is_file():
            continue
        try:
            run = Run.open(path)
        except CLIError:
            continue
        if run.method == "full" and run.model_spec == model and run.info.get("data") == data and run.model_dir.is_dir():
            return run
    return None


def draw_plots(plots_dir: Path, *, targets: list, w0: dict, w1: dict, w_full: Optional[dict], label: str,
               strengths: Optional[dict], avf_state: Optional[dict]) -> list[str]:
    """Draw the run's figures into ``plots_dir``; returns the file names written."""
    if not plots.have_matplotlib():
        print("vectorfit: matplotlib is not installed; skipping plots (pip install matplotlib)", file=sys.stderr)
        return []
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if strengths and strengths.get("history"):
        last = strengths["history"][-1]
        plots.plot_strength_heatmap(last["scores"], strengths["vectors"], plots_dir / "training_strength.png",
                                    frozen=last.get("frozen", ()),
                                    title=f"Training strength S, step {last['step']}"
                                          + (" (red: frozen by AVF)" if last.get("frozen") else ""))
        written.append("training_strength.png")
    if avf_state and any(r.get("scores") for r in avf_state.get("history", [])):
        try:
            from vf_avf.plot import plot_strengths

            plot_strengths(avf_state, path=plots_dir / "training_strength_avf.png")
            written.append("training_strength_avf.png")
        except ImportError:
            pass
    method_spectra = {n: s for n, s in plots.spectra(w0, w1).items() if max(s["delta"], default=0.0) > 0.0}
    full_spectra = plots.spectra(w0, w_full) if w_full else None
    write_json(plots_dir / "spectra.json", {"method": method_spectra, "full": full_spectra,
                                            "targets": [list(t) for t in targets]})
    if method_spectra:
        plots.plot_weight_change_spectra(targets, method_spectra, plots_dir / "weight_change_spectra.png",
                                         full=full_spectra, label=label)
        plots.plot_leading_sv_change(targets, method_spectra, plots_dir / "leading_sv_change.png",
                                     full=full_spectra, label=label)
        written += ["weight_change_spectra.png", "leading_sv_change.png"]
    return written


def finish_run(args: argparse.Namespace, prepared: Prepared, metrics: dict, *, task: Task, train_seconds: float,
               save_full_model: Callable[[Path], None], w0: Optional[dict] = None,
               recorder: Optional[StrengthRecorder] = None, avf_state: Optional[dict] = None,
               load_full: Optional[Callable[[Run], Any]] = None, extra: Optional[dict] = None) -> dict:
    """Save the trained state, ``metrics.json``, strengths and plots into ``args.output``; returns the metrics.
    The headline metric (``primary_metric``) and the stall check are ``task``'s. In a multi-process launch only
    rank 0 writes; the others return their metrics as they are."""
    if launch_rank() != 0:
        return {**{k: v for k, v in metrics.items() if not k.startswith("_")}, "adapter": None, "model_dir": None}
    out = Path(args.output)
    spec = prepared.spec
    if spec.name == "full":
        save_full_model(out / MODEL_DIR)
    else:
        save_trained(prepared, out / ADAPTER_DIR)
    if recorder is not None:
        write_json(out / STRENGTHS_FILE, recorder.to_json())
    if avf_state is not None:
        write_json(out / AVF_FILE, avf_state)
    info = read_json(out / RUN_FILE)
    result = {k: v for k, v in metrics.items() if not k.startswith("_")}
    result.update({
        "method": spec.name,
        "method_label": spec.label(),
        "model": args.model,
        "data": args.data,
        "task": info.get("task", "classification"),
        "primary_metric": task.headline,
        "trainable_params": int(prepared.trainable_params),
        "total_params": int(prepared.total_params),
        "trainable_percent": 100.0 * prepared.trainable_params / max(prepared.total_params, 1),
        "trainable_breakdown": prepared.breakdown,
        "train_seconds": round(float(train_seconds), 2),
        "num_train": info.get("num_train"),
        "num_eval": info.get("num_eval"),
        "seed": args.seed,
        "learning_rate": args.lr,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "adapter": str(out / ADAPTER_DIR) if spec.name != "full" else None,
        "model_dir": str(out / MODEL_DIR) if spec.name == "full" else None,
    })
    result.update(extra or {})
    verdict = task.stalled(result) if task.stalled is not None else None
    result["stalled"] = verdict is not None
    if verdict is not None:
        result["stalled_reason"] = verdict
    plots_written: list[str] = []
    if not args.no_plots and w0 is not None:
        try:
            w1 = plots.capture_matrices(prepared.base, list(w0))
            full_run = None if spec.name == "full" else find_full_run(out, args.model, args.data, args.compare_full)
            w_full = None
            if full_run is not None and load_full is not None:
                w_full = plots.capture_matrices(load_full(full_run), list(w0))
                result["compared_with_full_run"] = str(full_run.path)
            plots_written = draw_plots(out / PLOTS_DIR, targets=prepared.targets, w0=w0, w1=w1, w_full=w_full,
                                       label=spec.label(), strengths=recorder.to_json() if recorder else None,
                                       avf_state=avf_state)
        except CLIError:
            raise
        except Exception as exc:  # a figure must never lose a finished run
            print(f"vectorfit: warning: plotting failed ({type(exc).__name__}: {exc}); the run itself is saved."
                  f" Retry with `vectorfit plot {out}`", file=sys.stderr)
    result["plots"] = [str(out / PLOTS_DIR / p) for p in plots_written]
    write_json(out / METRICS_FILE, _finite(result))
    return result


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def summary_lines(metrics: dict, output: Path) -> list[str]:
    """What ``vectorfit train`` prints at the end."""
    key = metrics.get("primary_metric", "eval_accuracy")
    value = metrics.get(key)
    shown = f"{value:.4f}" if isinstance(value, (int, float)) else str(value)
    lines = [f"{key}: {shown}"]
    if metrics.get("stalled"):
        lines.insert(0, f"WARNING: this run stalled: {metrics.get('stalled_reason', 'it learnt a constant answer')};"
                        " it is not a result. Try another --seed, a lower --lr, or more steps (docs/method.md)")
    if metrics.get("task") == "regression" and metrics.get("eval_mse") is not None:
        lines[0] += f"   eval_mse: {metrics['eval_mse']:.4f}"
    lines.append(f"trainable params: {metrics['trainable_params']:,} of {metrics['total_params']:,}"
                 f" ({metrics['trainable_percent']:.4f}%)   method: {metrics['method_label']}")
    lines.append(f"train time: {metrics['train_seconds']:.1f} s")
    if metrics.get("adapter"):
        lines.append(f"adapter: {metrics['adapter']}")
    if metrics.get("model_dir"):
        lines.append(f"model: {metrics['model_dir']}")
    if metrics.get("plots"):
        names = ", ".join(Path(p).name for p in metrics["plots"])
        lines.append(f"plots: {Path(metrics['plots'][0]).parent}/ ({names})")
    lines.append(f"metrics: {output / METRICS_FILE}")
    return lines
