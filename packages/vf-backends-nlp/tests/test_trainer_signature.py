"""The wrapper exposes the base model's forward signature, so the Trainer keeps the right columns and labels."""

from __future__ import annotations

import inspect

import pytest

from vf_core import VectorFitConfig, get_vectorfit_model

pytest.importorskip("transformers")


def test_signature_and_label_names():
    from transformers.utils import find_labels

    from vf_backends_nlp.families import BERT

    vf = get_vectorfit_model(BERT.tiny_model(), VectorFitConfig())
    params = inspect.signature(vf.forward).parameters
    assert "input_ids" in params and "labels" in params and "self" not in params
    assert find_labels(type(vf)) == ["labels"]
    assert type(vf).__name__ == "VectorFitModelForBertForSequenceClassification"
