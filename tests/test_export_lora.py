"""``VectorFitModel.save_as_lora``: the export loads in PEFT (``PeftModel.from_pretrained``) and in diffusers
(``load_lora_adapter`` / a pipeline's ``load_lora_weights``) with the VectorFit model's outputs.

MiniLM (the packaged all-MiniLM-L6-v2, trained vectors simulated by perturbing them), tiny GPT-2 (fused ``c_attn``,
Conv1D), SVFit and SVFT parts on a fused ``qkv``, timm's ViT, a tiny Stable Diffusion UNet and pipeline (Linear and
Conv2d); truncation by rank and energy; bias-only changes and uniform ranks."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from vf_core import ConfigError, ExportError, VectorFitConfig, get_vectorfit_model

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def _perturb(vf, scale: float = 0.05, seed: int = 0) -> None:
    """Move every trained vector and head as training would (relative noise on the singular values)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for v in vf.vectors:
            p = v.parameter
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            p.add_(noise * scale * (p.abs() if v.kind == "sigma" else 1.0))
        for p in vf.head_parameters().values():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def _peft_logits(base, directory, batch):
    model = peft.PeftModel.from_pretrained(base, str(directory)).eval()
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module")
def minilm():
    from vf_core.assets import AssetError
    from vf_backends_nlp.testing import minilm_with_batch

    try:
        return minilm_with_batch()
    except AssetError as exc:  # pragma: no cover - no registry reachable
        pytest.skip(f"all-MiniLM-L6-v2 could not be fetched: {exc}")


@pytest.fixture(scope="module")
def minilm_trained(minilm, tmp_path_factory):
    model, batch = minilm
    base = copy.deepcopy(model)
    vf = get_vectorfit_model(copy.deepcopy(model), VectorFitConfig(modules_to_save=["classifier"])).eval()
    _perturb(vf)
    with torch.no_grad():
        ref = vf(**batch).logits
    return vf, base, batch, ref, tmp_path_factory.mktemp("minilm")


def test_minilm_lossless_export_loads_in_peft_with_the_same_logits(minilm_trained):
    vf, base, batch, ref, tmp = minilm_trained
    out = tmp / "lossless"
    report = vf.save_as_lora(out, sample_inputs=batch)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "SEQ_CLS" and config["lora_bias"] is True
    assert config["modules_to_save"] == ["classifier"] and len(config["target_modules"]) == 36
    assert report.max_relative_error < 1e-6 and report.mode == "lossless"
    # every singular value moved: each module's lossless rank is its full rank
    assert all(m.rank == min(m.shape) == m.changed for m in report.modules)
    assert report.max_output_difference <= 1e-4 < report.max_output_difference_without_bias
    diff = (_peft_logits(copy.deepcopy(base), out, batch) - ref).abs().max().item()
    assert diff <= 1e-4, diff
    written = json.loads((out / "export_report.json").read_text())
    assert written["max_output_difference"] == report.max_output_difference
    assert "lora_B.bias" in (out / "export_report.txt").read_text()


def test_minilm_truncation_error_is_reported_and_monotone(minilm_trained):
    vf, base, batch, ref, tmp = minilm_trained
    errors = []
    for r in (4, 32, 128):
        report = vf.save_as_lora(tmp / f"r{r}", rank=r, sample_inputs=batch if r == 32 else None)
        assert set(report.ranks.values()) == {r}
        errors.append(report.max_relative_error)
        if r == 32:
            measured = report.max_output_difference
    assert errors[0] > errors[1] > errors[2] > 0
    energies = [vf.save_as_lora(tmp / f"e{e}", energy=e) for e in (0.5, 0.9, 0.99)]
    assert [r.max_relative_error for r in energies] == sorted((r.max_relative_error for r in energies), reverse=True)
    for report, e in zip(energies, (0.5, 0.9, 0.99)):
        assert all(m.energy_kept >= e - 1e-9 for m in report.modules)
        assert report.max_relative_error <= (1 - e) ** 0.5 + 1e-6
    # what PEFT computes is what the report measured
    diff = (_peft_logits(copy.deepcopy(base), tmp / "r32", batch) - ref).abs().max().item()
    assert diff == pytest.approx(measured, rel=1e-3, abs=1e-5)


def test_gpt2_fused_c_attn_exports_under_its_own_name(tmp_path):
    from vf_backends_nlp.testing import tiny_causal_lm

    model = tiny_causal_lm("gpt2").eval()
    base = copy.deepcopy(model)
    vf = get_vectorfit_model(model, VectorFitConfig()).eval()
    _perturb(vf, 0.2)
    fused = [n for n in vf.decomposed_layers() if n.endswith("c_attn")]
    assert fused and len(vf.decomposed_layers()[fused[0]].parts) == 3
    batch = {"input_ids": torch.tensor([[2, 5, 9, 11, 7, 3], [2, 8, 8, 6, 4, 3]])}
    with torch.no_grad():
        ref = vf(**batch).logits
    report = vf.save_as_lora(tmp_path / "gpt2", sample_inputs=batch)
    config = json.loads((tmp_path / "gpt2" / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] is True and config["task_type"] == "CAUSAL_LM"
    assert set(fused) <= set(config["target_modules"])
    # the fused module's rank is the sum over q, k, v, capped by its shape
    c_attn = next(m for m in report.modules if m.name == fused[0])
    assert c_attn.shape == (96, 32) and c_attn.rank == 32 and c_attn.kind == "conv1d"
    assert report.max_output_difference <= 1e-4
    loaded = peft.PeftModel.from_pretrained(base, str(tmp_path / "gpt2")).eval()
    with torch.no_grad():
        assert (loaded(**batch).logits - ref).abs().max().item() <= 1e-4
        assert torch.equal(loaded.generate(**batch, max_new_tokens=4, do_sample=False),
                           vf.generate(**batch, max_new_tokens=4, do_sample=False))


class _Attention(torch.nn.Module):
    """A timm-style block: a fused ``qkv`` (blocked q, k, v rows) and ``proj``; ``head`` on top."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim, bias=False)
        self.head = torch.nn.Linear(dim, 3)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        att = torch.softmax(q @ k.mT / 4, -1)
        return self.head(self.proj(att @ v).mean(1))


@pytest.mark.parametrize("method", ["vectorfit", "svfit", "svft"])
def test_every_method_and_fused_qkv_load_in_peft(tmp_path, method):
    from vf_core.layers import DecomposedLayer, SliceSpec
    from vf_core.vectors import build_registry

    torch.manual_seed(0)
    model = _Attention().eval()
    base = copy.deepcopy(model)
    options = {"svfit": dict(rank=4), "svft": dict(pattern="banded", off_diagonals=1)}.get(method, {})
    vf = get_vectorfit_model(model, VectorFitConfig(method=method, target_modules=["qkv", "proj"],
                                                    modules_to_save=["head"], **options)).eval()
    # make qkv a fused layer of three role slices, as a family declaration would
    fused = DecomposedLayer.build(base.qkv, "qkv", [SliceSpec("q", 16), SliceSpec("k", 16), SliceSpec("v", 16)],
                                  options=vf.vectorfit_config)
    vf.model.qkv = fused
    vf.vectors = build_registry(vf.decomposed_layers(), {n: None for n in vf.decomposed_layers()})
    vf._init_adapters()  # the base values (disable_adapter) of the new layer's vectors
    _perturb(vf, 0.3)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        ref = vf(x)
    report = vf.save_as_lora(tmp_path / method, sample_inputs=(x,))
    assert report.max_relative_error < 1e-6 and report.max_output_difference <= 1e-5
    if method == "svfit":
        assert report.ranks["proj"] == 4 and report.ranks["qkv"] == 12
    if method == "svft":  # a banded M moves every singular direction it touches: full rank
        assert report.ranks["proj"] == 16
    loaded = peft.PeftModel.from_pretrained(base, str(tmp_path / method)).eval()
    with torch.no_grad():
        assert (loaded(x) - ref).abs().max().item() <= 1e-5


def test_bias_only_change_and_bad_options(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 4, bias=False), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    base = copy.deepcopy(net)
    vf = get_vectorfit_model(net, VectorFitConfig(target_modules=["0", "2"], add_missing_bias=True))
    with pytest.raises(ExportError, match="nothing to export"):
        vf.save_as_lora(tmp_path / "none")
    with torch.no_grad():
        vf.vectors["0.bias"].parameter += 0.3  # a bias the base layer does not have
    x = torch.randn(3, 6)
    with torch.no_grad():
        ref = vf(x)
    report = vf.save_as_lora(tmp_path / "bias", sample_inputs=x)
    assert report.ranks == {"0": 1} and report.unchanged == ["2"] and report.max_output_difference < 1e-6
    assert any("no bias of their own" in n for n in report.notes)
    with pytest.warns(UserWarning):  # PEFT: a LoRA bias on a layer without bias cannot be merged
        loaded = peft.PeftModel.from_pretrained(base, str(tmp_path / "bias"))
    with torch.no_grad():
        assert (loaded(x) - ref).abs().max().item() < 1e-6
    for kwargs in (dict(rank=2, energy=0.5), dict(rank=0), dict(energy=1.5), dict(energy=0.0)):
        with pytest.raises(ConfigError):
            vf.save_as_lora(tmp_path / "bad", **kwargs)


def test_uniform_rank_pads_exactly(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    base = copy.deepcopy(net)
    vf = get_vectorfit_model(net, VectorFitConfig(target_modules=["0", "1"], train_bias=False))
    with torch.no_grad():
        vf.vectors["0.sigma"].parameter[:3] *= 1.5
        vf.vectors["1.sigma"].parameter[:1] *= 0.5
    x = torch.randn(2, 8)
    varied = vf.save_as_lora(tmp_path / "varied")
    config = json.loads((tmp_path / "varied" / "adapter_config.json").read_text())
    assert varied.ranks == {"0": 3, "1": 1} and config["rank_pattern"] and config["lora_bias"] is False
    uniform = vf.save_as_lora(tmp_path / "uniform", uniform_rank=True, sample_inputs=x)
    config = json.loads((tmp_path / "uniform" / "adapter_config.json").read_text())
    assert uniform.ranks == {"0": 3, "1": 3} and config["r"] == 3 and not config["rank_pattern"]
    for d in ("varied", "uniform"):
        loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / d))
        with torch.no_grad():
            assert (loaded(x) - vf(x)).abs().max().item() < 1e-6


def test_diffusers_unet_and_pipeline_load_the_export(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from vf_backends_diffusion.testing import save_tiny_sd_pipeline

    folder = save_tiny_sd_pipeline(tmp_path / "sd")
    unet = diffusers.UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    # attention projections and 3x3 convolutions (PEFT's Conv2d LoRA: A a 3x3 convolution, B a 1x1 one)
    targets = r".*(attn1\.to_q|attn2\.to_k|attn2\.to_out\.0|resnets\.0\.conv1|conv_in)"
    vf = get_vectorfit_model(unet, VectorFitConfig(target_modules=targets)).eval()
    _perturb(vf, 0.2)
    inputs = {"sample": torch.randn(2, 4, 8, 8), "timestep": torch.tensor([3, 7]),
              "encoder_hidden_states": torch.randn(2, 5, 32)}
    with torch.no_grad():
        ref = vf(**inputs).sample
    report = vf.save_as_lora(tmp_path / "lora", sample_inputs=inputs)
    assert "pytorch_lora_weights.safetensors" in report.files and report.max_output_difference <= 1e-4
    assert {m.kind for m in report.modules} == {"linear", "conv2d"} and report.max_relative_error < 1e-6
    # the model's own loader (diffusers' key format: "unet.<module>.lora_A.weight", alpha == rank)
    base = diffusers.UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    base.load_lora_adapter(str(tmp_path / "lora"), prefix="unet", weight_name="pytorch_lora_weights.safetensors")
    with torch.no_grad():
        assert (base(**inputs).sample - ref).abs().max().item() <= 1e-4
    # a pipeline's load_lora_weights(directory) finds the same file by its default name
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder)
    pipe.load_lora_weights(str(tmp_path / "lora"))
    with torch.no_grad():
        assert (pipe.unet.eval()(**inputs).sample - ref).abs().max().item() <= 1e-4


def test_timm_vit_fused_qkv_through_its_family(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                              num_classes=3).eval()
    base = copy.deepcopy(model)
    vf = get_vectorfit_model(model, VectorFitConfig(modules_to_save=["head"])).eval()
    assert list(vf.decomposed_layers()["blocks.0.attn.qkv"].parts) == ["q", "k", "v"]
    _perturb(vf, 0.1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = vf(x)
    report = vf.save_as_lora(tmp_path / "vit", sample_inputs=x)
    assert report.ranks["blocks.0.attn.qkv"] == 192 and report.max_output_difference <= 1e-5
    loaded = peft.PeftModel.from_pretrained(base, str(tmp_path / "vit")).eval()
    with torch.no_grad():
        assert (loaded(x) - ref).abs().max().item() <= 1e-5
