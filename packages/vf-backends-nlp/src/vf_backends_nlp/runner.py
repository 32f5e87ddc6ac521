"""The runner of the text backend's tasks (``text-classification``, ``text-regression``): the Hugging Face
``Trainer``.

* model: the task's ``build``, :func:`vf_backends_nlp.models.load_text_classifier`
  (``AutoModelForSequenceClassification`` with a new head of the data's size; ``problem_type="regression"``
  and one output for regression data);
* data: :func:`vf_backends_nlp.data.load_text_dataset`, tokenised once (``--max-length``), padded per batch by
  the task's ``collator``; scored by the task's ``metrics``;
* engine: ``transformers.Trainer`` through :func:`vf_backends_nlp.trainer_run.run_trainer` (what every text
  task shares: AdamW with per-kind rates, the schedule, evaluation and a checkpoint every epoch, ``--resume``,
  AVF, AdaLoRA, the stop on a non-finite loss).

Everything the methods and the run folder need comes from the :class:`vf_core.tasks.TaskContext` the command
hands :meth:`NLPRunner.train`. transformers is imported by this module: load it only when a command runs.
"""

from __future__ import annotations

import argparse
from typing import Optional

import torch
from vf_core.errors import TaskError
from vf_core.tasks import RunRecord, TaskContext

from .data import DataError, TextDataset, load_text_dataset
from .models import load_text_classifier, load_tokenizer, resolve_model_dir
from .run_options import RunOptions, quiet_transformers, save_tokenizer_beside
from .trainer_run import run_trainer

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


def _subset(data: TextDataset, indices) -> TextDataset:
    return TextDataset([data.texts[i] for i in indices], [data.labels[i] for i in indices], data.label_names,
                       data.task)


# ------------------------------------------------------------------------------------------------ runner
class NLPRunner:
    """Runs ``vectorfit`` commands for text models (see the module docstring)."""

    def __init__(self) -> None:
        quiet_transformers()

    # ---------------------------------------------------------------------------------------- data
    def _data(self, args: argparse.Namespace, run: Optional[RunRecord] = None):
        opts = RunOptions(args, run)
        pick = opts.pick
        task = _KIND.get(pick("task"))  # None: decided by the labels
        try:
            return load_text_dataset(opts.data, text_column=pick("text_column"), label_column=pick("label_column"),
                                     task=task, **opts.split_options())
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
        save_tokenizer_beside(directory, run.info.get("model_path") if run is not None else None)

    # ---------------------------------------------------------------------------------------- train
    def train(self, ctx: TaskContext) -> dict:
        from transformers import set_seed

        args = ctx.settings
        train_data, eval_data = self._data(args)
        if len(train_data) == 0 or len(eval_data) == 0:
            raise TaskError(f"data {args.data!r}: the train or eval split is empty")
        task = ctx.use_task(TASK_OF_KIND[train_data.task])  # a recognised text task: the labels decided
        validation_data = None
        split = ctx.validation_split(len(train_data))  # --validation-fraction: held out of the training examples
        if split is not None:
            train_data, validation_data = (_subset(train_data, idx) for idx in split)
        model_path = resolve_model_dir(args.model)
        set_seed(args.seed)
        model, tokenizer = task.build(args.model, label_names=train_data.label_names, task=train_data.task,
                                      pooling=getattr(args, "pooling", None))
        max_length = min(args.max_length, getattr(tokenizer, "model_max_length", args.max_length) or args.max_length)
        train_ds = TokenizedDataset(train_data, tokenizer, max_length)
        eval_ds = TokenizedDataset(eval_data, tokenizer, max_length)
        validation_ds = TokenizedDataset(validation_data, tokenizer, max_length) if validation_data else None
        _, total_steps = ctx.training_steps(len(train_ds))
        ctx.record_run(model_path=str(model_path), label_names=train_data.label_names, kind=train_data.task,
                       num_train=len(train_data), num_eval=len(eval_data),
                       extra={"max_length": max_length, "total_steps": total_steps,
                              "num_validation": len(validation_data) if validation_data else 0})

        num_labels = train_data.num_labels

        def metrics_fn(pred) -> dict:
            logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
            return task.metrics(logits, pred.label_ids, num_labels)

        def load_full(full_run: RunRecord):
            return self.load_model(str(full_run.model_dir), run=full_run)

        sampling = "group_by_length" if getattr(args, "group_by_length", True) else "random"
        return run_trainer(ctx, model=model, tokenizer=tokenizer, train_ds=train_ds, eval_ds=eval_ds,
                           collator=task.collator(tokenizer), total_steps=total_steps, compute_metrics=metrics_fn,
                           extra_args={"train_sampling_strategy": sampling},
                           extra={"max_length": max_length,
                                  "num_validation": len(validation_data) if validation_data else 0},
                           load_full=load_full, validation_ds=validation_ds)

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
        max_length = getattr(args, "max_length", None) or (run.info.get("max_length", 128) if run is not None else 128)
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
