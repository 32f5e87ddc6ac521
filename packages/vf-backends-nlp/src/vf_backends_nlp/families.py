"""Architecture families of Hugging Face transformers and the modules that play each role.

Roles are given relative to a block (``block_pattern``). Each family also builds a tiny random model from a
config for the shared contract tests; transformers is imported only inside those factories.
"""

from __future__ import annotations

from vf_core.families import Family, FusedModule

__all__ = ["FAMILIES"]

_HEADS = ("classifier", "score", "qa_outputs")


def _tiny(config_cls: str, model_cls: str, **kwargs):
    def build():
        import torch
        import transformers

        torch.manual_seed(0)
        config = getattr(transformers, config_cls)(**kwargs)
        return getattr(transformers, model_cls)(config).eval()

    return build


def _token_input(vocab: int = 99, length: int = 7):
    def make(model):
        import torch

        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, vocab, (2, length), generator=gen)
        return (), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    return make


_SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=99,
              max_position_embeddings=64)

BERT = Family(
    name="bert",
    backend="nlp",
    model_types=("bert",),
    block_pattern=r"(?:.*\.)?layer\.\d+",
    roles={
        "q": ("attention.self.query",),
        "k": ("attention.self.key",),
        "v": ("attention.self.value",),
        "o": ("attention.output.dense",),
        "f1": ("intermediate.dense",),
        "f2": ("output.dense",),
    },
    heads=_HEADS,
    tiny_model=_tiny("BertConfig", "BertForSequenceClassification", num_labels=2, **_SMALL),
    example_input=_token_input(),
    notes="BERT and its distillations (all-MiniLM, TinyBERT). The pooler is not targeted.",
)

GPT2 = Family(
    name="gpt2",
    backend="nlp",
    model_types=("gpt2",),
    block_pattern=r"(?:.*\.)?h\.\d+",
    roles={"o": ("attn.c_proj",), "f1": ("mlp.c_fc",), "f2": ("mlp.c_proj",)},
    fused={"attn.c_attn": FusedModule(("q", "k", "v"))},
    heads=("score",),
    tiny_model=_tiny("GPT2Config", "GPT2ForSequenceClassification", n_embd=32, n_layer=2, n_head=4, vocab_size=99,
                     n_positions=64, num_labels=2, pad_token_id=0),
    example_input=_token_input(),
    notes="GPT-2 stores Conv1D weights transposed and fuses q, k, v in c_attn, split per role. The tied lm_head"
          " is never targeted.",
)

FAMILIES: list[Family] = [BERT, GPT2]
