"""The ``question-answering`` task record (extractive QA, SQuAD v1.1 / v2.0) and its claims.

Cheap to import (stdlib and the backend's readers; transformers is loaded by :mod:`vf_backends_nlp.qa_runner`
when a command runs).

Claims (how ``vectorfit train`` recognises the task without ``--task``):

* model: SURE for a local model directory whose ``config.json`` names a ``*ForQuestionAnswering`` architecture
  (a ``vectorfit merge`` output of this task); NO for a causal language model directory (``*ForCausalLM``,
  ``*LMHeadModel``: the ``causal-lm`` task's); MAYBE for any other model directory, the built-in aliases
  (``minilm``) and hub ids, which get a new ``qa_outputs`` head;
* data: SURE for a SQuAD ``.json`` file, a JSON-lines / JSON-array file whose first record has ``context``,
  ``question`` and ``answers``, or a ``save_to_disk`` folder with those columns
  (:func:`vf_backends_nlp.qa_data.looks_like_qa_data`, at most 64 KB read); MAYBE for other text files and
  ``datasets`` sources. A text model on SQuAD data (``--model minilm --data train-v1.1.json``) therefore runs this
  task: the data decides between the tasks of one backend when the model's favourite is unsure of the data.

Example::

    >>> QUESTION_ANSWERING.headline, QUESTION_ANSWERING.new_head, QUESTION_ANSWERING.defaults
    ('eval_f1', True, {'max_length': 384})
"""

from __future__ import annotations


from vf_core.tasks import MAYBE, NO, SURE, Task

from .data import BUILTIN_TEXT_DATASETS
from .data_peek import local_text_file_or_source
from vf_core.hub import claim_path, parse_hub_id
from .models import MODEL_ASSETS, TIMM_MARKER, architectures, read_config
from .qa_data import looks_like_qa_data
from .task_options import qa_arguments

__all__ = ["QUESTION_ANSWERING", "claim_model", "claim_data"]

_CAUSAL = ("ForCausalLM", "LMHeadModel")


def claim_model(spec: str) -> int:
    if spec in MODEL_ASSETS:
        return MAYBE  # an encoder: a new span head
    path = claim_path(spec)
    if path.is_dir() and (path / "config.json").is_file() and not (path / TIMM_MARKER).is_file():
        names = architectures(read_config(path))
        if any(a.endswith("ForQuestionAnswering") for a in names):
            return SURE
        if names and all(a.endswith(_CAUSAL) for a in names):
            return NO
        return MAYBE
    if not path.exists() and parse_hub_id(spec) is not None:
        return MAYBE
    return NO


def claim_data(spec: str) -> int:
    if looks_like_qa_data(spec):
        return SURE
    if spec in BUILTIN_TEXT_DATASETS:
        return NO
    return local_text_file_or_source(spec)  # columns are checked when the run reads it


def _runner():
    from .qa_runner import QARunner

    return QARunner()


def _build(spec: str, **options):
    from .qa_runner import load_question_answering

    return load_question_answering(spec, **options)


def _collator(tokenizer):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


def _metrics(predictions, references, num_labels=None) -> dict:
    from .qa_metrics import squad_metrics

    return squad_metrics(predictions, references)


QUESTION_ANSWERING = Task(
    name="question-answering",
    backend="nlp",
    description="extractive question answering (SQuAD v1.1/v2.0): the answer's span in the context, with a new"
                " qa_outputs head",
    claim_model=claim_model,
    claim_data=claim_data,
    runner=_runner,
    models="a built-in alias, a local Hugging Face model directory or hub id that AutoModelForQuestionAnswering loads"
           " (BERT, RoBERTa, DeBERTa-v2, ELECTRA...; new qa_outputs head)",
    data="a SQuAD v1.1/v2.0 .json file, or rows with question, context and answers ({text: [...], answer_start:"
         " [...]}) in JSON lines, JSON, CSV or a datasets folder",
    model_aliases={alias: asset.description for alias, asset in MODEL_ASSETS.items()},
    aliases=("qa", "extractive-qa"),
    build=_build,
    collator=_collator,
    metrics=_metrics,
    headline="eval_f1",
    generates=False,
    new_head=True,
    defaults={"max_length": 384},
    add_arguments=qa_arguments,
    engine="Hugging Face Trainer",
    multiprocess=True,
    requires=("transformers", "accelerate", "torchmetrics"),
    install_hint="pip install 'vectorfit[nlp]' (or 'vf-backends-nlp[transformers]') and torchmetrics",
)
