"""The runner of the ``causal-lm`` task: any ``AutoModelForCausalLM`` on text, prompt/completion or chat rows.

* model: a local directory, hub id or ``vectorfit merge`` output that ``AutoModelForCausalLM`` loads with its own
  LM head (config ``architectures`` ending in ``ForCausalLM`` or ``LMHeadModel``); the head is kept, and every
  method trains only what it adapts (``Task.new_head=False``);
* data: :func:`vf_backends_nlp.records.load_records`, encoded by :mod:`vf_backends_nlp.causal_lm_data` (formats,
  loss masks, the ``--max-length`` rule), padded per batch on the right (labels -100);
* engine: ``transformers.Trainer`` through :func:`vf_backends_nlp.trainer_run.run_trainer`; eval perplexity from
  per-batch NLL sums (:mod:`vf_backends_nlp.perplexity`), never the full logits;
* generation: ``model.generate`` on left-padded batches, greedy unless ``--num-beams`` or ``--temperature`` say
  otherwise; only the new text is returned. Prompts to a model trained on chats (messages data) are sent as one
  user turn through the chat template, with the generation prompt.

transformers is imported by this module: load it only when a command runs.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

import torch
from transformers import Trainer
from vf_core.assets import DataError
from vf_core.errors import TaskError
from vf_core.tasks import RunRecord, TaskContext

from .causal_lm_data import LMDataset, detect_format, encode_records, lm_collator
from .models import load_tokenizer, resolve_model_dir
from .perplexity import nll_and_count, perplexity_metrics
from .records import load_records
from .run_options import RunOptions, quiet_transformers, save_tokenizer_beside
from .task_options import DEFAULT_MAX_NEW_TOKENS
from .trainer_run import device_args, evaluate_with_trainer, run_trainer

__all__ = ["CausalLMRunner", "PerplexityTrainer", "load_causal_lm", "is_causal_architecture", "CHAT_MARK"]

#: config attribute of a model trained on chats (saved with merged and full models): prompts go through the template
CHAT_MARK = "vectorfit_prompt_format"


def is_causal_architecture(name: str) -> bool:
    """Whether a config ``architectures`` entry is a causal LM with its head (``LlamaForCausalLM``,
    ``GPT2LMHeadModel``)."""
    return name.endswith(("ForCausalLM", "LMHeadModel"))


def load_causal_lm(spec: str):
    """``AutoModelForCausalLM`` from a local directory, alias or hub id, offline; a model saved without a causal LM
    head (an encoder, a classifier) is a :class:`TaskError`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_model_dir(spec)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise TaskError(f"model {spec!r}: cannot read its config.json ({' '.join(str(exc).split())[:200]})") from None
    archs = list(getattr(config, "architectures", None) or [])
    if archs and not any(is_causal_architecture(a) for a in archs):
        raise TaskError(f"model {spec!r} is a {', '.join(archs)}, without a causal language-model head; causal-lm"
                        f" needs a model saved with one (architectures ending in ForCausalLM or LMHeadModel: GPT-2,"
                        f" Llama, Mistral, Qwen, Gemma, OPT...)")
    try:
        model, info = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, output_loading_info=True)
    except (ValueError, KeyError) as exc:
        raise TaskError(f"model {spec!r} ({config.model_type}) is not a causal language model transformers knows"
                        f" ({' '.join(str(exc).split())[:160]})") from None
    head = model.get_output_embeddings()
    head_names = {f"{n}.weight" for n, m in model.named_modules() if m is head}
    if head is not None and set(info.get("missing_keys", ())) & head_names and not _tied(model):
        raise TaskError(f"model {spec!r}: its saved weights have no language-model head ({sorted(head_names)[0]} is"
                        f" missing); causal-lm needs a model saved with its LM head")
    return model


def _tied(model) -> bool:
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    return head is not None and emb is not None and head.weight is emb.weight


class PerplexityTrainer(Trainer):
    """``Trainer`` whose ``eval_loss`` is the mean NLL over every eval target token (what ``eval_perplexity``
    exponentiates), not the mean of per-batch means."""

    def evaluation_loop(self, *args, **kwargs):
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
        nll = output.metrics.pop(f"{prefix}_nll", None)
        if nll is not None:
            output.metrics[f"{prefix}_loss"] = nll
        return output


def _metrics(pred) -> dict:
    return perplexity_metrics(pred.predictions)


class CausalLMRunner:
    """Runs ``vectorfit`` commands for causal language models (see the module docstring)."""

    def __init__(self) -> None:
        quiet_transformers()

    # ---------------------------------------------------------------------------------------- data
    def _data(self, args: argparse.Namespace, tokenizer, max_length: int, run: Optional[RunRecord] = None):
        """``(train, eval)`` :class:`LMDataset` and the :class:`DataFormat` (a run's own when its data is reused)."""
        opts = RunOptions(args, run)
        pick = opts.pick
        try:
            train, ev = load_records(opts.data, **opts.split_options())
            fmt = detect_format(train.columns, train.source, text_column=pick("text_column"),
                                prompt_column=pick("prompt_column"), completion_column=pick("completion_column"),
                                messages_column=pick("messages_column"))
            train_ex = encode_records(train, tokenizer, fmt, max_length, what="train data") if len(train) else []
            eval_ex = encode_records(ev, tokenizer, fmt, max_length, what="eval data") if len(ev) else []
        except DataError as exc:
            raise TaskError(" ".join(str(exc).split())) from None
        return LMDataset(train_ex), LMDataset(eval_ex), fmt

    # ---------------------------------------------------------------------------------------- models
    def load_model(self, spec: str, *, run: Optional[RunRecord] = None, num_labels: Optional[int] = None):
        return load_causal_lm(spec)

    def save_model(self, model, directory: str, run: Optional[RunRecord]) -> None:
        """The model (``config.json``, weights, ``generation_config.json``) and the run's tokenizer."""
        if run is not None and run.info.get("data_format", {}).get("kind") == "messages":
            setattr(model.config, CHAT_MARK, "chat")
        model.save_pretrained(directory)
        save_tokenizer_beside(directory, run.info.get("model_path") if run is not None else None)

    # ---------------------------------------------------------------------------------------- train
    def train(self, ctx: TaskContext) -> dict:
        from transformers import set_seed

        args = ctx.settings
        model_path = resolve_model_dir(args.model)
        tokenizer = load_tokenizer(model_path)
        max_length = _max_length(args, tokenizer)
        train_ds, eval_ds, fmt = self._data(args, tokenizer, max_length)
        if len(train_ds) == 0 or len(eval_ds) == 0:
            raise TaskError(f"data {args.data!r}: the train or eval split is empty")
        set_seed(args.seed)
        model = load_causal_lm(args.model)
        if fmt.kind == "messages":
            setattr(model.config, CHAT_MARK, "chat")
        _, total_steps = ctx.training_steps(len(train_ds))
        extra = {"max_length": max_length, "total_steps": total_steps, "data_format": fmt.to_json()}
        ctx.record_run(model_path=str(model_path), label_names=None, kind="causal-lm", num_train=len(train_ds),
                       num_eval=len(eval_ds), extra=extra)

        def load_full(full_run: RunRecord):
            return self.load_model(str(full_run.model_dir), run=full_run)

        return run_trainer(ctx, model=model, tokenizer=tokenizer, train_ds=train_ds, eval_ds=eval_ds,
                           collator=lm_collator(tokenizer.pad_token_id), total_steps=total_steps,
                           compute_metrics=_metrics, preprocess_logits_for_metrics=nll_and_count,
                           trainer_cls=PerplexityTrainer, extra={"max_length": max_length}, load_full=load_full,
                           extra_args={"average_tokens_across_devices": True})  # the loss divides by all ranks' tokens

    # ---------------------------------------------------------------------------------------- evaluate
    def evaluate(self, model, ctx: TaskContext) -> dict:
        args, run = ctx.settings, ctx.run
        tokenizer = load_tokenizer(_tokenizer_source(ctx))
        given = getattr(args, "max_length", None)  # the command's --max-length, else the run's
        max_length = run.info.get("max_length", 128) if run is not None and not given else _max_length(args, tokenizer)
        train_ds, eval_ds, _ = self._data(args, tokenizer, max_length, run)
        split = getattr(args, "split", "eval")
        data = train_ds if split == "train" else eval_ds
        if getattr(args, "max_eval", None):
            data = LMDataset(data.examples[:args.max_eval])
        if len(data) == 0:
            raise TaskError(f"the {split} split has no examples to score")
        result = evaluate_with_trainer(model, args, tokenizer=tokenizer, eval_ds=data,
                                       collator=lm_collator(tokenizer.pad_token_id), compute_metrics=_metrics,
                                       preprocess_logits_for_metrics=nll_and_count, trainer_cls=PerplexityTrainer)
        result.pop("eval_model_preparation_time", None)
        result["num_examples"] = len(data)
        result["split"] = split
        return result

    # ---------------------------------------------------------------------------------------- generate
    @torch.no_grad()
    def generate(self, model, ctx: TaskContext, prompts: Sequence[str]) -> list[str]:
        """The new text ``model`` writes after each prompt (see the module docstring)."""
        from transformers import set_seed

        args, run = ctx.settings, ctx.run
        stored = run.info.get("args", {}) if run is not None else {}

        def option(key: str, default=None):
            value = getattr(args, key, None)
            value = stored.get(key) if value is None else value
            return default if value is None else value

        max_new = option("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
        beams = option("num_beams", 1)
        temperature = option("temperature", 0.0)
        seed = option("seed", None)
        tokenizer = load_tokenizer(_tokenizer_source(ctx))
        tokenizer.padding_side = "left"
        chat = (run is not None and run.info.get("data_format", {}).get("kind") == "messages") or \
            getattr(getattr(model, "config", None), CHAT_MARK, None) == "chat"
        if chat and not getattr(tokenizer, "chat_template", None):
            raise TaskError("the model was trained on chats but its tokenizer has no chat template")
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in prompts] if chat else list(prompts)
        device = torch.device("cuda" if not device_args(getattr(args, "device", "auto"))["use_cpu"] else "cpu")
        model.to(device).eval()
        if seed is not None:
            set_seed(int(seed))
        settings = dict(max_new_tokens=int(max_new), num_beams=int(beams), pad_token_id=tokenizer.pad_token_id,
                        eos_token_id=stop_tokens(model, tokenizer))
        if temperature and temperature > 0:
            settings.update(do_sample=True, temperature=float(temperature), top_k=0, top_p=1.0)
        else:
            settings.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        batch = max(1, int(getattr(args, "eval_batch_size", None) or 8))
        out: list[str] = []
        for start in range(0, len(texts), batch):
            part = texts[start:start + batch]
            enc = tokenizer(part, return_tensors="pt", padding=True, add_special_tokens=not chat).to(device)
            ids = model.generate(**enc, **settings)
            new = ids[:, enc["input_ids"].shape[1]:]
            out += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        return out


def stop_tokens(model, tokenizer) -> list[int]:
    """The tokens that end a generation: the model's generation config's (a list for chat models such as Gemma's
    ``<eos>`` and ``<end_of_turn>``) and the tokenizer's EOS, each once."""
    found = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = list(found) if isinstance(found, (list, tuple)) else [found]
    ids.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


def _max_length(args, tokenizer) -> int:
    given = getattr(args, "max_length", None) or 128
    limit = getattr(tokenizer, "model_max_length", None) or given
    return min(given, limit)


def _tokenizer_source(ctx: TaskContext) -> str:
    """Where the tokenizer lives: the run's base model, else the model given (``--model`` or generate's target)."""
    if ctx.run is not None:
        return ctx.run.info["model_path"]
    args = ctx.settings
    spec = getattr(args, "model", None) or getattr(args, "target", None)
    return str(resolve_model_dir(spec))
