"""The runner of the ``seq2seq`` task: encoder-decoder models (BART, T5, mBART, Pegasus...) on source/target texts,
trained by ``transformers.Seq2SeqTrainer`` and scored by ROUGE on generated text.

* model: :func:`vf_backends_nlp.seq2seq_models.load_seq2seq` (``AutoModelForSeq2SeqLM``; its own LM head, no new
  head: every method but ``full`` trains only what it adapts);
* data: :func:`vf_backends_nlp.seq2seq_data.load_pairs` (``--source-column`` / ``--target-column``), sources cut to
  ``--max-length`` tokens and targets to ``--max-target-length`` (default ``--max-new-tokens``, default 64);
* engine: ``Seq2SeqTrainer`` through :func:`vf_backends_nlp.trainer_run.run_trainer` (method, per-kind rates, AVF,
  checkpoints, ``--resume``) with ``predict_with_generate``: each evaluation generates at most ``--max-new-tokens``
  tokens with ``--num-beams`` beams (default 1: greedy) and scores them against the raw reference texts with
  ROUGE-1/2/L (:mod:`vf_backends_nlp.rouge`, percentages) beside the loss and the mean generation length
  (``eval_gen_len``: tokens generated, end-of-sequence included, padding excluded).

``vectorfit generate`` options fall back to the run's (``--max-new-tokens``, ``--num-beams``), then, for a plain
model, to what its generation config sets (a ``vectorfit merge`` output stores the run's), then to 64 tokens and
greedy search. Prompts are not cut to the run's ``--max-length`` (only to the tokenizer's own limit, at most 1024
tokens), so a run and its merged model generate the same text. transformers is imported by this module: load it only when a command runs.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

import numpy as np
import torch
from vf_core.errors import TaskError
from vf_core.tasks import RunRecord, TaskContext

from .models import load_tokenizer, resolve_model_dir
from .records import DataError
from .rouge import rouge_scores
from .run_options import RunOptions, quiet_transformers, save_tokenizer_beside
from .seq2seq_data import Pairs, Seq2SeqDataset, load_pairs, seq2seq_collator
from .seq2seq_models import load_seq2seq
from .task_options import DEFAULT_MAX_NEW_TOKENS
from .trainer_run import device_args, evaluate_with_trainer, run_trainer

__all__ = ["Seq2SeqRunner", "generation_settings", "rouge_metrics_fn"]

#: the longest source a run or an evaluation without a stored --max-length tokenises (tokenizers may allow more)
_DEFAULT_MAX_LENGTH = 1024


def _stored(run: Optional[RunRecord]) -> dict:
    return dict(run.info.get("args", {})) if run is not None else {}


def _positive(name: str, value) -> int:
    if value is None or int(value) < 1:
        raise TaskError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    return int(value)


def generation_settings(args, run: Optional[RunRecord] = None, model=None) -> tuple[int, int]:
    """``(max_new_tokens, num_beams)``: the command's options, else the run's, else (a plain model) its generation
    config's, else 64 tokens and 1 beam. A value below 1 is a :class:`TaskError`."""
    info = run.info if run is not None else {}
    stored = _stored(run)
    config = getattr(model, "generation_config", None) if run is None else None

    def first(key: str, default: int) -> int:
        for value in (getattr(args, key, None), info.get(key), stored.get(key), getattr(config, key, None)):
            if value is not None:
                return _positive(key, value)
        return default

    return first("max_new_tokens", DEFAULT_MAX_NEW_TOKENS), first("num_beams", 1)


def _limit(tokenizer, wanted: Optional[int]) -> int:
    """``wanted`` tokens (default 1024), at most the tokenizer's ``model_max_length`` when it states a real one."""
    limit = getattr(tokenizer, "model_max_length", None)
    wanted = int(wanted or _DEFAULT_MAX_LENGTH)
    return min(wanted, int(limit)) if isinstance(limit, int) and 0 < limit < 1_000_000 else wanted


def rouge_metrics_fn(tokenizer, references: Sequence[str], metrics=rouge_scores):
    """A ``compute_metrics`` for ``Seq2SeqTrainer(predict_with_generate=True)``: decodes the generated ids and scores
    them with ``metrics(predictions, references)`` against ``references`` (the raw target texts, in eval order; the
    decoded labels if the counts differ), plus ``gen_len``."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def compute(pred) -> dict:
        ids = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        ids = np.where(ids < 0, pad, ids)
        texts = [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
        refs = list(references)
        if len(refs) != len(texts):
            labels = np.where(pred.label_ids < 0, pad, pred.label_ids)
            refs = [t.strip() for t in tokenizer.batch_decode(labels, skip_special_tokens=True)]
        result = dict(metrics(texts, refs))
        # the first position is the decoder's start token, not a generated one
        result["gen_len"] = float(np.mean(np.count_nonzero(ids[:, 1:] != pad, axis=1))) if len(ids) else 0.0
        return result

    return compute


def _engine_fields(max_new: int, beams: int) -> dict:
    # generation_max_length counts the decoder's start token: max_new + 1 allows max_new generated tokens
    return {"predict_with_generate": True, "generation_max_length": max_new + 1, "generation_num_beams": beams}


class Seq2SeqRunner:
    """Runs ``vectorfit`` commands for the ``seq2seq`` task (see the module docstring)."""

    def __init__(self) -> None:
        quiet_transformers()

    # ---------------------------------------------------------------------------------------- data
    def _pairs(self, args, run: Optional[RunRecord] = None) -> tuple[Pairs, Pairs]:
        opts = RunOptions(args, run)
        try:
            return load_pairs(opts.data, source_column=opts.pick("source_column"),
                              target_column=opts.pick("target_column"), **opts.split_options())
        except DataError as exc:
            raise TaskError(" ".join(str(exc).split())) from None

    # ---------------------------------------------------------------------------------------- models
    def load_model(self, spec: str, *, run: Optional[RunRecord] = None, num_labels: Optional[int] = None):
        try:
            model, _ = load_seq2seq(spec)
        except DataError as exc:
            raise TaskError(" ".join(str(exc).split())) from None
        return model

    def _tokenizer(self, path):
        try:
            return load_tokenizer(path)
        except DataError as exc:
            raise TaskError(" ".join(str(exc).split())) from None

    def save_model(self, model, directory: str, run: Optional[RunRecord]) -> None:
        """The model, its tokenizer (the run's base model's, or the one beside the model it was loaded from) and its
        generation config, holding the run's ``--max-new-tokens`` and ``--num-beams``."""
        if run is not None and getattr(model, "generation_config", None) is not None:
            max_new, beams = generation_settings(None, run)
            model.generation_config.max_new_tokens = max_new
            model.generation_config.num_beams = beams
        model.save_pretrained(directory)
        save_tokenizer_beside(directory, run.info.get("model_path") if run is not None
                              else getattr(model, "name_or_path", None))

    # ---------------------------------------------------------------------------------------- train
    def train(self, ctx: TaskContext) -> dict:
        from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, set_seed

        args = ctx.settings
        train_pairs, eval_pairs = self._pairs(args)
        if len(train_pairs) == 0 or len(eval_pairs) == 0:
            raise TaskError(f"data {args.data!r}: the train or eval split is empty")
        set_seed(args.seed)
        model_path = resolve_model_dir(args.model)
        try:
            model, tokenizer = load_seq2seq(args.model)
        except DataError as exc:
            raise TaskError(" ".join(str(exc).split())) from None
        max_new, beams = generation_settings(args)
        max_length = _limit(tokenizer, getattr(args, "max_length", None))
        max_target = _positive("max_target_length", getattr(args, "max_target_length", None) or max_new)
        try:
            train_ds = Seq2SeqDataset(train_pairs, tokenizer, max_length, max_target)
            eval_ds = Seq2SeqDataset(eval_pairs, tokenizer, max_length, max_target)
        except DataError as exc:
            raise TaskError(" ".join(str(exc).split())) from None
        cut = {k: train_ds.truncated[k] + eval_ds.truncated[k] for k in ("sources", "targets")}
        if any(cut.values()):
            print(f"vectorfit: note: {cut['sources']} sources cut to --max-length {max_length} tokens and"
                  f" {cut['targets']} targets to {max_target} (--max-target-length)", file=sys.stderr)
        _, total_steps = ctx.training_steps(len(train_ds))
        settings = {"max_length": max_length, "max_target_length": max_target, "max_new_tokens": max_new,
                    "num_beams": beams, "source_column": train_pairs.source_column,
                    "target_column": train_pairs.target_column, "truncated": cut}
        ctx.record_run(model_path=str(model_path), label_names=None, kind="seq2seq", num_train=len(train_pairs),
                       num_eval=len(eval_pairs), extra={**settings, "total_steps": total_steps})

        def load_full(full_run: RunRecord):
            return self.load_model(str(full_run.model_dir), run=full_run)

        return run_trainer(ctx, model=model, tokenizer=tokenizer, train_ds=train_ds, eval_ds=eval_ds,
                           collator=seq2seq_collator(tokenizer), total_steps=total_steps,
                           compute_metrics=rouge_metrics_fn(tokenizer, eval_pairs.targets, ctx.task.metrics
                                                            or rouge_scores),
                           trainer_cls=Seq2SeqTrainer, args_cls=Seq2SeqTrainingArguments,
                           extra_args=_engine_fields(max_new, beams), extra=settings, load_full=load_full,
                           engine="transformers.Seq2SeqTrainer")

    # ---------------------------------------------------------------------------------------- evaluate
    def evaluate(self, model, ctx: TaskContext) -> dict:
        from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

        args, run = ctx.settings, ctx.run
        train_pairs, eval_pairs = self._pairs(args, run)
        pairs = (train_pairs if getattr(args, "split", "eval") == "train" else eval_pairs).head(
            getattr(args, "max_eval", None))
        if len(pairs) == 0:
            raise TaskError("no examples to evaluate (the split is empty)")
        base_path = run.info.get("model_path") if run is not None else str(resolve_model_dir(args.model))
        tokenizer = self._tokenizer(base_path)
        info = run.info if run is not None else {}
        max_new, beams = generation_settings(args, run, model)
        max_length = _limit(tokenizer, getattr(args, "max_length", None) or info.get("max_length"))
        max_target = int(getattr(args, "max_target_length", None) or info.get("max_target_length") or max_new)
        try:
            ds = Seq2SeqDataset(pairs, tokenizer, max_length, max_target)
        except DataError as exc:
            raise TaskError(" ".join(str(exc).split())) from None
        result = evaluate_with_trainer(model, args, tokenizer=tokenizer, eval_ds=ds,
                                       collator=seq2seq_collator(tokenizer),
                                       compute_metrics=rouge_metrics_fn(tokenizer, pairs.targets,
                                                                        ctx.task.metrics or rouge_scores),
                                       trainer_cls=Seq2SeqTrainer, args_cls=Seq2SeqTrainingArguments,
                                       extra_args=_engine_fields(max_new, beams))
        result["num_examples"] = len(ds)
        result["split"] = getattr(args, "split", "eval")
        return result

    # ---------------------------------------------------------------------------------------- generate
    @torch.no_grad()
    def generate(self, model, ctx: TaskContext, prompts: Sequence[str]) -> list[str]:
        args, run = ctx.settings, ctx.run
        if run is not None:
            path = run.info.get("model_path")
        else:
            path = getattr(args, "target", None) or getattr(args, "model", None)
        tokenizer = self._tokenizer(path)
        max_new, beams = generation_settings(args, run, model)
        temperature = float(getattr(args, "temperature", None) or 0.0)
        options = {"max_new_tokens": max_new, "num_beams": beams, "do_sample": temperature > 0}
        if temperature > 0:
            options["temperature"] = temperature
            torch.manual_seed(int(getattr(args, "seed", 0) or 0))
        use_cpu = device_args(getattr(args, "device", "auto"))["use_cpu"]
        device = torch.device("cpu" if use_cpu else "cuda")
        model.to(device).eval()
        limit = _limit(tokenizer, None)
        batch = int(getattr(args, "eval_batch_size", None) or 16)
        outputs: list[str] = []
        for start in range(0, len(prompts), batch):
            chunk = list(prompts[start:start + batch])
            enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=limit)
            ids = model.generate(input_ids=enc["input_ids"].to(device),
                                 attention_mask=enc["attention_mask"].to(device), **options)
            outputs.extend(t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True))
        return outputs
