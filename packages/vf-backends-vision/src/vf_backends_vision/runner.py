"""The runner of the vision backend's task (``image-classification``): accelerate.

Why accelerate and not the Hugging Face Trainer: this backend must not need transformers. accelerate (a torch
add-on) supplies what a maintained engine gives: device placement and mixed precision (``Accelerator``),
``save_state``/``load_state`` checkpoints of model, optimizer, scheduler and RNG states (``--resume``), and
``clip_grad_norm_``; the epoch structure around it is the same as the Trainer's: tqdm progress bars,
evaluation at the end of every epoch, one checkpoint per epoch in ``DIR/checkpoints/epoch-N`` (the last
``--save-total-limit`` kept), AdamW with linear / cosine / constant schedules and optional warm-up.

* model: the task's ``build``, :func:`vf_backends_vision.models.load_image_classifier`, a new head of the
  data's class count;
* data: :func:`vf_backends_vision.data.load_image_dataset` at ``--image-size`` (default: the model's input
  size), normalised with the model's mean and std, batched by the task's ``collator``
  (:func:`~vf_backends_vision.data.image_batches`), scored by its ``metrics``;
* batch norm: every method but ``full`` trains with batch-norm layers in eval mode (running statistics frozen),
  since an adapter does not hold them; ``full`` saves the whole model and uses train-mode batch norm;
* AVF: the :class:`vf_avf.VectorFreezer` the command hands over (``ctx.freezer``), stepped after ``backward()``
  and before clipping and ``optimizer.step()``; its state is saved with each checkpoint. AdaLoRA:
  ``update_and_allocate`` after every optimizer step (``ctx.adalora_update``).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from vf_core.errors import TaskError
from vf_core.tasks import RunRecord, TaskContext

from .data import DataError, ImageDataset, load_image_dataset
from .models import load_image_classifier, save_image_classifier

__all__ = ["VisionRunner"]

PROGRESS_FILE = "vectorfit_progress.json"
AVF_STATE_FILE = "vectorfit_avf_state.json"


def _schedule(name: str, total: int, warmup: int):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if name == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return max(0.0, 1.0 - progress)

    return factor


def _freeze_norm_statistics(model) -> None:
    """Keep batch-norm layers in eval mode: their running statistics are not part of an adapter (VectorFit,
    LoRA, BitFit save only what trains), so they must not drift, or the saved adapter would not reproduce the
    trained model. Full fine-tuning saves the whole model and keeps the usual train-mode batch norm."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def _logits(output):
    return output.logits if hasattr(output, "logits") else output


def _subset(data: ImageDataset, indices) -> ImageDataset:
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    return ImageDataset(data.images[idx], data.labels[idx], data.label_names)


class VisionRunner:
    """Runs ``vectorfit`` commands for timm image classifiers (see the module docstring)."""

    # ---------------------------------------------------------------------------------------- models
    def _load(self, spec: str, *, num_classes: Optional[int], args=None, run: Optional[RunRecord] = None):
        stored = run.info.get("args", {}) if run is not None else {}
        checkpoint = getattr(args, "checkpoint", None) or stored.get("checkpoint")
        random_init = bool(getattr(args, "random_init", False) or stored.get("random_init"))
        if random_init:  # a randomly initialised base is rebuilt identically from the run's seed
            torch.manual_seed(getattr(args, "seed", None) if getattr(args, "seed", None) is not None
                              else stored.get("seed", 0))
        try:
            return load_image_classifier(spec, num_classes=num_classes, checkpoint=checkpoint, random_init=random_init)
        except DataError as exc:
            raise TaskError(" ".join(str(exc).split())) from None

    def load_model(self, spec: str, *, run: Optional[RunRecord] = None, num_labels: Optional[int] = None):
        if run is not None:
            num_labels = run.num_labels
            if Path(spec) == run.model_dir:  # a full run's own model: its weights only, no checkpoint option
                return self._load(spec, num_classes=num_labels)[0]
        return self._load(spec, num_classes=num_labels, run=run)[0]

    def save_model(self, model, directory: str, run: Optional[RunRecord]) -> None:
        pre = run.info.get("preprocessing") if run is not None else None
        save_image_classifier(model, directory, preprocessing=pre, label_names=run.label_names if run else None)

    # ---------------------------------------------------------------------------------------- data
    def _data(self, args, preprocessing: dict, run: Optional[RunRecord] = None, image_size=None):
        stored = run.info.get("args", {}) if run is not None else {}
        spec = getattr(args, "data", None) or (run.info["data"] if run is not None else None)
        same = run is not None and spec == run.info.get("data")
        size = image_size or getattr(args, "image_size", None) or stored.get("image_size") \
            or preprocessing["input_size"]
        try:
            return load_image_dataset(
                spec, image_size=size, mean=preprocessing["mean"], std=preprocessing["std"],
                seed=stored.get("data_seed", 0) if same else getattr(args, "data_seed", 0),
                eval_fraction=stored.get("eval_fraction", 0.2) if same else getattr(args, "eval_fraction", 0.2),
                max_train=getattr(args, "max_train", None),
                max_eval=getattr(args, "max_eval", None) or (stored.get("max_eval") if same else None)), size
        except DataError as exc:
            raise TaskError(" ".join(str(exc).split())) from None

    # ---------------------------------------------------------------------------------------- train
    def train(self, ctx: TaskContext) -> dict:
        from accelerate import Accelerator
        from accelerate.utils import set_seed
        from tqdm.auto import tqdm

        args, task = ctx.settings, ctx.task
        set_seed(args.seed)
        # the head is sized after the data; the model is loaded first for its pre-processing
        model, preprocessing = self._load(args.model, num_classes=None, args=args)
        (train_data, eval_data), size = self._data(args, preprocessing)
        if len(train_data) == 0 or len(eval_data) == 0:
            raise TaskError(f"data {args.data!r}: the train or eval split is empty")
        validation_data = None
        split = ctx.validation_split(len(train_data))  # --validation-fraction: held out of the training examples
        if split is not None:
            train_data, validation_data = (_subset(train_data, idx) for idx in split)
        set_seed(args.seed)
        if getattr(model, "num_classes", None) != train_data.num_labels:
            model.reset_classifier(train_data.num_labels)
        preprocessing = {**preprocessing, "input_size": list(size) if not isinstance(size, int) else [size, size]}
        steps_per_epoch, total_steps = ctx.training_steps(len(train_data))
        epochs = math.ceil(total_steps / steps_per_epoch)
        spec = ctx.method
        ctx.record_run(model_path=args.model, label_names=train_data.label_names, kind="classification",
                       num_train=len(train_data), num_eval=len(eval_data),
                       extra={"preprocessing": preprocessing, "total_steps": total_steps,
                              "num_validation": len(validation_data) if validation_data is not None else 0})
        w0 = ctx.initial_weights(model)
        prepared = ctx.prepare(model, total_steps=total_steps)

        accelerator = Accelerator(cpu=args.device == "cpu" or not torch.cuda.is_available(),
                                  project_dir=str(ctx.checkpoints))
        if args.device == "cuda" and not torch.cuda.is_available():
            raise TaskError("--device cuda: no CUDA device is available")
        params = [p for p in prepared.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(ctx.optimizer_groups(prepared), lr=args.lr, weight_decay=args.weight_decay,
                                      betas=(0.9, 0.999))
        warmup = int(args.warmup_ratio * total_steps) if args.warmup_ratio < 1 else int(args.warmup_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(args.scheduler, total_steps, warmup))
        generator = torch.Generator().manual_seed(args.seed)
        train_loader = task.collator(train_data, args.batch_size, shuffle=True, generator=generator)
        eval_loader = task.collator(eval_data, args.eval_batch_size)
        net, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
            prepared.model, optimizer, train_loader, eval_loader, scheduler)
        # with --validation-fraction the evaluations during training score the validation split
        during_loader = eval_loader
        if validation_data is not None:
            during_loader = accelerator.prepare(task.collator(validation_data, args.eval_batch_size))
        stopper = ctx.early_stopping(prepared) if validation_data is not None else None

        freezer = ctx.freezer(prepared, total_steps)
        recorder = ctx.strength_recorder(prepared)

        start_epoch, global_step, history = 0, 0, []
        resume = self._resume_folder(args, ctx.checkpoints)
        if resume is not None:
            accelerator.load_state(str(resume))
            progress = json.loads((resume / PROGRESS_FILE).read_text())
            start_epoch, global_step, history = progress["epoch"], progress["global_step"], progress["history"]
            generator.manual_seed(args.seed + start_epoch)
            if freezer is not None and (resume / AVF_STATE_FILE).is_file():
                freezer.load(resume / AVF_STATE_FILE)
            if recorder is not None:
                recorder.history = progress.get("strengths", [])

        def frozen():
            return sorted(freezer.frozen) if freezer is not None else ()

        eval_metrics: dict = {}
        start = time.perf_counter()
        for epoch in range(start_epoch, epochs):
            if global_step >= total_steps:
                break
            generator.manual_seed(args.seed + epoch)
            net.train()
            if spec.name != "full":
                _freeze_norm_statistics(net)
            bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{epochs}", disable=args.no_progress,
                       file=sys.stderr, leave=False)
            running, seen = 0.0, 0
            for images, labels in bar:
                loss = F.cross_entropy(_logits(net(images)), labels)
                if not torch.isfinite(loss.detach()):  # stop with one line, before the state is spoilt
                    raise TaskError(f"the training loss became {float(loss)} at step {global_step}; the run stopped"
                                    " and wrote no metrics; the checkpoints of the finished epochs are kept (--resume"
                                    " after fixing the cause). Lower --lr (or --lr-bias / --lr-sigma), or check the data")
                accelerator.backward(loss)
                ctx.optimizer_step(prepared, optimizer=optimizer, scheduler=scheduler, global_step=global_step,
                                   freezer=freezer,
                                   clip_grad_norm=lambda norm: accelerator.clip_grad_norm_(params, norm))
                global_step += 1
                running, seen = running + float(loss), seen + 1
                if global_step % args.logging_steps == 0:
                    bar.set_postfix(loss=f"{running / seen:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                if global_step >= total_steps:
                    break
            bar.close()
            eval_metrics = self._eval_loop(net, during_loader, train_data.num_labels, task.metrics)
            eval_metrics.update({"epoch": epoch + 1, "step": global_step,
                                 "train_loss": running / max(seen, 1)})
            history.append(eval_metrics)
            stop = stopper is not None and stopper.update(global_step, eval_metrics, epoch=epoch + 1)
            if recorder is not None:
                recorder.record(global_step, frozen())
            if not args.no_progress:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items() if isinstance(v, float))
                print(f"epoch {epoch + 1}: {shown}", file=sys.stderr)
            if not args.no_checkpoints:
                self._checkpoint(accelerator, ctx.checkpoints, epoch + 1, global_step, history, freezer, recorder,
                                 args.save_total_limit)
            if stop:
                break
        train_seconds = time.perf_counter() - start
        metrics = {k: v for k, v in history[-1].items() if k.startswith("eval_")} if history else {}
        metrics["epoch_history"] = history
        if stopper is not None:  # the best state back, then the eval split once
            validation = stopper.finish()
            final = self._eval_loop(net, eval_loader, train_data.num_labels, task.metrics)
            metrics = {**{k: v for k, v in final.items() if k.startswith("eval_")}, **validation,
                       "epoch_history": validation["validation_history"]}
        metrics["train_loss"] = history[-1].get("train_loss") if history else None
        metrics["train_steps"] = global_step
        avf_state = freezer.state_dict() if freezer is not None else None
        result = ctx.finish(
            prepared, metrics, train_seconds=train_seconds,
            save_full_model=lambda d: save_image_classifier(prepared.model, d, preprocessing=preprocessing,
                                                            label_names=train_data.label_names),
            w0=w0, recorder=recorder, avf_state=avf_state,
            load_full=lambda full_run: self.load_model(str(full_run.model_dir), run=full_run),
            extra={"engine": "accelerate", "image_size": preprocessing["input_size"],
                   "resumed_from": str(resume) if resume else None})
        return result

    def _resume_folder(self, args, checkpoints: Path) -> Optional[Path]:
        if not args.resume:
            return None
        if args.resume != "last":
            folder = Path(args.resume)
            if not (folder / PROGRESS_FILE).is_file():
                raise TaskError(f"--resume {args.resume}: not a checkpoint folder of this backend")
            return folder
        folders = sorted(checkpoints.glob("epoch-*"), key=lambda p: int(p.name.split("-")[1]))
        folders = [f for f in folders if (f / PROGRESS_FILE).is_file()]
        if not folders:
            raise TaskError(f"--resume: no checkpoint in {checkpoints} (was the run started with"
                           " --no-checkpoints?)")
        return folders[-1]

    def _checkpoint(self, accelerator, checkpoints: Path, epoch: int, step: int, history, freezer, recorder, keep: int):
        folder = checkpoints / f"epoch-{epoch}"
        accelerator.save_state(str(folder))
        if freezer is not None:
            freezer.save(folder / AVF_STATE_FILE)
        (folder / PROGRESS_FILE).write_text(json.dumps({
            "epoch": epoch, "global_step": step, "history": history,
            "strengths": recorder.history if recorder is not None else []}))
        folders = sorted(checkpoints.glob("epoch-*"), key=lambda p: int(p.name.split("-")[1]))
        for old in folders[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    @torch.no_grad()
    def _eval_loop(self, net, loader, num_labels: int, metrics_fn) -> dict:
        net.eval()
        logits, labels, loss_sum, n = [], [], 0.0, 0
        for images, y in loader:
            out = _logits(net(images)).float()
            loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
            n += len(y)
            logits.append(out.cpu())
            labels.append(y.cpu())
        metrics = metrics_fn(torch.cat(logits).numpy(), torch.cat(labels).numpy(), num_labels)
        result = {f"eval_{k}": v for k, v in metrics.items()}
        result["eval_loss"] = loss_sum / max(n, 1)
        return result

    # ---------------------------------------------------------------------------------------- evaluate
    def evaluate(self, model, ctx: TaskContext) -> dict:
        args, run = ctx.settings, ctx.run
        pre = run.info.get("preprocessing") if run is not None else None
        if pre is None:
            spec = args.model
            _, pre = self._load(spec, num_classes=None, args=args)
        (train_data, eval_data), _ = self._data(args, pre, run, image_size=(pre or {}).get("input_size"))
        data = train_data if getattr(args, "split", "eval") == "train" else eval_data
        if getattr(args, "max_eval", None):
            data = ImageDataset(data.images[:args.max_eval], data.labels[:args.max_eval], data.label_names)
        heads = getattr(model, "num_classes", None) or getattr(getattr(model, "base_model", None), "num_classes", None)
        if heads is not None and heads != data.num_labels:
            raise TaskError(f"the model has {heads} outputs but the data has {data.num_labels} classes")
        device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
        model.to(device)
        loader = ctx.task.collator(data, args.eval_batch_size, device=device)
        result = self._eval_loop(model, loader, data.num_labels, ctx.task.metrics)
        result["num_examples"] = len(data)
        result["split"] = getattr(args, "split", "eval")
        return result
