"""Architecture families of Hugging Face transformers and the modules that play each role.

Roles are given relative to a block (``block_pattern``). Each family also builds a tiny random model from a
config for the shared contract tests (:mod:`vf_core.testing`); transformers is imported only inside those
factories, never when this module is imported.

Conventions shared by every family here:

- A gated MLP (Llama, Mistral, Qwen2, Gemma, gated T5): ``gate_proj`` and ``up_proj`` both play ``f1`` (each
  gets its own ``s`` and ``b`` vectors, so a block has two ``f1`` sigma vectors), ``down_proj`` plays ``f2``.
- Encoder-decoder models (BART, T5): the decoder's cross-attention projections play ``q, k, v, o`` like the
  self-attention ones, so a decoder block has two vectors per attention role.
- Tied weights (``lm_head`` tied to the input embeddings) are outside every block, so they are never targeted,
  and no family lists ``lm_head`` as a head: it stays frozen and tied.
- ``heads`` are the *new* task heads trained in full by default (``modules_to_save=None``).

Example:
    >>> from vf_backends_nlp.families import FAMILIES
    >>> llama = next(f for f in FAMILIES if f.name == "llama")
    >>> llama.role_of("mlp.up_proj"), llama.role_of("mlp.gate_proj"), llama.role_of("mlp.down_proj")
    ('f1', 'f1', 'f2')
"""

from __future__ import annotations

from vf_core.families import Family, FusedModule

__all__ = ["FAMILIES", "GATED_MLP_NOTE"]

_HEADS = ("classifier", "score", "qa_outputs")

GATED_MLP_NOTE = ("Gated MLP: gate_proj and up_proj both play f1 (two f1 vectors per block, each with its own s"
                  " and b), down_proj plays f2.")


def _tiny(config_cls: str, model_cls: str, **kwargs):
    """A factory of a seeded, tiny, randomly initialised ``model_cls(config_cls(**kwargs))`` in eval mode."""

    def build():
        import torch
        import transformers

        torch.manual_seed(0)
        config = getattr(transformers, config_cls)(**kwargs)
        return getattr(transformers, model_cls)(config).eval()

    return build


def _token_input(vocab: int = 99, length: int = 7, low: int = 3, eos: int | None = None):
    """A factory of ``input_ids`` (ids in ``[low, vocab)``, clear of pad/bos/eos) and an attention mask.

    ``eos``: put this token last in every row (BART and T5 classifiers pool the final ``<eos>``).
    """

    def make(model):
        import torch

        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(low, vocab, (2, length), generator=gen)
        if eos is not None:
            ids[:, -1] = eos
        return (), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    return make


def _pixel_input(size: int = 16, channels: int = 3):
    def make(model):
        import torch

        gen = torch.Generator().manual_seed(0)
        return (), {"pixel_values": torch.randn(2, channels, size, size, generator=gen)}

    return make


_SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=99,
              max_position_embeddings=64)
# decoder-only models with grouped-query attention (k and v smaller than q) and a pad token for the classifier
_DECODER = dict(_SMALL, num_key_value_heads=2, pad_token_id=0)

_BERT_ROLES = {
    "q": ("attention.self.query",),
    "k": ("attention.self.key",),
    "v": ("attention.self.value",),
    "o": ("attention.output.dense",),
    "f1": ("intermediate.dense",),
    "f2": ("output.dense",),
}

_LLAMA_ROLES = {
    "q": ("self_attn.q_proj",),
    "k": ("self_attn.k_proj",),
    "v": ("self_attn.v_proj",),
    "o": ("self_attn.o_proj",),
    "f1": ("mlp.gate_proj", "mlp.up_proj"),
    "f2": ("mlp.down_proj",),
}

# BART, OPT and other fairseq-style layers; BART's decoder also has ``encoder_attn`` (cross-attention)
_FAIRSEQ_ROLES = {
    "q": ("self_attn.q_proj", "encoder_attn.q_proj"),
    "k": ("self_attn.k_proj", "encoder_attn.k_proj"),
    "v": ("self_attn.v_proj", "encoder_attn.v_proj"),
    "o": ("self_attn.out_proj", "encoder_attn.out_proj"),
    "f1": ("fc1",),
    "f2": ("fc2",),
}

BERT = Family(
    name="bert",
    backend="nlp",
    model_types=("bert",),
    block_pattern=r"(?:.*\.)?layer\.\d+",
    roles=_BERT_ROLES,
    heads=_HEADS,
    tiny_model=_tiny("BertConfig", "BertForSequenceClassification", num_labels=2, **_SMALL),
    example_input=_token_input(),
    notes="BERT and its distillations (all-MiniLM, TinyBERT). The pooler is pre-trained and not targeted.",
)

ROBERTA = Family(
    name="roberta",
    backend="nlp",
    model_types=("roberta", "xlm-roberta", "camembert"),
    block_pattern=r"(?:.*\.)?layer\.\d+",
    roles=_BERT_ROLES,
    heads=_HEADS,
    tiny_model=_tiny("RobertaConfig", "RobertaForSequenceClassification", num_labels=2, pad_token_id=1, **_SMALL),
    example_input=_token_input(),
    notes="RoBERTa, XLM-RoBERTa, CamemBERT: BERT's layer names. The classification head ('classifier', a dense"
          " layer and out_proj) is new and trained in full.",
)

DISTILBERT = Family(
    name="distilbert",
    backend="nlp",
    model_types=("distilbert",),
    block_pattern=r"(?:.*\.)?layer\.\d+",
    roles={
        "q": ("attention.q_lin",),
        "k": ("attention.k_lin",),
        "v": ("attention.v_lin",),
        "o": ("attention.out_lin",),
        "f1": ("ffn.lin1",),
        "f2": ("ffn.lin2",),
    },
    heads=("pre_classifier", "classifier", "qa_outputs"),
    tiny_model=_tiny("DistilBertConfig", "DistilBertForSequenceClassification", dim=32, n_layers=2, n_heads=4,
                     hidden_dim=64, vocab_size=99, max_position_embeddings=64, num_labels=2),
    example_input=_token_input(),
    notes="DistilBERT: q_lin/k_lin/v_lin/out_lin, ffn.lin1 (f1), ffn.lin2 (f2). Its pre_classifier is new"
          " (not in the pre-trained checkpoint) and trained in full with the classifier.",
)

DEBERTA_V2 = Family(
    name="deberta-v2",
    backend="nlp",
    model_types=("deberta-v2",),
    block_pattern=r"(?:.*\.)?layer\.\d+",
    roles={
        "q": ("attention.self.query_proj",),
        "k": ("attention.self.key_proj",),
        "v": ("attention.self.value_proj",),
        "o": ("attention.output.dense",),
        "f1": ("intermediate.dense",),
        "f2": ("output.dense",),
    },
    heads=("pooler", "classifier", "qa_outputs"),
    tiny_model=_tiny("DebertaV2Config", "DebertaV2ForSequenceClassification", num_labels=2, **_SMALL),
    example_input=_token_input(),
    notes="DeBERTa-v2 and DeBERTa-v3 (model_type 'deberta-v2'), the paper's GLUE model. The classifier's"
          " ContextPooler ('pooler') is not in the pre-trained checkpoint, so it trains in full with the"
          " classifier, as in the LoRA/AdaLoRA GLUE recipes. The relative-position embeddings are not targeted.",
)

ELECTRA = Family(
    name="electra",
    backend="nlp",
    model_types=("electra",),
    block_pattern=r"(?:.*\.)?layer\.\d+",
    roles=_BERT_ROLES,
    heads=_HEADS,
    tiny_model=_tiny("ElectraConfig", "ElectraForSequenceClassification", num_labels=2, embedding_size=16,
                     **_SMALL),
    example_input=_token_input(),
    notes="ELECTRA discriminators: BERT's layer names. 'embeddings_project' (embedding size to hidden size) is"
          " outside the blocks and not targeted.",
)

BART = Family(
    name="bart",
    backend="nlp",
    model_types=("bart", "mbart", "pegasus", "marian", "blenderbot", "blenderbot-small", "plbart"),
    block_pattern=r"(?:.*\.)?layers\.\d+",
    roles=_FAIRSEQ_ROLES,
    heads=("classification_head", "qa_outputs"),
    tiny_model=_tiny("BartConfig", "BartForSequenceClassification", d_model=32, encoder_layers=2, decoder_layers=2,
                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                     vocab_size=99, max_position_embeddings=64, num_labels=2),
    example_input=_token_input(eos=2),
    notes="BART (and mBART, Pegasus, Marian, Blenderbot, PLBart, which share its layer names): encoder and decoder layers are numbered in model order (encoder first). The"
          " decoder's cross-attention (encoder_attn) plays q, k, v, o too. The lm_head of"
          " BartForConditionalGeneration is tied to the shared embeddings and never targeted.",
)

T5 = Family(
    name="t5",
    backend="nlp",
    model_types=("t5", "mt5"),
    block_pattern=r"(?:.*\.)?block\.\d+",
    roles={
        "q": ("layer.0.SelfAttention.q", "layer.1.EncDecAttention.q"),
        "k": ("layer.0.SelfAttention.k", "layer.1.EncDecAttention.k"),
        "v": ("layer.0.SelfAttention.v", "layer.1.EncDecAttention.v"),
        "o": ("layer.0.SelfAttention.o", "layer.1.EncDecAttention.o"),
        # encoder blocks hold the MLP in layer.1, decoder blocks in layer.2; gated T5 (v1.1, flan) has wi_0/wi_1
        "f1": ("layer.1.DenseReluDense.wi", "layer.2.DenseReluDense.wi", "layer.1.DenseReluDense.wi_0",
               "layer.1.DenseReluDense.wi_1", "layer.2.DenseReluDense.wi_0", "layer.2.DenseReluDense.wi_1"),
        "f2": ("layer.1.DenseReluDense.wo", "layer.2.DenseReluDense.wo"),
    },
    heads=("classification_head", "qa_outputs", "classifier"),
    tiny_model=_tiny("T5Config", "T5ForSequenceClassification", d_model=32, d_kv=8, d_ff=64, num_layers=2,
                     num_decoder_layers=2, num_heads=4, vocab_size=99, num_labels=2, decoder_start_token_id=0,
                     pad_token_id=0),
    example_input=_token_input(eos=1),
    notes="T5 and mT5: q, k, v, o of self- and cross-attention (EncDecAttention); DenseReluDense.wi is f1 and"
          " wo is f2. Gated T5 (v1.1, flan-T5): wi_0 and wi_1 both play f1. T5 layers have no biases, so only"
          " singular values train unless add_missing_bias=True. The tied lm_head is never targeted. T5's"
          " feed-forward reads wo.weight (its dtype), so the decomposed layer must expose its current 'weight'"
          " (requested from vf-core; until then the forward pass fails).",
)

GPT2 = Family(
    name="gpt2",
    backend="nlp",
    model_types=("gpt2",),
    block_pattern=r"(?:.*\.)?h\.\d+",
    roles={"o": ("attn.c_proj",), "f1": ("mlp.c_fc",), "f2": ("mlp.c_proj",)},
    fused={"attn.c_attn": FusedModule(("q", "k", "v"))},
    heads=_HEADS,
    tiny_model=_tiny("GPT2Config", "GPT2ForSequenceClassification", n_embd=32, n_layer=2, n_head=4, vocab_size=99,
                     n_positions=64, num_labels=2, pad_token_id=0),
    example_input=_token_input(),
    notes="GPT-2 stores Conv1D weights transposed and fuses q, k, v in c_attn, split per role. The tied lm_head"
          " is never targeted.",
)

OPT = Family(
    name="opt",
    backend="nlp",
    model_types=("opt",),
    block_pattern=r"(?:.*\.)?layers\.\d+",
    roles=_FAIRSEQ_ROLES,
    heads=_HEADS,
    tiny_model=_tiny("OPTConfig", "OPTForSequenceClassification", hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, ffn_dim=64, vocab_size=99, max_position_embeddings=64,
                     word_embed_proj_dim=32, num_labels=2, pad_token_id=1),
    example_input=_token_input(),
    notes="OPT: q_proj, k_proj, v_proj, out_proj, fc1 (f1), fc2 (f2). The tied lm_head is never targeted.",
)

LLAMA = Family(
    name="llama",
    backend="nlp",
    model_types=("llama",),
    block_pattern=r"(?:.*\.)?layers\.\d+",
    roles=_LLAMA_ROLES,
    heads=_HEADS,
    tiny_model=_tiny("LlamaConfig", "LlamaForSequenceClassification", num_labels=2, **_DECODER),
    example_input=_token_input(),
    notes="Llama: " + GATED_MLP_NOTE + " Grouped-query attention: k_proj and v_proj are smaller than q_proj"
          " (separate modules, each decomposed on its own). No biases: only singular values train unless"
          " add_missing_bias=True.",
)

MISTRAL = Family(
    name="mistral",
    backend="nlp",
    model_types=("mistral",),
    block_pattern=r"(?:.*\.)?layers\.\d+",
    roles=_LLAMA_ROLES,
    heads=_HEADS,
    tiny_model=_tiny("MistralConfig", "MistralForSequenceClassification", num_labels=2, **_DECODER),
    example_input=_token_input(),
    notes="Mistral: Llama's layer names. " + GATED_MLP_NOTE,
)

QWEN2 = Family(
    name="qwen2",
    backend="nlp",
    model_types=("qwen2", "qwen3"),
    block_pattern=r"(?:.*\.)?layers\.\d+",
    roles=_LLAMA_ROLES,
    heads=_HEADS,
    tiny_model=_tiny("Qwen2Config", "Qwen2ForSequenceClassification", num_labels=2, **_DECODER),
    example_input=_token_input(),
    notes="Qwen2 and Qwen3: Llama's layer names; Qwen2's q_proj, k_proj and v_proj have biases (they train), o_proj"
          " has none; Qwen3's q/k norms are not targeted. "
          + GATED_MLP_NOTE,
)

GEMMA = Family(
    name="gemma",
    backend="nlp",
    model_types=("gemma", "gemma2", "gemma3_text"),
    block_pattern=r"(?:.*\.)?layers\.\d+",
    roles=_LLAMA_ROLES,
    heads=_HEADS,
    tiny_model=_tiny("GemmaConfig", "GemmaForSequenceClassification", num_labels=2, head_dim=8, **_DECODER),
    example_input=_token_input(),
    notes="Gemma, Gemma 2 and Gemma 3 (text): Llama's layer names. " + GATED_MLP_NOTE + " The tied lm_head is never targeted.",
)

PHI = Family(
    name="phi",
    backend="nlp",
    model_types=("phi",),
    block_pattern=r"(?:.*\.)?layers\.\d+",
    roles={"q": ("self_attn.q_proj",), "k": ("self_attn.k_proj",), "v": ("self_attn.v_proj",),
           "o": ("self_attn.dense",), "f1": ("mlp.fc1",), "f2": ("mlp.fc2",)},
    heads=_HEADS,
    tiny_model=_tiny("PhiConfig", "PhiForSequenceClassification", num_labels=2, **_DECODER),
    example_input=_token_input(),
    notes="Phi (phi-1.5, phi-2): q_proj, k_proj, v_proj, dense (o), mlp.fc1 (f1), mlp.fc2 (f2), all with biases.",
)

VIT = Family(
    name="vit",
    backend="nlp",
    model_types=("vit",),
    block_pattern=r"(?:.*\.)?layers?\.\d+",
    roles={
        # transformers 5.x names first, then the 4.x names (ViTSelfAttention / ViTIntermediate / ViTOutput)
        "q": ("attention.q_proj", "attention.attention.query"),
        "k": ("attention.k_proj", "attention.attention.key"),
        "v": ("attention.v_proj", "attention.attention.value"),
        "o": ("attention.o_proj", "attention.output.dense"),
        "f1": ("mlp.fc1", "intermediate.dense"),
        "f2": ("mlp.fc2", "output.dense"),
    },
    heads=("classifier",),
    tiny_model=_tiny("ViTConfig", "ViTForImageClassification", hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64, image_size=16, patch_size=4, num_labels=2),
    example_input=_pixel_input(16),
    notes="transformers' ViT (google/vit-*), the paper's vision model. Module names changed in transformers 5"
          " (layers.N.attention.q_proj, mlp.fc1) from 4.x (layer.N.attention.attention.query, intermediate.dense);"
          " both are declared. The patch embedding (a strided Conv2d) is not targeted. For timm's ViT see the"
          " vision backend's 'timm-vit'.",
)

FAMILIES: list[Family] = [BERT, ROBERTA, DISTILBERT, DEBERTA_V2, ELECTRA, BART, T5, GPT2, OPT, LLAMA, MISTRAL, QWEN2,
                          GEMMA, PHI, VIT]
