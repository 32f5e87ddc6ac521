"""The mean-pooling head (``--pooling mean``): the head reads the masked mean of the last hidden states, with
no new parameters, through VectorFit injection and merging, and a saved model keeps it."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from vf_backends_nlp.pooling import masked_mean, use_mean_pooling
from vf_core import VectorFitConfig, get_vectorfit_model

SMALL = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
             max_position_embeddings=40)


def _batch():
    ids = torch.randint(5, 40, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, 4:] = 0
    mask[2, 2:] = 0
    return ids, mask


def test_bert_head_reads_the_masked_mean():
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**SMALL)).eval()
    ids, mask = _batch()
    with torch.no_grad():
        hidden = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = model.classifier(masked_mean(hidden, mask))
        use_mean_pooling(model)
        got = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected)
    assert masked_mean(hidden, mask)[2].allclose(hidden[2, :2].mean(0))


def test_roberta_head_reads_the_masked_mean():
    """RoBERTa-style heads read the first token: the mean is written there."""
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(RobertaConfig(**SMALL, pad_token_id=1)).eval()
    ids, mask = _batch()
    with torch.no_grad():
        hidden = model.roberta(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = model.classifier(masked_mean(hidden, mask).unsqueeze(1))
        use_mean_pooling(model)
        got = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected)


def test_mean_pooling_survives_injection_merge_and_save(tmp_path):
    torch.manual_seed(0)
    model = use_mean_pooling(BertForSequenceClassification(BertConfig(**SMALL)).eval())
    ids, mask = _batch()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
    n_params = sum(p.numel() for p in model.parameters())
    vf = get_vectorfit_model(model, VectorFitConfig()).eval()
    with torch.no_grad():
        torch.testing.assert_close(vf(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-5, rtol=1e-5)
    plain = vf.merge_and_unload()
    assert sum(p.numel() for p in plain.parameters()) == n_params  # no new parameters
    plain.save_pretrained(tmp_path)
    again = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert again.config.vectorfit_pooling == "mean"
    from vf_backends_nlp.pooling import apply_pooling

    apply_pooling(again, None)  # what load_text_classifier does with a saved config
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-5, rtol=1e-5)


def test_bad_pooling_name():
    from vf_backends_nlp.pooling import apply_pooling

    model = BertForSequenceClassification(BertConfig(**SMALL))
    with pytest.raises(ValueError, match="pooling must be one of cls, mean"):
        apply_pooling(model, "max")
