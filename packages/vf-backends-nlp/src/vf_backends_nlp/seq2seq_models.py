"""Encoder-decoder language models for the ``seq2seq`` task (``AutoModelForSeq2SeqLM``: BART, T5, mBART,
Pegasus, Marian...): recognising them (cheap: a look at ``config.json``) and loading them offline.

Example::

    >>> from vf_backends_nlp.seq2seq_models import claim_seq2seq_model, load_seq2seq
    >>> claim_seq2seq_model("runs/bart-merged")        # doctest: +SKIP
    2
    >>> model, tokenizer = load_seq2seq("runs/bart-merged")   # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Union

from vf_core.assets import DataError
from vf_core.tasks import MAYBE, NO, SURE

from vf_core.hub import claim_path, parse_hub_id
from .models import TIMM_MARKER, architectures, read_config

__all__ = ["claim_seq2seq_model", "load_seq2seq", "GENERATION_HEADS"]

#: endings of the ``architectures`` of a saved encoder-decoder language model
GENERATION_HEADS = ("ForConditionalGeneration", "MTModel", "ForSeq2SeqLM")
#: the ``architectures`` of a text encoder and decoder joined by transformers (BERT2BERT, a warm start)
JOINED = "EncoderDecoderModel"


def claim_seq2seq_model(spec: str) -> int:
    """SURE for a local directory holding an encoder-decoder language model (``is_encoder_decoder`` and an
    ``architectures`` entry ending in ``ForConditionalGeneration``, or ``EncoderDecoderModel``), MAYBE for another
    encoder-decoder directory (a BART classifier: ``AutoModelForSeq2SeqLM`` loads its body) or a hub id, NO
    otherwise (encoders, decoders)."""
    path = claim_path(spec)
    if path.is_dir():
        if not (path / "config.json").is_file() or (path / TIMM_MARKER).is_file():
            return NO
        config = read_config(path)
        if not config.get("is_encoder_decoder"):
            return NO
        return SURE if any(a.endswith(GENERATION_HEADS) or a == JOINED for a in architectures(config)) else MAYBE
    if not path.exists() and parse_hub_id(spec) is not None:
        return MAYBE
    return NO


def load_seq2seq(spec: Union[str, os.PathLike]):
    """``(model, tokenizer)``: ``AutoModelForSeq2SeqLM`` and its tokenizer from a local directory or a hub id
    (cache first), offline. A model that is not an encoder-decoder is one :class:`DataError` line saying which
    task trains it."""
    from .models import load_tokenizer, resolve_model_dir

    directory = resolve_model_dir(spec)
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"model {str(spec)!r}: {directory} holds no usable config.json ({exc})") from None
    kind = getattr(config, "model_type", None)
    if not getattr(config, "is_encoder_decoder", False):
        raise DataError(f"model {str(spec)!r} (model_type={kind!r}) is not an encoder-decoder model; the seq2seq task"
                        " trains AutoModelForSeq2SeqLM models (BART, T5, mBART, Pegasus...); a decoder-only model"
                        " trains with --task causal-lm, an encoder with --task text-classification (or, for seq2seq,"
                        " joined to a decoder first: EncoderDecoderModel.from_encoder_decoder_pretrained, saved with"
                        " save_pretrained)")
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(directory, local_files_only=True)
    except ValueError as exc:
        raise DataError(f"model {str(spec)!r} (model_type={kind!r}) has no sequence-to-sequence LM class in"
                        f" transformers ({' '.join(str(exc).split())[:200]})") from None
    except OSError as exc:
        raise DataError(f"model {str(spec)!r}: cannot load weights from {directory} ({exc})") from None
    tokenizer = load_tokenizer(directory)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    _generation_ids_from_config(model)
    if model.config.decoder_start_token_id is None and getattr(model.generation_config, "decoder_start_token_id",
                                                               None) is None:
        raise DataError(f"model {str(spec)!r}: its config sets no decoder_start_token_id (the token the decoder starts"
                        " from: the pad token for T5, </s> for BART); add it to config.json")
    return model, tokenizer


#: the special token ids that ``generate`` reads from the generation config
_GENERATION_IDS = ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id")


def _generation_ids_from_config(model) -> None:
    """Copy the special token ids that the model's config states but its generation config leaves unset (a
    warm-started ``EncoderDecoderModel``, e.g. BERT2BERT, saves them in ``config.json`` only, and ``generate``
    would stop with "decoder_start_token_id has to be defined"). Ids the generation config sets are kept."""
    generation = getattr(model, "generation_config", None)
    if generation is None:
        return
    for key in _GENERATION_IDS:
        if getattr(generation, key, None) is None and getattr(model.config, key, None) is not None:
            setattr(generation, key, getattr(model.config, key))
