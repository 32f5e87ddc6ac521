"""The ``causal-lm`` task record and its claims (cheap to import: json and paths only).

``vectorfit train --task causal-lm --model DIR --data FILE`` fine-tunes any ``AutoModelForCausalLM`` (GPT-2,
Llama, Mistral, Qwen, Gemma, OPT... or a ``vectorfit merge`` output) with every method; the model keeps its own
LM head (``new_head=False``). Data, recognised from the columns (:mod:`vf_backends_nlp.causal_lm_data`):

* ``text``: plain language modelling, EOS appended, the loss on every token;
* ``prompt`` + ``completion``: the loss on the completion (and its EOS) only;
* ``messages`` (a list of ``{role, content}``): rendered with the tokenizer's chat template, the loss on the
  assistant turns only; a tokenizer without a chat template is an error (give prompt/completion or text rows).

``--max-length N``: a prompt + completion longer than N tokens keeps the completion and the end of the prompt (the
prompt is cut from the left), a completion longer than N alone is cut on the right; texts and chats are cut on the
right; the count of cut examples is printed once as a warning. Metrics: ``eval_loss`` (mean NLL per target
token) and ``eval_perplexity`` = ``exp(eval_loss)``. ``vectorfit generate RUN --prompt TEXT`` writes continuations
(chat-trained runs: the prompt as one user turn with the generation prompt).

Claims: a local model directory whose ``config.json`` names a ``*ForCausalLM`` / ``*LMHeadModel`` architecture (or,
without architectures, a decoder ``model_type``) is SURE; a hub id is MAYBE. A local ``.jsonl`` / ``.json`` file
whose first record has ``prompt`` + ``completion`` or ``messages`` is SURE; other text files and ``datasets``
sources are MAYBE.

Example:
    >>> CAUSAL_LM.name, CAUSAL_LM.headline, CAUSAL_LM.generates, CAUSAL_LM.new_head
    ('causal-lm', 'eval_perplexity', True, False)
"""

from __future__ import annotations

from pathlib import Path

from vf_core.tasks import MAYBE, NO, SURE, Task

from .data_peek import data_suffix, first_record, local_text_file_or_source
from vf_core.hub import claim_path, parse_hub_id
from .models import TIMM_MARKER, architectures, read_config
from .task_options import generation_arguments

__all__ = ["CAUSAL_LM", "claim_causal_model", "claim_causal_data", "model_architectures", "CAUSAL_MODEL_TYPES"]

#: decoder model types recognised when a config has no ``architectures``
CAUSAL_MODEL_TYPES = frozenset({
    "gpt2", "gpt_neo", "gpt_neox", "gptj", "gpt_bigcode", "llama", "mistral", "mixtral", "qwen2", "qwen2_moe",
    "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text", "opt", "phi", "phi3", "falcon", "bloom", "codegen",
    "stablelm", "starcoder2", "olmo", "olmo2", "smollm3", "granite", "cohere"})

_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def model_architectures(spec: str) -> tuple[list[str], str] | None:
    """``(architectures, model_type)`` of a local model directory's ``config.json``, or None."""
    config = read_config(spec)
    if not config:
        return None
    return architectures(config), str(config.get("model_type", ""))


def claim_causal_model(spec: str) -> int:
    """SURE for a local causal LM directory (or a hub id whose cached config says so), MAYBE for a hub id not in the
    cache or an unrecognised transformers directory."""
    path = claim_path(spec)
    if (path / TIMM_MARKER).is_file():
        return NO  # a timm model saved by the vision backend
    found = model_architectures(str(path))
    if found is not None:
        archs, model_type = found
        if any(a.endswith(_CAUSAL_SUFFIXES) for a in archs):
            return SURE
        if archs:
            return NO
        return SURE if model_type in CAUSAL_MODEL_TYPES else MAYBE
    if Path(spec).expanduser().exists():
        return NO
    return MAYBE if parse_hub_id(spec) is not None else NO  # a hub id: resolved (cache first) when a run starts


def claim_causal_data(spec: str) -> int:
    """SURE for a local .jsonl/.json file whose first record has prompt + completion or messages; MAYBE for
    other text files and ``datasets`` sources. Reads the first 64 KB at most; never raises."""
    path = Path(spec).expanduser()
    if path.is_file() and data_suffix(path) in (".jsonl", ".ndjson", ".json"):
        try:
            record = first_record(path)
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and isinstance(record.get("data"), list) and record["data"]:
            record = record["data"][0]  # {"data": [...]}: its first item
        if isinstance(record, dict) and ("messages" in record or {"prompt", "completion"} <= set(record)):
            return SURE
    return local_text_file_or_source(spec)


def _runner():
    from .causal_lm_runner import CausalLMRunner

    return CausalLMRunner()


CAUSAL_LM = Task(
    name="causal-lm",
    backend="nlp",
    description="fine-tune a decoder language model (GPT-2, Llama, Mistral, Qwen...) on text, prompt/completion or"
                " chat data; generates",
    claim_model=claim_causal_model,
    claim_data=claim_causal_data,
    runner=_runner,
    models="a local directory or hub id that AutoModelForCausalLM loads with its LM head (a vectorfit merge output"
           " included)",
    data="a .jsonl/.json/.csv file or datasets source with a text column, prompt + completion columns, or a messages"
         " column (chat)",
    aliases=("clm",),
    headline="eval_perplexity",
    generates=True,
    new_head=False,
    add_arguments=generation_arguments,
    engine="Hugging Face Trainer",
    multiprocess=True,
    requires=("transformers", "accelerate"),
    install_hint="pip install 'vectorfit[nlp]' (or 'vf-backends-nlp[transformers]')",
)
