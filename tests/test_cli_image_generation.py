"""End to end: the ``image-generation`` task through the ``vectorfit`` command (train with every method, DreamBooth
prior preservation, --resume, evaluate, generate, merge), on tiny diffusers models built from configs: a DDPM
``UNet2DModel`` (unconditional and class-conditional), a DiT, and a tiny Stable Diffusion pipeline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from vf_backends_diffusion.testing import (  # noqa: E402
    save_tiny_dit,
    save_tiny_sd_pipeline,
    save_tiny_unet2d,
)

from vf_core.errors import DataWarning  # noqa: E402

from vectorfit import main  # noqa: E402

FAST = ["--batch-size", "4", "--no-progress", "--logging-steps", "1", "--sample-steps", "2", "--num-samples", "2"]
#: the minimum always; the other methods are marked slow (deselect with -m 'not slow')
METHODS = ["vectorfit", "full", "lora", *(pytest.param(m, marks=pytest.mark.slow) for m in ("svfit", "svft", "bitfit"))]


def _png(path: Path, size=(8, 8), mode="RGB", value=128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (size[1], size[0]) if channels is None else (size[1], size[0], channels)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).convert(mode).save(path)
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("gen")
    flat = d / "flat"
    for i in range(10):
        _png(flat / f"img{i}.png", size=(8, 8) if i % 3 else (12, 10), mode="L" if i % 2 else "RGB")
    (flat / "bad.png").write_bytes(b"not an image")
    (flat / "notes.md").write_text("ignored")
    classes = d / "classes"
    for c in ("3", "9"):
        for i in range(6):
            _png(classes / c / f"{c}_{i}.png", mode="L")
    return {
        "uncond": save_tiny_unet2d(d / "uncond", class_conditional=False, attention=True),
        "cond": save_tiny_unet2d(d / "cond", class_conditional=True, attention=False),
        "dit": save_tiny_dit(d / "dit", channels=1),
        "sd": save_tiny_sd_pipeline(d / "sd"),
        "flat": flat,
        "classes": classes,
        "instance": _instance(d / "instance"),
    }


def _instance(folder: Path) -> Path:
    for i in range(3):
        _png(folder / f"dog{i}.png", size=(16, 16))
    return folder


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VECTORFIT_CACHE", str(tmp_path / "cache"))


def _train(out: Path, model, data, *extra) -> dict:
    code = main(["train", "--task", "image-generation", "--model", str(model), "--data", str(data),
                 "--output", str(out), *FAST, *extra])
    assert code == 0
    return json.loads((out / "metrics.json").read_text())


def _error(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("vectorfit: error:"), err
    return err[-1]


def test_unconditional_folder_trains_evaluates_and_says_what_it_skipped(assets, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.warns(DataWarning) as said:
        metrics = _train(out, assets["uncond"], assets["flat"], "--max-steps", "4", "--eval-steps", "2")
    lines = [str(w.message) for w in said]
    assert any("skipped 1 unreadable" in line and "bad.png" in line for line in lines), lines
    assert any("resized 4 images" in line for line in lines) and any("to 1 channel" in line for line in lines)
    assert math.isfinite(metrics["eval_loss"]) and metrics["primary_metric"] == "eval_loss"
    assert [h["step"] for h in metrics["eval_history"]] == [2, 4]
    assert (out / "plots" / "samples-step-2.png").is_file() and (out / "plots" / "samples-step-4.png").is_file()
    assert metrics["trainable_params"] < metrics["total_params"] / 10
    # the held-out loss is reproducible: fixed timesteps and noise
    for _ in range(2):
        assert main(["evaluate", str(out), "--output", str(tmp_path / "ev.json")]) == 0
        again = json.loads((tmp_path / "ev.json").read_text())
        assert again["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_the_class_conditional_unet(assets, tmp_path, method):
    out = tmp_path / method
    extra = ["--svfit-rank", "4"] if method == "svfit" else []  # the tiny UNet's convs have 8 singular values
    metrics = _train(out, assets["cond"], assets["classes"], "--method", method, "--max-steps", "2", "--no-plots",
                     *extra)
    assert math.isfinite(metrics["eval_loss"]) and metrics["method"] == method
    assert (out / ("model" if method == "full" else "adapter")).is_dir()
    if method == "full":
        import diffusers

        diffusers.UNet2DModel.from_pretrained(out / "model")


def test_dreambooth_prior_preservation_generates_the_prior_once(assets, tmp_path, capsys):
    args = ["--max-steps", "2", "--classes", "9", "--prior-weight", "1.0", "--num-class-images", "4", "--no-plots"]
    first = _train(tmp_path / "a", assets["cond"], assets["classes"], *args)
    assert "generating 4 prior-preservation images of classes [0, 1, 2, 3, 4, 5, 6, 7, 8]" in capsys.readouterr().err
    assert len(list((tmp_path / "cache" / "diffusion-priors").glob("*.pt"))) == 1
    _train(tmp_path / "b", assets["cond"], assets["classes"], *args)
    assert "generating" not in capsys.readouterr().err  # read from the cache
    info = json.loads((tmp_path / "a" / "run.json").read_text())
    assert info["prior_images"] == 4 and info["training_conditions"] == "classes [9]"
    assert math.isfinite(first["eval_loss"])


def test_resume_continues_bit_identically(assets, tmp_path):
    common = ["--method", "vectorfit", "--no-avf", "--scheduler", "constant", "--eval-steps", "2", "--no-plots",
              "--max-steps", "4"]
    _train(tmp_path / "straight", assets["cond"], assets["classes"], *common)
    part = tmp_path / "parts"
    _train(part, assets["cond"], assets["classes"], *common[:-1], "2")
    (part / "metrics.json").unlink()
    assert main(["train", "--task", "image-generation", "--model", str(assets["cond"]), "--data",
                 str(assets["classes"]), "--output", str(part), *FAST, *common, "--resume", "--overwrite"]) == 0
    a = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    b = load_file(part / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_generate_from_run_and_merged_model_agree(assets, tmp_path, capsys):
    run = tmp_path / "run"
    _train(run, assets["cond"], assets["classes"], "--max-steps", "3", "--no-plots")
    gen = ["--num-images", "3", "--class", "9", "--steps", "3", "--seed", "5"]
    assert main(["generate", str(run), *gen, "--output", str(tmp_path / "g1")]) == 0
    assert sorted(p.name for p in (tmp_path / "g1").iterdir()) == ["0.png", "1.png", "2.png", "grid.png"]
    assert main(["generate", str(run), *gen, "--output", str(tmp_path / "g2")]) == 0
    assert (tmp_path / "g1" / "1.png").read_bytes() == (tmp_path / "g2" / "1.png").read_bytes()  # same seed
    merged = tmp_path / "merged"
    assert main(["merge", str(run), "--output", str(merged)]) == 0
    import diffusers

    diffusers.UNet2DModel.from_pretrained(merged)
    diffusers.DDPMScheduler.from_pretrained(merged)
    assert main(["generate", str(merged), *gen, "--output", str(tmp_path / "g3")]) == 0
    for i in range(3):
        x = np.asarray(Image.open(tmp_path / "g1" / f"{i}.png"), dtype=np.int16)
        y = np.asarray(Image.open(tmp_path / "g3" / f"{i}.png"), dtype=np.int16)
        assert np.abs(x - y).max() <= 2
    # nothing is written over
    msg = _error(capsys, "generate", str(run), *gen, "--output", str(tmp_path / "g1"))
    assert "already holds PNG" in msg


def test_dit_trains_on_classes(assets, tmp_path):
    metrics = _train(tmp_path / "dit", assets["dit"], assets["classes"], "--max-steps", "2", "--no-plots")
    assert math.isfinite(metrics["eval_loss"])


def test_stable_diffusion_dreambooth_latents_text_prior_and_merge(assets, tmp_path):
    run = tmp_path / "sd"
    metrics = _train(run, assets["sd"], assets["instance"], "--instance-prompt", "a photo of sks dog",
                     "--class-prompt", "a photo of dog", "--prior-weight", "1.0", "--num-class-images", "2",
                     "--max-steps", "2", "--eval-steps", "2")
    assert math.isfinite(metrics["eval_loss"])
    info = json.loads((run / "run.json").read_text())
    assert info["latent"] is True and info["conditioning"] == "text"
    assert (run / "plots" / "samples-step-2.png").is_file()
    assert main(["generate", str(run), "--prompt", "a photo of sks dog", "--num-images", "2", "--steps", "2",
                 "--output", str(tmp_path / "imgs")]) == 0
    assert Image.open(tmp_path / "imgs" / "0.png").size == (16, 16)
    merged = tmp_path / "merged"
    assert main(["merge", str(run), "--output", str(merged)]) == 0
    import diffusers

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(merged)
    images = pipe("a photo", num_inference_steps=2, output_type="np", height=16, width=16).images
    assert images.shape == (1, 16, 16, 3)


def test_bad_inputs_get_one_line_and_write_nothing(assets, tmp_path, capsys):
    vae_dir = tmp_path / "vae"
    (vae_dir).mkdir()
    (vae_dir / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    msg = _error(capsys, "train", "--task", "image-generation", "--model", str(vae_dir), "--data",
                 str(assets["flat"]), "--output", str(tmp_path / "x"))
    assert "AutoencoderKL, not a denoiser" in msg
    msg = _error(capsys, "train", "--task", "image-generation", "--model", str(assets["uncond"]), "--data",
                 str(assets["flat"]), "--instance-prompt", "a dog", "--output", str(tmp_path / "y"))
    assert "unconditional" in msg and "--instance-prompt" in msg
    msg = _error(capsys, "train", "--task", "image-generation", "--model", str(assets["cond"]), "--data",
                 str(assets["classes"]), "--instance-class", "12", "--output", str(tmp_path / "z"))
    assert "12" in msg and "10 classes" in msg
    for name in ("x", "y", "z"):
        assert not (tmp_path / name).exists()
    run = tmp_path / "run"
    _train(run, assets["cond"], assets["classes"], "--max-steps", "1", "--no-plots")
    msg = _error(capsys, "generate", str(run), "--class", "10", "--output", str(tmp_path / "g"))
    assert "10 classes" in msg
    msg = _error(capsys, "generate", str(run), "--prompt", "a nine", "--output", str(tmp_path / "g"))
    assert "class-conditional" in msg and "--class" in msg
    assert not (tmp_path / "g").exists()


def test_a_hub_id_in_the_local_cache_trains_offline(assets, tmp_path, monkeypatch, capsys):
    from vf_core.testing.hub_cache import lay_out_hub_cache

    hub = tmp_path / "hub"
    lay_out_hub_cache(assets["cond"], hub, "toy/tiny-ddpm")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metrics = main(["train", "--model", "toy/tiny-ddpm", "--data", str(assets["classes"]), "--output",
                    str(tmp_path / "run"), *FAST, "--max-steps", "1", "--no-plots"])
    assert metrics == 0
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["task_name"] == "image-generation"
