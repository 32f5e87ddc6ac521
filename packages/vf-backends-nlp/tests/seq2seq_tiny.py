"""Tiny offline seq2seq models for tests: a word-level tokenizer trained with ``tokenizers`` and a random BART or
T5 ``*ForConditionalGeneration`` (or a BERT2BERT ``EncoderDecoderModel``) from a config (hidden 32, 2 + 2 layers),
saved to a folder that ``vectorfit train --model`` and ``from_pretrained`` read.

Shared by ``test_seq2seq.py`` here and the command's ``tests/test_cli_seq2seq.py`` (which loads this file by path).

Example::

    >>> d = save_tiny_seq2seq(tmp_path / "bart", "bart")          # doctest: +SKIP
    >>> AutoModelForSeq2SeqLM.from_pretrained(d).config.d_model    # doctest: +SKIP
    32
"""

from __future__ import annotations

import json
import random
from pathlib import Path

#: the words of the toy corpus (and of the tokenizer's vocabulary)
WORDS = tuple(("the cat dog bird sat ran flew on under over a mat rug tree big small red blue and then it was very "
         "quickly slowly home park").split())
SPECIALS = ("<pad>", "</s>", "<s>", "<unk>")  # ids 0..3: pad, eos, bos, unk


def save_tokenizer(directory: Path):
    """A word-level ``PreTrainedTokenizerFast`` (lower-cased, split on whitespace and punctuation; ``</s>``
    appended to every text) saved into ``directory``; returns it."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>",
                                   unk_token="<unk>", model_max_length=64)
    fast.save_pretrained(str(directory))
    return fast


def tiny_config(kind: str):
    """The config of a tiny random ``kind`` (``bart`` or ``t5``) model on :func:`save_tokenizer`'s ids."""
    import transformers

    vocab = len(SPECIALS) + len(WORDS)
    if kind == "bart":
        return transformers.BartConfig(
            vocab_size=vocab, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
            pad_token_id=0, eos_token_id=1, bos_token_id=2, decoder_start_token_id=1, forced_eos_token_id=1,
            init_std=0.2)  # larger than the default 0.02: the random model then generates words, not only </s>
    if kind == "t5":
        return transformers.T5Config(
            vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    raise ValueError(kind)


def save_tiny_seq2seq(directory: Path, kind: str = "bart", seed: int = 0) -> Path:
    """A tiny random ``kind`` ``*ForConditionalGeneration`` with its tokenizer saved in ``directory``."""
    import torch
    import transformers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tokenizer(directory)
    torch.manual_seed(seed)
    cls = transformers.BartForConditionalGeneration if kind == "bart" else transformers.T5ForConditionalGeneration
    cls(tiny_config(kind)).save_pretrained(str(directory))
    return directory


def save_tiny_bert2bert(directory: Path, seed: int = 0) -> Path:
    """A tiny warm-start-style ``EncoderDecoderModel`` (a BERT encoder and a BERT decoder with cross-attention) with
    the same tokenizer. As ``EncoderDecoderModel.save_pretrained`` writes it, its special token ids are in
    ``config.json`` only, not in ``generation_config.json``."""
    import torch
    import transformers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tokenizer(directory)
    torch.manual_seed(seed)
    sizes = dict(vocab_size=len(SPECIALS) + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=64, pad_token_id=0, initializer_range=0.2)
    encoder = transformers.BertModel(transformers.BertConfig(**sizes))
    decoder = transformers.BertLMHeadModel(transformers.BertConfig(**sizes, is_decoder=True, add_cross_attention=True))
    model = transformers.EncoderDecoderModel(encoder=encoder, decoder=decoder)
    model.config.decoder_start_token_id, model.config.eos_token_id, model.config.pad_token_id = 2, 1, 0
    model.save_pretrained(str(directory))
    return directory


def save_tiny_decoder(directory: Path) -> Path:
    """A tiny GPT-2 language model (decoder only) with the same tokenizer: not a seq2seq model."""
    import torch
    import transformers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tokenizer(directory)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(SPECIALS) + len(WORDS), n_embd=32, n_layer=2, n_head=4,
                                     n_positions=64, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(str(directory))
    return directory


def pair(rng: random.Random) -> tuple[str, str]:
    """A source sentence and its target: the source's first three words (a toy summary)."""
    words = [rng.choice(WORDS) for _ in range(rng.randint(5, 9))]
    return " ".join(words), " ".join(words[:3])


def write_pairs(path: Path, n: int = 40, seed: int = 0, source: str = "source", target: str = "target") -> Path:
    """``n`` JSON lines ``{source: ..., target: ...}`` (column names as given)."""
    rng = random.Random(seed)
    rows = [dict(zip((source, target), pair(rng))) for _ in range(n)]
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return Path(path)
