"""The coverage sweep (benchmarks/coverage, docs/coverage.md) at a tiny size: a fixed sample of architectures of
transformers, timm and diffusers, chosen to cover every spelling and layout the structural recognition handles,
each built offline from a small configuration, injected with the default ``VectorFitConfig()`` (no module names)
and checked as the sweep checks every model (benchmarks/coverage/check.py): recognised (its family's roles and the
roles its structure shows are all decomposed, no fused projection left whole), exact at initialisation, gradients
to every singular-value vector whose base weight gets one. Each case skips when its library is missing.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

COVERAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "coverage")

# key -> what it covers (declared families first, then inferred spellings and layouts)
SAMPLE = {
    # transformers: declared families
    "transformers:gpt2": "declared gpt2: GPT-2's Conv1D, fused c_attn",
    "transformers:t5": "declared t5: q/k/v/o, wi/wo, encoder-decoder with cross-attention",
    # transformers: inferred
    "transformers:gpt_neox": "query_key_value interleaved per head",
    "transformers:falcon": "multi-query query_key_value, blocked",
    "transformers:phi3": "qkv_proj with grouped-query sizes, gate_up_proj",
    "transformers:persimmon": "fused qkv under layer-normalised queries and keys",
    "transformers:olmo2": "q_proj/k_proj/v_proj/o_proj, gate_proj+up_proj/down_proj",
    "transformers:mixtral": "3-D expert parameters",
    "transformers:deepseek_v3": "multi-head latent attention, MoE blocks next to a dense one",
    "transformers:qwen3_next": "hybrid: linear-attention layers next to attention layers",
    "transformers:lfm2": "hybrid: convolution layers; w1/w3/w2",
    "transformers:distilbert": "q_lin/k_lin/v_lin/out_lin, lin1/lin2",
    "transformers:roformer": "BERT's attention.self + attention.output.dense, intermediate/output.dense",
    "transformers:led": "a sibling output projection (self_attn.output)",
    "transformers:cpmant": "project_q/attention_out, w_in.w_0 + w_in.w_1 / w_out",
    "transformers:funnel": "q_head/k_head/v_head/post_proj",
    "transformers:prophetnet": "linear intermediate/output feed-forward",
    "transformers:moshi": "projections wrapping their linear (q_proj.linear)",
    "transformers:afmoe": "an attention output gate (gate_proj) next to q/k/v/o",
    "transformers:deberta": "DeBERTa's fused in_proj, interleaved per head",
    "transformers:pvt_v2": "query/key/value/proj, dense1/dense2 (vision)",
    "transformers:codegen": "qkv_proj holding q, v, k per group: the roles' row blocks reordered",
    "transformers:granite_speech": "a fused to_kv checked through its encoder (relative positions only it computes)",
    "transformers:xlstm": "proj_up_gate + proj_up / proj_down",
    # timm
    "timm:vision_transformer": "declared timm-vit",
    "timm:eva": "EVA: fused qkv, SwiGLU",
    "timm:maxxvit": "MaxViT/CoAtNet: qkv interleaved per head, transition blocks",
    "timm:swin_transformer": "declared timm-swin",
    "timm:efficientformer": "keys narrower than values per head; hybrid stage (attention in one block)",
    "timm:convnext": "declared timm-convnext (MLP only)",
    "timm:xcit": "attention across channels, not local in positions: q before k",
    "timm:tnt": "queries and keys fused (qk) next to a separate v; a wrapper holding its projections",
    # diffusers
    "diffusers:UNet2DModel[Unet2DModelTesterConfig]": "declared unet2d",
    "diffusers:UNet2DConditionModel[sd-like]": "declared unet2d-condition",
    "diffusers:Transformer2DModel": "declared transformer2d",
    "diffusers:DiTTransformer2DModel": "declared dit",
    "diffusers:SD3Transformer2DModel[SD3TransformerTesterConfig]": "declared sd3",
    "diffusers:FluxTransformer2DModel": "declared flux",
    "diffusers:AuraFlowTransformer2DModel": "joint attention (add_q_proj...), inferred",
    "diffusers:JoyImageEditTransformer3DModel": "joint attention with stream-prefixed fused projections (img_attn_qkv)",
    "diffusers:ConsisIDTransformer3DModel": "a perceiver's fused to_kv, called on two sequences",
    "diffusers:Ideogram4Transformer2DModel": "square w1/w2/w3: the down projection told by a call",
    "diffusers:WanTransformer3DModel": "video denoiser, cross-attention, inferred",
    "diffusers:HunyuanVideoTransformer3DModel[HunyuanVideoTransformerTesterConfig]":
        "single-stream blocks: attention without an output projection",
    "diffusers:MochiTransformer3DModel": "an adaptive norm's modulation linear is no MLP",
    "diffusers:StableAudioDiTModel": "1-D denoiser, grouped keys and values",
}


def _load(name: str):
    """A module of benchmarks/coverage, under a name of its own (no clash with other ``models`` or ``check``)."""
    spec = importlib.util.spec_from_file_location(f"coverage_sweep_{name}", os.path.join(COVERAGE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sweep():
    return _load("models"), _load("check")


def _case(models, key: str):
    pytest.importorskip(key.split(":", 1)[0])
    return models.find_case(key)


@pytest.mark.slow
@pytest.mark.parametrize("key", list(SAMPLE))
def test_recognised_exact_with_gradients(sweep, key):
    models, check = sweep
    case = _case(models, key)
    model, args, kwargs = case.build()
    with models.quiet():
        record = check.check(model, args, kwargs)
    assert record["status"] == "recognised", f"{key} ({SAMPLE[key]}): {record.get('reason')}; {record.get('notes')}"
    assert record["error"] <= check.ATOL and record["no_grad"] == 0 and not record["missing"]


@pytest.mark.slow
def test_model_without_blocks_gets_the_clear_error(sweep):
    models, check = sweep
    model, args, kwargs = _case(models, "timm:resnet").build()
    record = check.check(model, args, kwargs)
    assert record["status"] == "no-blocks" and "no attention" in record["reason"], record
