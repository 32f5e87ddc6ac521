"""vf-backends-nlp's declarations beyond the shared contract: coverage, aliases, gated MLPs, fused c_attn,
tied weights, transformers 4.x ViT names, unknown families and the nox matrix."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from vf_core import UnknownFamilyError, VectorFitConfig, get_vectorfit_model
from vf_core.plugins import list_families
from vf_core.targets import identify_family
from vf_backends_nlp.families import FAMILIES

transformers = pytest.importorskip("transformers")

REQUIRED = {"bert", "roberta", "distilbert", "deberta-v2", "electra", "bart", "t5", "gpt2", "opt", "llama", "mistral",
            "qwen2", "gemma", "vit"}
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=99,
             max_position_embeddings=64)


def test_required_families_are_registered():
    registered = {name for name, f in list_families().items() if f.backend == "nlp"}
    assert REQUIRED <= registered, f"missing: {sorted(REQUIRED - registered)}"
    assert registered == {f.name for f in FAMILIES}


def test_gated_mlp_notes_say_how_gate_and_up_map():
    for name in ("llama", "mistral", "qwen2", "gemma"):
        family = list_families()[name]
        assert "gate_proj and up_proj both play f1" in family.notes
        assert family.role_of("mlp.gate_proj") == family.role_of("mlp.up_proj") == "f1"
        assert family.role_of("mlp.down_proj") == "f2"


@pytest.mark.parametrize("model_type, family, kwargs", [
    ("xlm-roberta", "roberta", dict(SMALL, pad_token_id=1)),
    ("camembert", "roberta", dict(SMALL, pad_token_id=1)),
    ("mt5", "t5", dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, vocab_size=99)),
    ("gemma2", "gemma", dict(SMALL, num_key_value_heads=2, head_dim=8)),
    ("mbart", "bart", dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                           decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=99,
                           max_position_embeddings=64)),
])
def test_alias_model_types_resolve_every_role(model_type, family, kwargs):
    config = transformers.AutoConfig.for_model(model_type, **kwargs)
    model = transformers.AutoModel.from_config(config)
    vf = get_vectorfit_model(model, VectorFitConfig())
    assert vf.family.name == family
    roles_by_layer: dict = {}
    for vec in vf.vectors.select(kind="sigma"):
        roles_by_layer.setdefault(vec.layer, set()).add(vec.role)
    assert roles_by_layer and all(r == set(vf.family.declared_roles) for r in roles_by_layer.values())


def test_gated_mlp_has_two_f1_vectors_per_block():
    family = list_families()["llama"]
    vf = get_vectorfit_model(family.tiny_model(), VectorFitConfig(train_bias=False))
    f1 = sorted(v.module.rsplit(".", 1)[-1] for v in vf.vectors.select(kind="sigma", role="f1", layer=0))
    assert f1 == ["gate_proj", "up_proj"]
    assert [v.module.rsplit(".", 1)[-1] for v in vf.vectors.select(kind="sigma", role="f2", layer=0)] == ["down_proj"]


def test_gpt2_fused_c_attn_is_split_into_q_k_v():
    vf = get_vectorfit_model(list_families()["gpt2"].tiny_model(), VectorFitConfig())
    names = {v.role: v.name for v in vf.vectors.select(kind="sigma", layer=0) if v.role in ("q", "k", "v")}
    assert names == {r: f"transformer.h.0.attn.c_attn.{r}.sigma" for r in ("q", "k", "v")}
    assert all(v.numel == 32 for v in vf.vectors.select(kind="sigma", layer=0) if v.role in ("q", "k", "v"))


def _causal_lm(name):
    torch.manual_seed(0)
    if name == "gpt2":
        cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=99, n_positions=64)
        return transformers.GPT2LMHeadModel(cfg), "transformer.wte"
    if name == "llama":
        cfg = transformers.LlamaConfig(**SMALL, num_key_value_heads=2, tie_word_embeddings=True)
        return transformers.LlamaForCausalLM(cfg), "model.embed_tokens"
    if name == "opt":
        cfg = transformers.OPTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                                     vocab_size=99, max_position_embeddings=64, word_embed_proj_dim=32)
        return transformers.OPTForCausalLM(cfg), "model.decoder.embed_tokens"
    if name == "bart":
        cfg = transformers.BartConfig(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                                      decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                      vocab_size=99, max_position_embeddings=64)
        return transformers.BartForConditionalGeneration(cfg), "model.shared"
    cfg = transformers.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4, vocab_size=99,
                                decoder_start_token_id=0)
    return transformers.T5ForConditionalGeneration(cfg), "shared"


@pytest.mark.parametrize("name", ["gpt2", "llama", "opt", "bart", "t5"])
def test_tied_lm_head_is_never_targeted(name):
    model, embedding = _causal_lm(name)
    assert model.lm_head.weight is model.get_submodule(embedding).weight, "the tiny model should tie lm_head"
    vf = get_vectorfit_model(model, VectorFitConfig())  # a targeted tied weight would raise TiedWeightError
    assert not any(n.startswith("lm_head") for n in vf.decomposed_layers())
    assert "lm_head" not in vf.modules_to_save
    assert not model.lm_head.weight.requires_grad
    assert model.lm_head.weight is model.get_submodule(embedding).weight, "decomposition untied lm_head"


class _Vit4Layer(nn.Module):
    """transformers 4.x ViTLayer names: attention.attention.{query,key,value}, attention.output.dense,
    intermediate.dense, output.dense."""

    def __init__(self, d=8):
        super().__init__()
        self.attention = nn.Module()
        self.attention.attention = nn.Module()
        for n in ("query", "key", "value"):
            setattr(self.attention.attention, n, nn.Linear(d, d))
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(d, d)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(d, 2 * d)
        self.output = nn.Module()
        self.output.dense = nn.Linear(2 * d, d)


def test_vit_family_also_knows_transformers_4_names():
    model = nn.Module()
    model.config = type("Config", (), {"model_type": "vit"})()
    model.vit = nn.Module()
    model.vit.encoder = nn.Module()
    model.vit.encoder.layer = nn.ModuleList([_Vit4Layer(), _Vit4Layer()])
    model.classifier = nn.Linear(8, 2)
    vf = get_vectorfit_model(model, VectorFitConfig())
    assert vf.family.name == "vit"
    assert vf.modules_to_save == ["classifier"]
    for layer in (0, 1):
        assert {v.role for v in vf.vectors.select(kind="sigma", layer=layer)} == {"q", "k", "v", "o", "f1", "f2"}


def test_unknown_family_raises_a_clear_error():
    # no backend declares Mamba, and a state-space model has no attention or MLP blocks to infer roles from
    cfg = transformers.MambaConfig(hidden_size=32, num_hidden_layers=1, state_size=4, vocab_size=99)
    model = transformers.MambaForCausalLM(cfg)
    assert identify_family(model) is None
    with pytest.raises(UnknownFamilyError) as info:
        get_vectorfit_model(model, VectorFitConfig())
    message = str(info.value)
    assert "mamba" in message and "target_modules" in message and "state-space" in message
    for name in ("bert", "llama", "t5"):
        assert name in message
    # and the way out the message shows works
    vf = get_vectorfit_model(model, VectorFitConfig(target_modules=r".*\.(in_proj|out_proj)"))
    assert len(vf.vectors) > 0


def test_undeclared_architecture_gets_inferred_roles():
    """GPT-NeoX is declared by no backend: its roles are inferred (query_key_value interleaved per head)."""
    cfg = transformers.GPTNeoXConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                     vocab_size=99, max_position_embeddings=64)
    model = transformers.GPTNeoXForCausalLM(cfg)
    assert identify_family(model) is None and identify_family(model, infer=True).origin == "inferred"
    vf = get_vectorfit_model(model, VectorFitConfig())
    assert vf.family.name == "inferred:gpt_neox"
    assert {v.role for v in vf.vectors} == {"q", "k", "v", "o", "f1", "f2"}
