"""The runner of the text backend's tasks (``text-classification``, ``text-regression``): the Hugging Face
``Trainer``.

* model: the task's ``build``, :func:`vf_backends_nlp.models.load_text_classifier`
  (``AutoModelForSequenceClassification`` with a new head of the data's size; ``problem_type="regression"``
  and one output for regression data);
* data: :func:`vf_backends_nlp.data.load_text_dataset`, tokenised once (``--max-length``), padded per batch by
  the task's ``collator``; scored by the task's ``metrics``;
* engine: ``transformers.Trainer`` with AdamW, the chosen schedule, evaluation and a checkpoint every epoch
  (``DIR/checkpoints``; a VectorFit checkpoint holds only the trainable tensors), ``--resume`` through
  ``Trainer.train(resume_from_checkpoint=...)``; AVF through :class:`vf_avf.integrations.trainer.AVFCallback`
  (its state is checkpointed too); AdaLoRA's ``update_and_allocate`` is called after every optimizer step.

Everything the methods and the run folder need comes from the :class:`vf_core.tasks.TaskContext` the command
hands :meth:`NLPRunner.train`. transformers is imported by this module: load it only when a command runs.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any, Optional

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from vf_core.errors import TaskError
from vf_core.model import VectorFitModel
from vf_core.tasks import RunRecord, TaskContext

from .data import DataError, TextDataset, load_text_dataset
from .models import load_text_classifier, load_tokenizer, resolve_model_dir

__all__ = ["NLPRunner", "TokenizedDataset", "TASK_OF_KIND"]

#: the task of each kind of labels (what a recognised text task becomes once the data is read)
TASK_OF_KIND = {"classification": "text-classification", "regression": "text-regression"}
#: ``--task`` values (names, aliases, and those stored by runs made before tasks had names) -> kind of labels
_KIND = {"text-classification": "classification", "classification": "classification",
         "text-regression": "regression", "regression": "regression"}


class TokenizedDataset(torch.utils.data.Dataset):
    """Tokenised texts and labels, as the Trainer's collator wants them (padding per batch)."""

    def __init__(self, data: TextDataset, tokenizer, max_length: int) -> None:
        enc = tokenizer(list(data.texts), truncation=True, max_length=max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        self.features = [{k: enc[k][i] for k in keys} for i in range(len(data))]
        dtype = torch.float32 if data.task == "regression" else torch.long
        self.labels = torch.tensor(data.labels, dtype=dtype)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.features[i])
        item["labels"] = self.labels[i]
        return item


# ------------------------------------------------------------------------------------------------ Trainer
class VectorFitTrainer(Trainer):
    """A Trainer whose checkpoints of a :class:`~vf_core.VectorFitModel` hold only what trains (vectors and
    head), not the frozen base weights; everything else is the stock Trainer."""

    def _trained_names(self) -> set[str]:
        vf = self.model
        ids = {id(v.parameter) for v in vf.vectors} | {id(p) for p in vf.head_parameters().values()}
        return {n for n, p in vf.named_parameters() if id(p) in ids}

    def _save(self, output_dir: Optional[str] = None, state_dict: Optional[dict] = None) -> None:
        if not isinstance(self.model, VectorFitModel):
            return super()._save(output_dir, state_dict)
        from safetensors.torch import save_file

        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        keep = self._trained_names()
        tensors = {n: p.detach().contiguous().cpu() for n, p in self.model.named_parameters() if n in keep}
        save_file(tensors, os.path.join(output_dir, "model.safetensors"), metadata={"format": "pt"})
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        if not isinstance(self.model, VectorFitModel):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        from safetensors.torch import load_file

        path = os.path.join(resume_from_checkpoint, "model.safetensors")
        if not os.path.isfile(path):
            raise TaskError(f"checkpoint {resume_from_checkpoint} has no model.safetensors")
        state = load_file(path)
        result = self.model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise TaskError(f"checkpoint {resume_from_checkpoint} does not fit this model (unexpected tensors such as"
                           f" {result.unexpected_keys[0]!r}); resume with the run's own options")


class _FiniteLossCallback(TrainerCallback):
    """Stops a run whose training loss turned non-finite, with one clear line, instead of finishing it with
    meaningless metrics; the checkpoints already written (the last good state) stay where they are."""

    def __init__(self, checkpoints: Path) -> None:
        self.checkpoints = checkpoints

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            last = _last_checkpoint(self.checkpoints)
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


def _device_args(device: str) -> dict:
    if device == "cuda" and not torch.cuda.is_available():
        raise TaskError("--device cuda: no CUDA device is available")
    use_cpu = device == "cpu" or not torch.cuda.is_available()
    return {"use_cpu": use_cpu, "dataloader_pin_memory": not use_cpu}


def _last_checkpoint(folder: Path) -> Optional[str]:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


# ------------------------------------------------------------------------------------------------ runner
class NLPRunner:
    """Runs ``vectorfit`` commands for text models (see the module docstring)."""

    def __init__(self) -> None:
        from transformers.utils import logging as hf_logging

        if os.environ.get("TRANSFORMERS_VERBOSITY", "") == "error":
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()  # the weight-loading bar; the Trainer's bars are its own

    # ---------------------------------------------------------------------------------------- data
    def _data(self, args: argparse.Namespace, run: Optional[RunRecord] = None):
        stored = run.info.get("args", {}) if run is not None else {}
        spec = getattr(args, "data", None) or (run.info["data"] if run is not None else None)
        same = run is not None and spec == run.info.get("data")

        def pick(key: str, default=None):
            given = getattr(args, key, None)
            if given is not None:
                return given
            return stored.get(key, default) if same else default

        task = _KIND.get(pick("task"))  # None: decided by the labels
        try:
            return load_text_dataset(
                spec, text_column=pick("text_column"), label_column=pick("label_column"), task=task,
                eval_fraction=stored.get("eval_fraction", 0.2) if same else getattr(args, "eval_fraction", 0.2),
                seed=stored.get("data_seed", 0) if same else getattr(args, "data_seed", 0),
                max_train=getattr(args, "max_train", None), max_eval=getattr(args, "max_eval", None)
                if getattr(args, "max_eval", None) is not None else (stored.get("max_eval") if same else None),
                data_config=pick("data_config"), split=pick("data_split"))
        except DataError as exc:
            raise TaskError(" ".join(str(exc).split())) from None

    # ---------------------------------------------------------------------------------------- models
    def load_model(self, spec: str, *, run: Optional[RunRecord] = None, num_labels: Optional[int] = None,
                   label_names: Optional[list] = None, task: Optional[str] = None):
        pooling = None
        if run is not None:
            label_names, task = run.label_names, run.task
            pooling = run.info.get("args", {}).get("pooling")
        model, _ = load_text_classifier(spec, label_names=label_names, task=task, num_labels=num_labels,
                                        pooling=pooling)
        return model

    def save_model(self, model, directory: str, run: Optional[RunRecord]) -> None:
        model.save_pretrained(directory)
        base = run.info.get("model_path") if run is not None else None
        if base:
            try:
                load_tokenizer(base).save_pretrained(directory)
            except Exception:  # a model without a tokenizer is still a model
                pass

    # ---------------------------------------------------------------------------------------- train
    def train(self, ctx: TaskContext) -> dict:
        from transformers import set_seed

        args = ctx.settings
        train_data, eval_data = self._data(args)
        if len(train_data) == 0 or len(eval_data) == 0:
            raise TaskError(f"data {args.data!r}: the train or eval split is empty")
        task = ctx.use_task(TASK_OF_KIND[train_data.task])  # a recognised text task: the labels decided
        model_path = resolve_model_dir(args.model)
        set_seed(args.seed)
        model, tokenizer = task.build(args.model, label_names=train_data.label_names, task=train_data.task,
                                      pooling=getattr(args, "pooling", None))
        max_length = min(args.max_length, getattr(tokenizer, "model_max_length", args.max_length) or args.max_length)
        train_ds = TokenizedDataset(train_data, tokenizer, max_length)
        eval_ds = TokenizedDataset(eval_data, tokenizer, max_length)
        _, total_steps = ctx.training_steps(len(train_ds))
        spec = ctx.method
        ctx.record_run(model_path=str(model_path), label_names=train_data.label_names, kind=train_data.task,
                       num_train=len(train_data), num_eval=len(eval_data),
                       extra={"max_length": max_length, "total_steps": total_steps})

        w0 = ctx.initial_weights(model)
        prepared = ctx.prepare(model, total_steps=total_steps)

        checkpoints = ctx.checkpoints
        training_args = TrainingArguments(
            output_dir=str(checkpoints),
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
            train_sampling_strategy="group_by_length" if getattr(args, "group_by_length", True) else "random",
            **_device_args(args.device),
        )
        num_labels = train_data.num_labels

        def metrics_fn(pred) -> dict:
            logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
            return task.metrics(logits, pred.label_ids, num_labels)

        trainer_cls = VectorFitTrainer if isinstance(prepared.model, VectorFitModel) else Trainer
        optimizer = torch.optim.AdamW(ctx.optimizer_groups(prepared), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
        trainer = trainer_cls(model=prepared.model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds,
                              data_collator=task.collator(tokenizer), compute_metrics=metrics_fn,
                              processing_class=tokenizer, optimizers=(optimizer, None))
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

        resume = None
        if args.resume:
            resume = _last_checkpoint(checkpoints) if args.resume == "last" else args.resume
            if resume is None:
                raise TaskError(f"--resume: no checkpoint in {checkpoints} (was the run started with"
                                " --no-checkpoints?)")
            if not Path(resume).is_dir():
                raise TaskError(f"--resume {resume}: no such checkpoint folder")
        start = time.perf_counter()
        trainer.train(resume_from_checkpoint=resume)
        train_seconds = time.perf_counter() - start
        history = [dict(h) for h in trainer.state.log_history]
        last_eval = next((h for h in reversed(history) if "eval_loss" in h), None)
        if last_eval is None or last_eval.get("step") != trainer.state.global_step:
            last_eval = trainer.evaluate()
        metrics = {k: v for k, v in last_eval.items() if k.startswith("eval_")}
        metrics["epoch_history"] = [{k: v for k, v in h.items() if k.startswith("eval_") or k in ("epoch", "step")}
                                    for h in history if "eval_loss" in h]
        metrics["train_loss"] = next((h["train_loss"] for h in reversed(history) if "train_loss" in h), None)
        metrics["train_steps"] = trainer.state.global_step
        if recorder is not None and (not recorder.history or recorder.history[-1]["step"] != trainer.state.global_step):
            recorder.record(trainer.state.global_step, sorted(avf_callback.freezer.frozen) if avf_callback else ())
        avf_state = avf_callback.freezer.state_dict() if avf_callback and avf_callback.freezer else None

        def save_full(directory: Path) -> None:
            prepared.model.save_pretrained(str(directory))
            tokenizer.save_pretrained(str(directory))

        def load_full(full_run: RunRecord):
            return self.load_model(str(full_run.model_dir), run=full_run)

        result = ctx.finish(prepared, metrics, train_seconds=train_seconds, save_full_model=save_full, w0=w0,
                            recorder=recorder, avf_state=avf_state, load_full=load_full,
                            extra={"max_length": max_length, "engine": "transformers.Trainer",
                                   "resumed_from": resume})
        if spec.is_peft:  # a PEFT adapter folder loads with its tokenizer beside it
            tokenizer.save_pretrained(str(result["adapter"]))
        return result

    # ---------------------------------------------------------------------------------------- evaluate
    @torch.no_grad()
    def evaluate(self, model, ctx: TaskContext) -> dict:
        args, run = ctx.settings, ctx.run
        train_data, eval_data = self._data(args, run)
        data = train_data if getattr(args, "split", "eval") == "train" else eval_data
        if getattr(args, "max_eval", None):
            data = TextDataset(data.texts[:args.max_eval], data.labels[:args.max_eval], data.label_names, data.task)
        base_path = run.info.get("model_path") if run is not None else str(resolve_model_dir(args.model))
        tokenizer = load_tokenizer(base_path)
        max_length = run.info.get("max_length", 128) if run is not None else 128
        if run is not None and run.label_names != data.label_names:
            raise TaskError(f"the data's labels {data.label_names} differ from the run's {run.label_names}")
        head = getattr(getattr(model, "config", None), "num_labels", None)
        if head is not None and head != data.num_labels:
            raise TaskError(f"the model has {head} outputs but the data has {data.num_labels} classes")
        device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
        model.to(device).eval()
        ds = TokenizedDataset(data, tokenizer, max_length)
        task = ctx.use_task(TASK_OF_KIND[data.task])
        collate = task.collator(tokenizer)
        loader = torch.utils.data.DataLoader(ds, batch_size=args.eval_batch_size, collate_fn=collate)
        logits, labels, loss_sum = [], [], 0.0
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch)
            loss_sum += float(out.loss) * len(batch["labels"])
            logits.append(out.logits.float().cpu())
            labels.append(batch["labels"].cpu())
        metrics = task.metrics(torch.cat(logits).numpy(), torch.cat(labels).numpy(), data.num_labels)
        result = {f"eval_{k}": v for k, v in metrics.items()}
        result["eval_loss"] = loss_sum / max(len(ds), 1)
        result["num_examples"] = len(ds)
        result["split"] = getattr(args, "split", "eval")
        return result
