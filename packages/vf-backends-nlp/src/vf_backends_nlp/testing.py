"""Tiny causal language models with an offline word-level tokenizer, for tests, examples and docs.

Nothing is downloaded: the tokenizer is built with ``tokenizers`` from a word list (whitespace and punctuation
split, unknown words map to ``<unk>``), and the models are random ``transformers`` models built from configs.
:func:`word_tokenizer` can carry a small chat template, with or without ``{% generation %}`` markers.

Example:
    >>> from vf_backends_nlp.testing import tiny_causal_lm, word_tokenizer
    >>> tok = word_tokenizer()
    >>> tok.decode(tok("the cat sat")["input_ids"])
    'the cat sat'
    >>> model = tiny_causal_lm("llama", vocab_size=len(tok))
    >>> model.config.model_type
    'llama'
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

__all__ = ["WORDS", "SPECIAL", "CHAT_TEMPLATE", "CHAT_TEMPLATE_MARKED", "word_tokenizer", "tiny_causal_lm",
           "save_tiny_causal_lm", "REVIEWS", "minilm_with_batch"]

#: three short film reviews, a batch for tests on the packaged MiniLM
REVIEWS = ("a gripping, beautifully shot film", "two hours I will never get back",
           "the plot wanders but the acting holds it together")

#: special tokens, in vocabulary order (ids 0..7)
SPECIAL = ("<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")

#: the ordinary words of the vocabulary
WORDS = tuple("""the a an cat dog bird fish sat ran flew swam on in under over mat log tree pond red blue green
small big old young is was and or but not yes no what who where why how question answer hello hi good bad day
night sun moon one two three four five six seven eight nine ten plus minus equals say tell me you i it this that
please thanks . , ? ! : ; ' sky sea home road book food water fire wind rain snow stone""".split())

#: a chat template: each turn is ``<|role|> content <|end|>``; the generation prompt is ``<|assistant|>``
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|> {% endif %}")

#: the same rendering, with ``{% generation %}`` around each assistant turn's content (transformers'
#: ``return_assistant_tokens_mask`` reads it)
CHAT_TEMPLATE_MARKED = ("{% for m in messages %}{% if m['role'] == 'assistant' %}<|assistant|> {% generation %}"
                        "{{ m['content'] }} <|end|>{% endgeneration %} {% else %}<|{{ m['role'] }}|> "
                        "{{ m['content'] }} <|end|> {% endif %}{% endfor %}"
                        "{% if add_generation_prompt %}<|assistant|> {% endif %}")


def word_tokenizer(words: Sequence[str] = WORDS, *, chat_template: Optional[str] = None, pad: bool = True):
    """A ``PreTrainedTokenizerFast`` over ``SPECIAL + words``: ``<s>`` is BOS (not added), ``</s>`` EOS,
    ``<pad>`` the pad token unless ``pad=False`` (then it has none, like GPT-2's).

    ``chat_template``: None (no template), or a Jinja template such as :data:`CHAT_TEMPLATE`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(list(SPECIAL) + [w for w in words if w not in SPECIAL])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces, tidies punctuation
    core.add_special_tokens(list(SPECIAL))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<pad>" if pad else None, model_max_length=512)
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def tiny_causal_lm(kind: str = "llama", *, vocab_size: int = len(SPECIAL) + len(WORDS), seed: int = 0):
    """A random causal LM of about 60k parameters: ``"llama"`` (grouped-query attention, gated MLP) or
    ``"gpt2"`` (fused ``c_attn``, biases everywhere); EOS id 3, BOS id 2, pad id 0."""
    import torch
    import transformers

    torch.manual_seed(seed)
    ids = dict(bos_token_id=2, eos_token_id=3, pad_token_id=0)
    if kind == "llama":
        config = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                          max_position_embeddings=128, tie_word_embeddings=False, **ids)
        return transformers.LlamaForCausalLM(config)
    if kind == "gpt2":
        config = transformers.GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                         **ids)
        return transformers.GPT2LMHeadModel(config)
    raise ValueError(f"kind must be 'llama' or 'gpt2', got {kind!r}")


def save_tiny_causal_lm(directory: Union[str, Path], kind: str = "llama", *, chat_template: Optional[str] = None,
                        pad: bool = True, seed: int = 0) -> Path:
    """Save :func:`tiny_causal_lm` and :func:`word_tokenizer` to ``directory`` (a ``--model`` folder)."""
    tok = word_tokenizer(chat_template=chat_template, pad=pad)
    model = tiny_causal_lm(kind, vocab_size=len(tok), seed=seed)
    model.generation_config.pad_token_id = tok.pad_token_id if pad else tok.eos_token_id
    directory = Path(directory)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def minilm_with_batch(num_labels: int = 2, texts: Sequence[str] = REVIEWS):
    """The packaged all-MiniLM-L6-v2 as a sequence classifier (its new head seeded with 0, in eval mode) and a
    tokenized, padded batch of ``texts`` as a dict of tensors. Raises ``vf_core.assets.AssetError`` when the model's
    package cannot be fetched."""
    import torch

    from .models import load_sequence_classifier

    torch.manual_seed(0)
    model, tokenizer = load_sequence_classifier("minilm", num_labels=num_labels)
    return model.eval(), dict(tokenizer(list(texts), padding=True, return_tensors="pt"))
