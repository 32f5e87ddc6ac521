"""One training run of a text task on the Hugging Face ``Trainer``: what every text task's runner shares.

A task's runner loads its model, data and tokenizer, then hands them to :func:`run_trainer`, which applies the
method (``ctx.prepare``), builds the ``TrainingArguments`` from the command's options, the optimizer with the
per-kind learning rates, the callbacks (non-finite loss stop, per-vector clipping, AVF, training strengths,
AdaLoRA), resumes from a checkpoint (``--resume``), trains, evaluates and finishes the run folder
(``ctx.finish``). :func:`evaluate_with_trainer` scores a model the same way without training (``vectorfit
evaluate``). The engine may be another ``Trainer`` class (``Seq2SeqTrainer`` with ``Seq2SeqTrainingArguments``),
used as it is: checkpoints of a VectorFit model hold only what trains because its ``state_dict()`` does
(:meth:`vf_core.VectorFitModel.trained_state_keys`).

Example (a task runner's ``train``)::

    from vf_backends_nlp.trainer_run import run_trainer

    def train(self, ctx):
        model, tokenizer = load_my_model(ctx.settings.model)
        train_ds, eval_ds = my_datasets(ctx.settings, tokenizer)
        _, total = ctx.training_steps(len(train_ds))
        ctx.record_run(model_path=..., label_names=None, kind="causal-lm", num_train=len(train_ds),
                       num_eval=len(eval_ds), extra={"total_steps": total})
        return run_trainer(ctx, model=model, tokenizer=tokenizer, train_ds=train_ds, eval_ds=eval_ds,
                           collator=my_collator(tokenizer), total_steps=total)
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from vf_core.errors import TaskError
from vf_core.model import VectorFitModel
from vf_core.tasks import RunRecord, TaskContext

__all__ = ["run_trainer", "evaluate_with_trainer", "training_arguments", "last_checkpoint", "device_args"]


# ------------------------------------------------------------------------------------------------ checkpoints
def last_checkpoint(folder: Path) -> Optional[str]:
    """The newest ``checkpoint-N`` folder in ``folder``, or None."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if Path(folder).is_dir() else None


# ------------------------------------------------------------------------------------------------ callbacks
class _FiniteLossCallback(TrainerCallback):
    """Stops a run whose training loss turned non-finite, with one clear line, instead of finishing it with
    meaningless metrics; the checkpoints already written (the last good state) stay where they are."""

    def __init__(self, checkpoints: Path) -> None:
        self.checkpoints = checkpoints

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            last = last_checkpoint(self.checkpoints)
            kept = f"the last good checkpoint, {last}, is kept (--resume after fixing the cause)" if last else \
                "no checkpoint had been written yet"
            raise TaskError(f"the training loss became {loss} by step {state.global_step}; the run stopped and"
                            f" wrote no metrics; {kept}. Lower --lr (or --lr-bias / --lr-sigma), or check the data")


class _StrengthCallback(TrainerCallback):
    """Records the training strength of every vector at each evaluation and at the end."""

    def __init__(self, recorder, avf=None) -> None:
        self.recorder, self.avf = recorder, avf

    def _frozen(self):
        freezer = getattr(self.avf, "freezer", None)
        return sorted(freezer.frozen) if freezer is not None else ()

    def on_evaluate(self, args, state, control, **kwargs):
        self.recorder.record(state.global_step, self._frozen())

    def on_train_end(self, args, state, control, **kwargs):
        self.recorder.record(state.global_step, self._frozen())


class _EarlyStoppingCallback(TrainerCallback):
    """Hands each evaluation of the validation split to the command's tracker (``ctx.early_stopping``), which keeps
    the best state and says when to stop (``--early-stopping``). Off once training ends, so that the final
    evaluation on the eval split is not taken for a validation one."""

    def __init__(self, stopper) -> None:
        self.stopper, self.active = stopper, True

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.active and metrics is not None and self.stopper.update(state.global_step, metrics, epoch=state.epoch):
            control.should_training_stop = True


class _VectorClipCallback(TrainerCallback):
    """``--max-grad-norm-per-vector``: each vector's gradient clipped on its own, right before the optimizer step."""

    def __init__(self, ctx: TaskContext, prepared) -> None:
        self.ctx, self.prepared = ctx, prepared

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.ctx.clip_vector_gradients(self.prepared)


class _AdaLoraCallback(TrainerCallback):
    """AdaLoRA's rank allocation needs ``update_and_allocate`` after each optimizer step, before zero_grad."""

    def __init__(self, ctx: TaskContext, prepared) -> None:
        self.ctx, self.prepared = ctx, prepared

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.ctx.adalora_update(self.prepared, state.global_step)


# ------------------------------------------------------------------------------------------------ arguments
def device_args(device: str) -> dict:
    """``TrainingArguments`` fields for ``--device auto|cpu|cuda``."""
    if device == "cuda" and not torch.cuda.is_available():
        raise TaskError("--device cuda: no CUDA device is available")
    use_cpu = device == "cpu" or not torch.cuda.is_available()
    return {"use_cpu": use_cpu, "dataloader_pin_memory": not use_cpu}


def training_arguments(args, output_dir: Path, *, args_cls: type = TrainingArguments, **extra) -> TrainingArguments:
    """The engine's arguments from the command's options (``extra`` adds or overrides fields, e.g.
    ``predict_with_generate=True`` for ``Seq2SeqTrainingArguments``)."""
    fields = dict(
        output_dir=str(output_dir),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps or -1,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_ratio,
        lr_scheduler_type=args.scheduler,
        max_grad_norm=args.max_grad_norm,
        eval_strategy="epoch",
        save_strategy="no" if args.no_checkpoints else "epoch",
        save_total_limit=args.save_total_limit,
        logging_strategy="steps",
        logging_steps=args.logging_steps,
        logging_nan_inf_filter=False,  # a non-finite loss must show, so that the run stops (_FiniteLossCallback)
        seed=args.seed,
        report_to="none",
        disable_tqdm=bool(args.no_progress),
        label_names=["labels"],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        # several processes (torchrun): the Trainer multiplies the loss by their number when the model's forward
        # takes **kwargs, for models that divide by the whole batch's token count (causal LMs: the causal-lm task
        # sets it back to True). Classifiers, QA heads, T5 and BART average their own batch: each rank's mean,
        # averaged by DDP, is then the one-process loss (not twice it)
        average_tokens_across_devices=False,
        **device_args(args.device),
    )
    fields.update(extra)
    return args_cls(**fields)


def _resume_point(args, checkpoints: Path, model) -> Optional[str]:
    if not args.resume:
        return None
    resume = last_checkpoint(checkpoints) if args.resume == "last" else args.resume
    if resume is None:
        raise TaskError(f"--resume: no checkpoint in {checkpoints} (was the run started with --no-checkpoints?)")
    if not Path(resume).is_dir():
        raise TaskError(f"--resume {resume}: no such checkpoint folder")
    if isinstance(model, VectorFitModel):
        _check_fits(model, Path(resume))
    return resume


def _every_key(vf: VectorFitModel) -> set[str]:
    trained_only = vf.state_dict_trained_only
    vf.state_dict_trained_only = False
    try:
        return set(vf.state_dict(keep_vars=True))
    finally:
        vf.state_dict_trained_only = trained_only


def _check_fits(vf: VectorFitModel, folder: Path) -> None:
    """One line when a checkpoint's tensors are not this model's trained ones (another method or options); the
    ``Trainer`` loads with ``strict=False`` and would only warn."""
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise TaskError(f"checkpoint {folder} has no model.safetensors")
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        saved = set(f.keys())
    legacy = "base_model."  # checkpoints written when the wrapped model was ``base_model``
    saved = {"model." + k[len(legacy):] if k.startswith(legacy) else k for k in saved}
    wanted, every = vf.trained_state_keys(), _every_key(vf)  # older checkpoints hold the frozen base too
    unexpected = sorted(saved - every)
    missing = sorted(wanted - saved)
    if unexpected or missing:
        found = f"unexpected tensors such as {unexpected[0]!r}" if unexpected else f"no {missing[0]!r}"
        raise TaskError(f"checkpoint {folder} does not fit this model ({found}); resume with the run's own options")


# ------------------------------------------------------------------------------------------------ train
def run_trainer(ctx: TaskContext, *, model, tokenizer, train_ds, eval_ds, collator, total_steps: int,
                compute_metrics: Optional[Callable] = None, preprocess_logits_for_metrics: Optional[Callable] = None,
                trainer_cls: type = Trainer, args_cls: type = TrainingArguments, extra_args: Optional[dict] = None,
                extra: Optional[dict] = None, load_full: Optional[Callable[[RunRecord], Any]] = None,
                save_full: Optional[Callable[[Any, Path], None]] = None, engine: str = "transformers.Trainer",
                validation_ds=None) -> dict:
    """Apply the method to ``model``, train it with ``trainer_cls`` and finish the run folder; returns the metrics.

    Args:
        ctx: the command's context (settings, method, run folder helpers).
        model, tokenizer: the task's model (before any method) and its tokenizer (saved beside adapters and models).
        train_ds, eval_ds: map-style datasets of feature dicts; ``collator`` batches them.
        total_steps: the run's optimizer steps (``ctx.training_steps``), for AVF's and AdaLoRA's schedules.
        compute_metrics, preprocess_logits_for_metrics: as the ``Trainer`` takes them (names without ``eval_``).
        trainer_cls, args_cls, extra_args: the engine, its arguments class and fields added to the arguments.
        extra: more fields for ``metrics.json`` (``max_length``...).
        load_full: ``run -> model`` loading a ``full`` run's model, for the figures' comparison.
        save_full: ``(trained_model, directory)`` saving the ``full`` method's model (default: ``save_pretrained``
            of the model and the tokenizer).
        engine: the engine's name in ``metrics.json``.
        validation_ds: the validation split (``ctx.validation_split``), or None. With it, the evaluations during
            training score it (early stopping: ``ctx.early_stopping``, the best state put back at the end) and the
            final metrics are one evaluation of ``eval_ds``; ``metrics.json`` keeps the validation curve.
    """
    args, spec = ctx.settings, ctx.method
    w0 = ctx.initial_weights(model)
    prepared = ctx.prepare(model, total_steps=total_steps)
    checkpoints = ctx.checkpoints
    training_args = training_arguments(args, checkpoints, args_cls=args_cls, **(extra_args or {}))
    optimizer = torch.optim.AdamW(ctx.optimizer_groups(prepared), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    during = eval_ds if validation_ds is None else validation_ds
    trainer = trainer_cls(model=prepared.model, args=training_args, train_dataset=train_ds, eval_dataset=during,
                  data_collator=collator, compute_metrics=compute_metrics, processing_class=tokenizer,
                  optimizers=(optimizer, None), preprocess_logits_for_metrics=preprocess_logits_for_metrics)
    trainer.add_callback(_FiniteLossCallback(checkpoints))
    if getattr(args, "max_grad_norm_per_vector", 0.0) and prepared.vf is not None:
        trainer.add_callback(_VectorClipCallback(ctx, prepared))
    avf_callback = None
    if spec.avf is not None:
        from vf_avf.integrations.trainer import AVFCallback  # vf-avf, installed with the command

        avf_callback = AVFCallback(ctx.avf_config(total_steps), model=prepared.vf)
        trainer.add_callback(avf_callback)
    recorder = ctx.strength_recorder(prepared)
    if recorder is not None:
        trainer.add_callback(_StrengthCallback(recorder, avf_callback))
    if spec.name == "adalora":
        trainer.add_callback(_AdaLoraCallback(ctx, prepared))
    stopper = ctx.early_stopping(prepared) if validation_ds is not None else None
    stop_callback = None
    if stopper is not None:
        stop_callback = _EarlyStoppingCallback(stopper)
        trainer.add_callback(stop_callback)

    resume = _resume_point(args, checkpoints, prepared.model)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - start
    history = [dict(h) for h in trainer.state.log_history]
    validation: dict = {}
    if stop_callback is not None:  # the best state back, then the eval split once
        stop_callback.active = False
        validation = stopper.finish()
        last_eval = trainer.evaluate(eval_dataset=eval_ds)
    else:
        last_eval = next((h for h in reversed(history) if "eval_loss" in h), None)
        if last_eval is None or last_eval.get("step") != trainer.state.global_step:
            last_eval = trainer.evaluate()
    metrics = {k: v for k, v in last_eval.items() if k.startswith("eval_")}
    metrics["epoch_history"] = validation.get("validation_history") if validation else [
        {k: v for k, v in h.items() if k.startswith("eval_") or k in ("epoch", "step")}
        for h in history if "eval_loss" in h]
    metrics.update(validation)
    metrics["train_loss"] = next((h["train_loss"] for h in reversed(history) if "train_loss" in h), None)
    metrics["train_steps"] = trainer.state.global_step
    if recorder is not None and (not recorder.history or recorder.history[-1]["step"] != trainer.state.global_step):
        recorder.record(trainer.state.global_step, sorted(avf_callback.freezer.frozen) if avf_callback else ())
    avf_state = avf_callback.freezer.state_dict() if avf_callback and avf_callback.freezer else None

    def save_full_model(directory: Path) -> None:
        if save_full is not None:
            save_full(prepared.model, directory)
            return
        prepared.model.save_pretrained(str(directory))
        tokenizer.save_pretrained(str(directory))

    result = ctx.finish(prepared, metrics, train_seconds=train_seconds, save_full_model=save_full_model, w0=w0,
                        recorder=recorder, avf_state=avf_state, load_full=load_full,
                        extra={**(extra or {}), "engine": engine, "resumed_from": resume})
    if spec.is_peft and result.get("adapter"):  # a PEFT adapter folder loads with its tokenizer beside it
        tokenizer.save_pretrained(str(result["adapter"]))
    return result


# ------------------------------------------------------------------------------------------------ evaluate
def evaluate_with_trainer(model, args, *, tokenizer, eval_ds, collator, compute_metrics: Optional[Callable] = None,
                          preprocess_logits_for_metrics: Optional[Callable] = None, trainer_cls: type = Trainer,
                          args_cls: type = TrainingArguments, extra_args: Optional[dict] = None,
                          output_dir: Optional[Path] = None) -> dict:
    """The eval metrics of ``model`` (trained state applied) on ``eval_ds``, computed exactly as during training
    (``vectorfit evaluate``); ``args`` are the evaluate command's options (``eval_batch_size``, ``device``)."""
    import tempfile

    fields = dict(output_dir=str(output_dir or tempfile.mkdtemp(prefix="vectorfit-eval-")),
                  per_device_eval_batch_size=args.eval_batch_size, report_to="none", disable_tqdm=True,
                  label_names=["labels"], remove_unused_columns=False, dataloader_num_workers=0,
                  **device_args(getattr(args, "device", "auto")))
    fields.update(extra_args or {})
    trainer = trainer_cls(model=model, args=args_cls(**fields), eval_dataset=eval_ds, data_collator=collator,
                          compute_metrics=compute_metrics, processing_class=tokenizer,
                          preprocess_logits_for_metrics=preprocess_logits_for_metrics)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints the metrics dict on stdout, where the command prints JSON
    metrics = trainer.evaluate()
    return {k: v for k, v in metrics.items() if k.startswith("eval_")
            and not k.endswith(("_runtime", "per_second", "_preparation_time"))}
