"""The runner of the ``question-answering`` task: extractive QA on the Hugging Face ``Trainer``.

* model: :func:`load_question_answering`, any ``AutoModelForQuestionAnswering`` (its ``qa_outputs`` span head is
  new unless the directory has one: a ``vectorfit merge`` output keeps its own);
* data: :func:`vf_backends_nlp.qa_data.load_qa_data` (SQuAD v1.1 / v2.0 files, the flat form), cut into windows
  (:func:`vf_backends_nlp.qa_features.build_windows`: ``--max-length``, default 384 for this task, and
  ``--doc-stride``); ``--max-train`` / ``--max-eval`` count questions, the steps count windows;
* scores: each evaluation reads the answers back (:mod:`vf_backends_nlp.qa_postprocess`: ``--n-best``,
  ``--max-answer-length``, ``--null-score-threshold``; null answers only for SQuAD v2.0 data) and scores them
  (:func:`vf_backends_nlp.qa_metrics.squad_metrics`): ``eval_exact_match``, ``eval_f1`` (the headline) and
  ``eval_loss`` (the mean of the start and end cross-entropies over the windows); the last evaluation's answers
  are written to ``RUN/eval_predictions.json`` (question id -> answer); windows are shuffled freely
  (``--no-group-by-length`` is implied: grouping would also reorder the eval windows);
* engine: :func:`vf_backends_nlp.trainer_run.run_trainer`, as every text task.

``vectorfit evaluate RUN`` rebuilds the same windows with the run's settings; a merged model (``vectorfit merge``)
carries them in ``vectorfit_qa.json``, so ``vectorfit evaluate --model MERGED --data D`` reads answers the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from vf_core.errors import TaskError
from vf_core.tasks import RunRecord, TaskContext

from .models import load_tokenizer, resolve_model_dir
from .qa_data import DataError, QAData, load_qa_data
from .qa_features import WindowDataset, build_windows
from .qa_metrics import squad_metrics
from .qa_postprocess import predict_answers
from .runner import NLPRunner
from .trainer_run import evaluate_with_trainer, run_trainer

__all__ = ["QARunner", "load_question_answering", "QA_DEFAULTS", "SETTINGS_FILE"]

#: how windows are cut and answers read, when neither the command line nor a run says
QA_DEFAULTS = {"max_length": 384, "doc_stride": 128, "n_best": 20, "max_answer_length": 30,
               "null_score_threshold": 0.0}
#: a merged model's QA settings (its run's), beside its config.json
SETTINGS_FILE = "vectorfit_qa.json"
#: the Trainer's targets; and windows in their order: the answers are read back through a side list of the eval
#: windows, so evaluation must not regroup them by length (which ``group_by_length`` also does to the eval set)
_TARGETS = {"label_names": ["start_positions", "end_positions"], "train_sampling_strategy": "random"}


def load_question_answering(spec: str, **kwargs):
    """``AutoModelForQuestionAnswering`` of a local directory, alias or hub id, offline; returns ``(model,
    tokenizer)``. A model type transformers has no question-answering class for is one clear :class:`DataError`."""
    directory = resolve_model_dir(spec)
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"model {str(spec)!r}: {directory} holds no usable config.json ({exc})") from None
    try:
        model = AutoModelForQuestionAnswering.from_pretrained(directory, local_files_only=True, **kwargs)
    except ValueError as exc:
        raise DataError(f"model {str(spec)!r} (model_type={getattr(config, 'model_type', None)!r}) has no"
                        " question-answering class in transformers (AutoModelForQuestionAnswering); use an encoder"
                        f" such as BERT, RoBERTa, DeBERTa-v2 or ELECTRA ({' '.join(str(exc).split())[:160]})") from None
    except OSError as exc:
        raise DataError(f"model {str(spec)!r}: cannot load weights from {directory} ({exc})") from None
    tokenizer = load_tokenizer(directory)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _check(settings: dict) -> dict:
    if settings["doc_stride"] < 0 or settings["doc_stride"] >= settings["max_length"]:
        raise TaskError(f"--doc-stride {settings['doc_stride']} must lie in [0, --max-length {settings['max_length']})")
    for key in ("n_best", "max_answer_length"):
        if settings[key] < 1:
            raise TaskError(f"--{key.replace('_', '-')} must be at least 1, got {settings[key]}")
    return settings


def _scorer(windows, examples, settings: dict, null_answers: bool, keep: Optional[list] = None):
    """``compute_metrics`` for the Trainer: logits -> answers -> exact match and F1 (``keep`` gets the answers)."""
    references = [ex.answers for ex in examples]

    def compute(pred) -> dict:
        start, end = pred.predictions[0], pred.predictions[1]
        if len(start) != len(windows):
            raise TaskError(f"question-answering: {len(start)} rows of logits for {len(windows)} windows")
        answers = predict_answers(start, end, windows, examples, n_best=settings["n_best"],
                                  max_answer_length=settings["max_answer_length"], null_answers=null_answers,
                                  null_threshold=settings["null_score_threshold"])
        if keep is not None:
            keep[:] = answers
        return squad_metrics(answers, references)

    return compute


def _collator(tokenizer):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


class QARunner(NLPRunner):
    """Runs ``vectorfit`` commands for the ``question-answering`` task (see the module docstring)."""

    # ---------------------------------------------------------------------------------------- data
    @staticmethod
    def _load(spec: str, **options) -> QAData:
        try:
            return load_qa_data(spec, **options)
        except DataError as exc:
            raise TaskError(" ".join(str(exc).split())) from None

    # ---------------------------------------------------------------------------------------- models
    def load_model(self, spec: str, *, run: Optional[RunRecord] = None, num_labels: Optional[int] = None, **_):
        return load_question_answering(spec)[0]

    def save_model(self, model, directory: str, run: Optional[RunRecord]) -> None:
        super().save_model(model, directory, run)
        if run is not None:
            settings = dict(run.info.get("qa", {}), null_answers=run.info.get("null_answers"))
            (Path(directory) / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")

    # ---------------------------------------------------------------------------------------- train
    def train(self, ctx: TaskContext) -> dict:
        from transformers import set_seed

        args = ctx.settings
        data = self._load(args.data, eval_fraction=args.eval_fraction, seed=args.data_seed, max_train=args.max_train,
                          max_eval=args.max_eval, data_config=getattr(args, "data_config", None),
                          split=getattr(args, "data_split", None))
        if not data.train or not data.eval:
            raise TaskError(f"data {args.data!r}: the train or eval split is empty")
        model_path = resolve_model_dir(args.model)
        set_seed(args.seed)
        model, tokenizer = load_question_answering(args.model)
        limit = getattr(tokenizer, "model_max_length", None) or args.max_length
        settings = _check({"max_length": min(args.max_length, limit), "doc_stride": args.doc_stride,
                           "n_best": args.n_best, "max_answer_length": args.max_answer_length,
                           "null_score_threshold": args.null_score_threshold})
        cut = dict(max_length=settings["max_length"], stride=settings["doc_stride"])
        train_w, eval_w = build_windows(tokenizer, data.train, **cut), build_windows(tokenizer, data.eval, **cut)
        _, total_steps = ctx.training_steps(len(train_w))
        extra = {"max_length": settings["max_length"], "qa": settings, "null_answers": data.null_answers,
                 "windows": {"train": len(train_w), "eval": len(eval_w)}, "skipped_examples": data.skipped}
        ctx.record_run(model_path=str(model_path), label_names=None, kind="question-answering",
                       num_train=len(data.train), num_eval=len(data.eval), extra={**extra, "total_steps": total_steps})
        answers: list = []

        def load_full(full_run: RunRecord):
            return self.load_model(str(full_run.model_dir), run=full_run)

        result = run_trainer(ctx, model=model, tokenizer=tokenizer, train_ds=WindowDataset(train_w),
                             eval_ds=WindowDataset(eval_w), collator=_collator(tokenizer), total_steps=total_steps,
                             compute_metrics=_scorer(eval_w, data.eval, settings, data.null_answers, answers),
                             extra_args=_TARGETS, extra=extra,
                             load_full=load_full)
        if answers:
            predictions = {ex.id: text for ex, text in zip(data.eval, answers)}
            (ctx.output / "eval_predictions.json").write_text(json.dumps(predictions, indent=1) + "\n")
        return result

    # ---------------------------------------------------------------------------------------- evaluate
    def _settings(self, run: Optional[RunRecord], model_dir: Path) -> tuple[dict, Optional[bool]]:
        """The run's windows and reading settings (or a merged model's), and its null-answer choice."""
        if run is not None:
            stored = dict(run.info.get("args", {}), **run.info.get("qa", {}))
            null = run.info.get("null_answers")
        else:
            path = model_dir / SETTINGS_FILE
            stored = json.loads(path.read_text()) if path.is_file() else {}
            null = stored.get("null_answers")
        return {k: stored.get(k, v) if stored.get(k) is not None else v for k, v in QA_DEFAULTS.items()}, null

    def evaluate(self, model, ctx: TaskContext) -> dict:
        args, run = ctx.settings, ctx.run
        stored = run.info.get("args", {}) if run is not None else {}
        spec = getattr(args, "data", None) or (run.info["data"] if run is not None else None)
        same = run is not None and spec == run.info.get("data")
        mine = stored if same else {}
        data = self._load(spec, eval_fraction=mine.get("eval_fraction", 0.2), seed=mine.get("data_seed", 0),
                          max_train=mine.get("max_train"),
                          max_eval=getattr(args, "max_eval", None) or mine.get("max_eval"),
                          data_config=mine.get("data_config"), split=mine.get("data_split"), warn=False)
        examples = data.train if getattr(args, "split", "eval") == "train" else data.eval
        if not examples:
            raise TaskError(f"data {spec!r}: the {getattr(args, 'split', 'eval')} split is empty")
        base = Path(run.info["model_path"]) if run is not None else resolve_model_dir(args.model)
        tokenizer = load_tokenizer(base)
        settings, null = self._settings(run, base)
        if getattr(args, "max_length", None):  # the command's --max-length, else the run's windows
            settings = _check({**settings, "max_length": args.max_length})
        null = bool(null) or data.null_answers  # a model trained for null answers keeps them; v2 data asks for them
        windows = build_windows(tokenizer, examples, max_length=settings["max_length"], stride=settings["doc_stride"])
        metrics = evaluate_with_trainer(model, args, tokenizer=tokenizer, eval_ds=WindowDataset(windows),
                                        collator=_collator(tokenizer),
                                        compute_metrics=_scorer(windows, examples, settings, null),
                                        extra_args=_TARGETS)
        metrics["num_examples"] = len(examples)
        metrics["split"] = getattr(args, "split", "eval")
        return metrics
