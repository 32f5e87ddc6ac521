"""Roles inferred from structure (vf_core.inference) for tiny models of architectures no backend declares, built from
configs: transformers (GPT-NeoX, Falcon, Bloom, MPT, Phi-3, OLMo 2, StarCoder2, Granite, RoFormer, CodeGen), timm
(EVA-02, a ViT with SwiGLU) and diffusers (UNet2DModel; UNet2DConditionModel with fused projections and with added
keys and values). Each test skips when its library is missing. Models some
backend declares (timm's VisionTransformer, diffusers' UNet2DModel) run with the family tables removed, so that only
inference can recognise them. The plain-torch cases and the errors are in test_inference.py.
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch

import vf_core.targets
from vf_core import DecomposedLayer, UnknownFamilyError, VectorFitConfig, VectorFitModel, get_vectorfit_model
from vf_core.targets import identify_family
from vf_core.testing.contract import output_tensor

ALL = {"q", "k", "v", "o", "f1", "f2"}
_SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=99,
              max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _causal_lm(model_type: str, **kwargs):
    def build():
        transformers = pytest.importorskip("transformers")
        config = transformers.AutoConfig.for_model(model_type, **{**_SMALL, **kwargs})
        return transformers.AutoModelForCausalLM.from_config(config)

    return build


def _tokens(model):
    ids = torch.randint(3, 99, (2, 7), generator=torch.Generator().manual_seed(0))
    return (), {"input_ids": ids}


def _timm(name: str, **kwargs):
    def build():
        timm = pytest.importorskip("timm")
        if kwargs.pop("swiglu", False):
            kwargs["mlp_layer"] = timm.layers.SwiGLU
        return timm.create_model(name, pretrained=False, num_classes=3, **kwargs)

    return build


def _image(size: int):
    return lambda model: ((torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)),), {})


def _unet2d():
    diffusers = pytest.importorskip("diffusers")
    return diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
                                 attention_head_dim=4)


def _unet2d_condition(fuse: bool = False, **kwargs):
    def build():
        diffusers = pytest.importorskip("diffusers")
        model = diffusers.UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16, attention_head_dim=4,
            norm_num_groups=4, **kwargs)
        if fuse:  # to_qkv (self-attention) and to_kv (cross-attention) are called instead of to_q/to_k/to_v
            model.fuse_qkv_projections()
        return model

    return build


def _unet_condition_input(model):
    gen = torch.Generator().manual_seed(0)
    return (), {"sample": torch.randn(2, 4, 8, 8, generator=gen), "timestep": torch.tensor([10, 500]),
                "encoder_hidden_states": torch.randn(2, 5, 16, generator=gen)}


def _unet_input(model):
    gen = torch.Generator().manual_seed(0)
    return (), {"sample": torch.randn(2, 1, 8, 8, generator=gen), "timestep": torch.tensor([10, 500])}


# name -> (factory, input factory, roles expected, fused path -> words its note must hold)
CASES = {
    "gpt_neox": (_causal_lm("gpt_neox"), _tokens, ALL, {"attention.query_key_value": "interleaved per head"}),
    "falcon-multi-query": (_causal_lm("falcon"), _tokens, ALL, {"self_attention.query_key_value": "blocked"}),
    "falcon-new-architecture": (_causal_lm("falcon", new_decoder_architecture=True, num_kv_heads=2), _tokens, ALL,
                                {"self_attention.query_key_value": "grouped per key-value head"}),
    "falcon-multi-head": (_causal_lm("falcon", multi_query=False), _tokens, ALL,
                          {"self_attention.query_key_value": "interleaved per head"}),
    "bloom": (_causal_lm("bloom", n_layer=2, n_head=4), _tokens, ALL,
              {"self_attention.query_key_value": "interleaved per head"}),
    "mpt": (_causal_lm("mpt", d_model=32, n_layers=2, n_heads=4, expansion_ratio=2), _tokens, ALL,
            {"attn.Wqkv": "blocked"}),
    "phi3": (_causal_lm("phi3", num_key_value_heads=2), _tokens, ALL, {"self_attn.qkv_proj": "blocked (32/16/16"}),
    "olmo2": (_causal_lm("olmo2"), _tokens, ALL, {}),
    "starcoder2": (_causal_lm("starcoder2", num_key_value_heads=2), _tokens, ALL, {}),
    "granite": (_causal_lm("granite"), _tokens, ALL, {}),
    "roformer": (_causal_lm("roformer", is_decoder=True), _tokens, ALL, {}),
    # found by the coverage sweep (docs/coverage.md): qk-norm under a fused projection, latent attention, hybrids
    "persimmon-qk-layernorm": (_causal_lm("persimmon", qk_layernorm=True), _tokens, ALL,
                               {"self_attn.query_key_value": "interleaved per head"}),
    "deepseek_v3-latent-attention": (
        _causal_lm("deepseek_v3", num_key_value_heads=4, q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8,
                   qk_rope_head_dim=8, v_head_dim=8, n_routed_experts=4, num_experts_per_tok=2, n_group=1,
                   topk_group=1, first_k_dense_replace=1, moe_intermediate_size=32),
        _tokens, ALL | {None}, {"self_attn.kv_b_proj": "k/v interleaved per head"}),
    "qwen3_next-hybrid": (
        _causal_lm("qwen3_next", layer_types=["linear_attention", "full_attention"], num_key_value_heads=2,
                   head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                   shared_expert_intermediate_size=32, linear_num_key_heads=2, linear_num_value_heads=4,
                   linear_key_head_dim=8, linear_value_head_dim=8),
        _tokens, ALL, {}),
    "eva02": (_timm("eva02_tiny_patch14_224", img_size=28, depth=2, embed_dim=32, num_heads=4), _image(28), ALL,
              {"attn.qkv": "blocked"}),
    "vit-swiglu": (_timm("vit_small_patch16_224", img_size=32, depth=2, embed_dim=32, num_heads=4, swiglu=True),
                   _image(32), ALL, {"attn.qkv": "blocked"}),
    "unet2d": (_unet2d, _unet_input, {"q", "k", "v", "o"}, {}),
    "unet2d-condition-fused-projections": (_unet2d_condition(fuse=True), _unet_condition_input, ALL,
                                           {"attn1.to_qkv": "q/k/v blocked", "attn2.to_kv": "k/v blocked"}),
    "unet2d-condition-added-kv": (_unet2d_condition(mid_block_type="UNetMidBlock2DSimpleCrossAttn"),
                                  _unet_condition_input, ALL, {}),
}


@pytest.fixture
def no_tables(monkeypatch):
    """No declared family: identify_family sees an empty registry, so only inference recognises a model."""
    monkeypatch.setattr(vf_core.targets, "list_families", lambda: {})


@pytest.mark.parametrize("case", list(CASES))
def test_inferred_roles_exact_and_trainable(case, no_tables, caplog):
    build, make_input, roles, fused = CASES[case]
    torch.manual_seed(0)
    model = build().eval()
    args, kwargs = make_input(model)
    with torch.no_grad():
        expected = output_tensor(model(*args, **kwargs))
    with caplog.at_level(logging.INFO, logger="vf_core"):
        vf = get_vectorfit_model(model, VectorFitConfig())
    assert vf.family.origin == "inferred" and vf.family.name.startswith("inferred:")
    assert [r.getMessage() for r in caplog.records if r.name == "vf_core"] == [vf.family.notes]
    assert vf.family.notes.startswith("family inferred for ")
    assert {v.role for v in vf.vectors} == roles
    for suffix, words in fused.items():  # fused module paths (relative to a block) -> words of their note
        (note,) = [fm.note for rel, fm in vf.family.fused.items() if rel == suffix or rel.endswith("." + suffix)]
        assert words in note and "checked numerically" in note, note
    with torch.no_grad():
        torch.testing.assert_close(output_tensor(vf(*args, **kwargs)), expected, atol=1e-5, rtol=1e-4)
    vf.train()
    output_tensor(vf(*args, **kwargs)).float().pow(2).mean().backward()
    for vec in vf.vectors.select(kind="sigma"):
        assert vec.parameter.grad is not None and vec.parameter.grad.abs().sum() > 0, vec.name


def test_log_line_names_the_modules(caplog):
    model = _causal_lm("gpt_neox")()
    with caplog.at_level(logging.INFO, logger="vf_core"):
        get_vectorfit_model(model, VectorFitConfig())
    (line,) = [r.getMessage() for r in caplog.records if r.name == "vf_core"]
    assert line.startswith("family inferred for model_type 'gpt_neox': 2 blocks, roles q, k, v, o, f1, f2 from"
                           " query_key_value (q/k/v interleaved per head (4 groups of 8/8/8 rows), checked"
                           " numerically), dense, dense_h_to_4h, dense_4h_to_h")


def test_interleaved_rows_are_the_heads_rows():
    """GPT-NeoX's query_key_value holds q, k, v of each head in turn: the q part is exactly those rows."""
    model = _causal_lm("gpt_neox")()
    weight = model.gpt_neox.layers[0].attention.query_key_value.weight.detach().clone()
    vf = get_vectorfit_model(model, VectorFitConfig())
    layer = vf.decomposed_layers()["gpt_neox.layers.0.attention.query_key_value"]
    per_head = weight.view(4, 3, 8, 32)  # heads, (q, k, v), head_dim, hidden
    for i, role in enumerate("qkv"):
        torch.testing.assert_close(layer.parts[role].dense_weight(), per_head[:, i].reshape(32, 32), atol=1e-5,
                                   rtol=1e-4)


def test_interleaved_split_merges_and_round_trips(tmp_path):
    build = _causal_lm("bloom", n_layer=2, n_head=4)
    torch.manual_seed(0)
    base = build().eval()
    fresh = copy.deepcopy(base)
    args, kwargs = _tokens(base)
    vf = get_vectorfit_model(base, VectorFitConfig())
    with torch.no_grad():
        for vec in vf.vectors:
            vec.parameter.mul_(1.05) if vec.kind == "sigma" else vec.parameter.add_(0.05)
        trained = output_tensor(vf(*args, **kwargs))
    vf.save_pretrained(tmp_path)
    loaded = VectorFitModel.from_pretrained(fresh, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(output_tensor(loaded(*args, **kwargs)), trained, atol=1e-5, rtol=1e-4)
        merged = vf.merge_and_unload()
        torch.testing.assert_close(output_tensor(merged(*args, **kwargs)), trained, atol=1e-5, rtol=1e-4)
    assert not any(isinstance(m, DecomposedLayer) for m in merged.modules())


def test_roles_in_another_order_are_split():
    """CodeGen's qkv_proj (chunks of heads holding q, v, k) fits no layout in the names' order: the roles' row
    blocks are reordered until the check passes, and the note says in which order they are held."""
    model = _causal_lm("codegen", n_embd=32, n_layer=2, n_head=4, rotary_dim=4)().eval()
    args, kwargs = _tokens(model)
    with torch.no_grad():
        expected = output_tensor(model(*args, **kwargs))
    vf = get_vectorfit_model(model, VectorFitConfig())
    fused = vf.family.fused["attn.qkv_proj"]
    assert not fused.whole and "held in the order q, v, k, checked numerically" in fused.note, fused.note
    assert {v.role for v in vf.vectors} == {"q", "k", "v", "o", "f1", "f2"}
    with torch.no_grad():
        torch.testing.assert_close(output_tensor(vf(*args, **kwargs)), expected, atol=1e-5, rtol=1e-4)
    vf2 = get_vectorfit_model(_causal_lm("codegen", n_embd=32, n_layer=2, n_head=4, rotary_dim=4)(),
                              VectorFitConfig(roles=["q", "v"]))
    assert {(v.module.rsplit(".", 1)[-1], v.role) for v in vf2.vectors} == {("qkv_proj", "q"), ("qkv_proj", "v")}


def test_declared_families_win():
    transformers = pytest.importorskip("transformers")
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**_SMALL, "num_key_value_heads": 2}))
    assert identify_family(model, infer=True).name == "llama"
    assert get_vectorfit_model(model, VectorFitConfig()).family.origin == "declared"


def test_state_space_model_gets_a_clear_error():
    transformers = pytest.importorskip("transformers")
    model = transformers.MambaForCausalLM(transformers.MambaConfig(hidden_size=32, num_hidden_layers=2, state_size=4,
                                                                   vocab_size=99))
    with pytest.raises(UnknownFamilyError) as info:
        get_vectorfit_model(model, VectorFitConfig())
    message = str(info.value)
    assert "model_type 'mamba'" in message and "state-space" in message and "mixer.in_proj" in message
    assert "target_modules" in message
