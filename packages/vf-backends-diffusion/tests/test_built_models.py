"""The families on denoisers built the way diffusers pipelines build them: saved by vf_backends_diffusion.testing,
loaded back with ``from_pretrained`` (a Stable Diffusion pipeline's UNet, a DiT, a PixArt-style Transformer2DModel,
DDPM UNets with and without class labels and attention), then decomposed with no module names."""

from __future__ import annotations

import pytest
import torch

from vf_core import VectorFitConfig, get_vectorfit_model
from vf_core.plugins import list_families
from vf_core.testing import block_of, output_tensor

from vf_backends_diffusion import testing

diffusers = pytest.importorskip("diffusers")


def _randn(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def check_decomposed(model, family_name: str, kwargs: dict, roles=None):
    """``get_vectorfit_model(model, VectorFitConfig())`` picks ``family_name``, has a vector for every declared role
    (or ``roles``), computes the base outputs at initialisation (float32, atol 1e-5) and a backward pass gives
    every singular-value vector a non-zero gradient."""
    with torch.no_grad():
        reference = output_tensor(model(**kwargs))
    vf = get_vectorfit_model(model, VectorFitConfig())
    family = list_families()[family_name]
    assert vf.family is not None and vf.family.name == family_name
    sigmas = list(vf.vectors.select(kind="sigma"))
    assert {v.role for v in sigmas} == set(roles or family.declared_roles)
    assert all(block_of(family, v.module) is not None for v in sigmas)
    vf.eval()
    with torch.no_grad():
        dense = output_tensor(vf(**kwargs))
    torch.testing.assert_close(dense, reference, atol=1e-5, rtol=0)
    factored = output_tensor(vf(**kwargs))  # grad enabled: U (s * (V^T x))
    torch.testing.assert_close(factored.detach(), reference, atol=1e-5, rtol=0)
    (factored * _randn(*factored.shape)).sum().backward()
    dead = [v.name for v in sigmas if v.parameter.grad is None or not v.parameter.grad.abs().sum() > 0]
    assert not dead, f"no gradient reaches {dead}"
    return vf


@pytest.fixture(scope="module")
def sd_pipeline(tmp_path_factory):
    pytest.importorskip("transformers")  # the pipeline's CLIP text encoder and tokenizer
    path = testing.save_tiny_sd_pipeline(tmp_path_factory.mktemp("sd"))
    return diffusers.StableDiffusionPipeline.from_pretrained(path)


def test_tiny_sd_pipeline_loads_offline_and_samples(sd_pipeline):
    assert sd_pipeline.safety_checker is None and sd_pipeline.scheduler.config.num_train_timesteps == 100
    images = sd_pipeline("a photo", num_inference_steps=2, output_type="np", height=16, width=16,
                         generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 16, 16, 3) and (images >= 0).all() and (images <= 1).all()


def test_sd_pipeline_unet_is_unet2d_condition(sd_pipeline):
    tokens = sd_pipeline.tokenizer(["a photo of sks dog", "a photo"], padding="max_length", return_tensors="pt",
                                   max_length=sd_pipeline.tokenizer.model_max_length)
    with torch.no_grad():
        text = sd_pipeline.text_encoder(tokens.input_ids)[0]
    check_decomposed(sd_pipeline.unet, "unet2d-condition",
                     {"sample": _randn(2, 4, 8, 8), "timestep": torch.tensor([3, 90]), "encoder_hidden_states": text})


@pytest.mark.parametrize("class_conditional", [False, True], ids=["unconditional", "class-conditional"])
@pytest.mark.parametrize("attention", [False, True], ids=["resnets", "attention"])
def test_saved_unet2d_is_unet2d(tmp_path, class_conditional, attention):
    path = testing.save_tiny_unet2d(tmp_path, class_conditional=class_conditional, attention=attention)
    unet = diffusers.UNet2DModel.from_pretrained(path)
    assert diffusers.DDPMScheduler.from_pretrained(path).config.num_train_timesteps == testing.TINY_TIMESTEPS
    kwargs = {"sample": _randn(2, 1, 8, 8), "timestep": torch.tensor([3, 90])}
    if class_conditional:
        kwargs["class_labels"] = torch.tensor([0, 9])
    check_decomposed(unet, "unet2d", kwargs, roles=None if attention else {"f1", "f2"})


def test_saved_unconditional_unet2d_runs_in_ddpm_pipeline(tmp_path):
    path = testing.save_tiny_unet2d(tmp_path, class_conditional=False, attention=True, channels=3)
    pipe = diffusers.DDPMPipeline(unet=diffusers.UNet2DModel.from_pretrained(path),
                                  scheduler=diffusers.DDPMScheduler.from_pretrained(path))
    images = pipe(batch_size=1, num_inference_steps=2, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 8, 8, 3)


def test_saved_dit_is_dit(tmp_path):
    dit = diffusers.DiTTransformer2DModel.from_pretrained(testing.save_tiny_dit(tmp_path))
    assert dit.config.in_channels == dit.config.out_channels == 3
    check_decomposed(dit, "dit", {"hidden_states": _randn(2, 3, 8, 8), "timestep": torch.tensor([3, 90]),
                                  "class_labels": torch.tensor([0, 9])})


def test_saved_pixel_transformer2d_loads_as_pixart_and_is_transformer2d(tmp_path):
    model = diffusers.Transformer2DModel.from_pretrained(testing.save_tiny_transformer2d(tmp_path))
    assert type(model).__name__ == "PixArtTransformer2DModel"  # diffusers' replacement for ada_norm_single
    check_decomposed(model, "transformer2d", {"hidden_states": _randn(2, 3, 8, 8), "timestep": torch.tensor([3, 90]),
                                              "added_cond_kwargs": {"resolution": None, "aspect_ratio": None}})


def test_builders_are_seeded_and_leave_the_global_random_state_alone():
    before = torch.random.get_rng_state()
    first = testing.tiny_unet2d(class_conditional=True, attention=False)
    second = testing.tiny_unet2d(class_conditional=True, attention=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_tiny_tokenizer_knows_prompt_words_whole():
    pytest.importorskip("transformers")
    tokenizer = testing.tiny_clip_tokenizer()
    assert tokenizer.tokenize("A photo of sks dog") == ["a</w>", "photo</w>", "of</w>", "sks</w>", "dog</w>"]
    ids = tokenizer("a photo", padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert ids[0] == tokenizer.bos_token_id and len(ids) == 16 and len(tokenizer) < 128


def test_old_checkpoint_attention_names_are_renamed_by_diffusers_on_load(tmp_path):
    """Very old DDPM checkpoints name the attention query/key/value/proj_attn; diffusers renames them to
    to_q/to_k/to_v/to_out.0 when it loads a (non-sharded) checkpoint, so the family needs no second set of names."""
    from safetensors.torch import load_file, save_file

    path = testing.save_tiny_unet2d(tmp_path, class_conditional=False, attention=True)
    weights = path / "diffusion_pytorch_model.safetensors"
    new_to_old = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    state = load_file(weights)
    old = {}
    for name, tensor in state.items():
        for new, legacy in new_to_old.items():
            name = name.replace(new, legacy) if ".attentions." in name else name
        old[name] = tensor
    assert any(".proj_attn." in n for n in old)
    save_file(old, weights)
    unet = diffusers.UNet2DModel.from_pretrained(path)
    assert all(torch.equal(unet.state_dict()[n], t) for n, t in state.items())
    check_decomposed(unet, "unet2d", {"sample": _randn(2, 1, 8, 8), "timestep": torch.tensor([3, 90])})
