"""End to end: the image-classification task through the ``vectorfit`` command, on a tiny random timm EfficientNet
and a tiny pixel CSV (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("timm")
pytest.importorskip("accelerate")

from vf_core import VectorFitModel  # noqa: E402
from vectorfit import main  # noqa: E402
from vectorfit_test_utils import write_pixels  # noqa: E402

MODEL = ["--model", "test_efficientnet", "--random-init", "--image-size", "16"]
COMMON = ["--batch-size", "16", "--eval-batch-size", "32", "--no-progress"]


@pytest.fixture(scope="session")
def pixels(tmp_path_factory) -> Path:
    """60 8x8 grayscale 'images' in 3 classes told apart by brightness, in mnist_5k.csv's layout."""
    return write_pixels(tmp_path_factory.mktemp("data") / "pixels.csv")


def _train(out: Path, data: Path, *extra) -> int:
    return main(["train", *MODEL, "--data", str(data), "--output", str(out), *COMMON, *extra])


@pytest.fixture(scope="module")
def runs(pixels, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vision-runs")
    assert _train(tmp / "full", pixels, "--method", "full", "--epochs", "1", "--no-plots") == 0
    assert _train(tmp / "vf", pixels, "--epochs", "2", "--lr", "2e-2", "--avf-t-i", "1", "--avf-t-f", "1",
                  "--avf-n-f", "2", "--avf-k", "2") == 0
    return tmp / "vf", tmp / "full"


def test_train_outputs(runs):
    out, full = runs
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("eval_accuracy", "trainable_params", "total_params", "train_seconds"):
        assert key in metrics
    assert metrics["engine"] == "accelerate" and len(metrics["epoch_history"]) == 2
    breakdown = metrics["trainable_breakdown"]
    assert breakdown["sigma"] > 0 and breakdown["bias"] == 0  # EfficientNet's 1x1 convolutions have no bias
    for name in ("training_strength.png", "weight_change_spectra.png", "leading_sv_change.png"):
        assert (out / "plots" / name).is_file()
    assert metrics["compared_with_full_run"] == str(full)
    assert [r["step"] for r in json.loads((out / "avf_history.json").read_text())["history"]] == [1, 2]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-2"]  # --save-total-limit 1


def test_adapter_loads_on_a_fresh_base(runs):
    from vf_backends_vision.models import load_image_classifier

    out, _ = runs
    torch.manual_seed(0)  # the run's seed: the same random base
    base, _ = load_image_classifier("test_efficientnet", num_classes=3, random_init=True)
    vf = VectorFitModel.from_pretrained(base, out / "adapter")
    assert len(vf.vectors) > 0


def test_evaluate_merge_inspect(runs, tmp_path, capsys, pixels):
    out, _ = runs
    assert main(["evaluate", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    trained = json.loads((out / "metrics.json").read_text())
    assert evaluated["eval_accuracy"] == pytest.approx(trained["eval_accuracy"])
    merged = tmp_path / "merged"
    assert main(["merge", str(out), "--output", str(merged)]) == 0
    capsys.readouterr()
    assert (merged / "vectorfit_timm.json").is_file()
    assert main(["evaluate", "--model", str(merged), "--data", str(pixels)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["eval_accuracy"] == pytest.approx(trained["eval_accuracy"])
    assert again["eval_loss"] == pytest.approx(evaluated["eval_loss"], rel=1e-4, abs=1e-5)
    assert main(["inspect", str(out / "adapter"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "timm-efficientnet" and info["roles"] == ["f1", "f2"]


@pytest.mark.parametrize("method", [["--method", "vectorfit", "--no-avf"], ["--method", "svft"],
                                    ["--method", "svfit", "--svfit-rank", "2"], ["--method", "bitfit"],
                                    ["--method", "lora", "--lora-r", "1"], ["--method", "adalora"]],
                         ids=["vectorfit", "svft", "svfit", "bitfit", "lora", "adalora"])
def test_each_method_one_step(method, pixels, tmp_path):
    if method[1] in ("lora", "adalora"):
        pytest.importorskip("peft")
    assert _train(tmp_path / "r", pixels, *method, "--max-steps", "1", "--no-plots", "--no-checkpoints") == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["train_steps"] == 1 and 0 < metrics["trainable_params"] < metrics["total_params"]


def test_resume(pixels, tmp_path):
    out = tmp_path / "res"
    assert _train(out, pixels, "--epochs", "1", "--no-plots", "--no-avf") == 0
    first = json.loads((out / "metrics.json").read_text())
    assert main(["train", "--output", str(out), "--resume", "--epochs", "2"]) == 0
    second = json.loads((out / "metrics.json").read_text())
    assert second["train_steps"] == 2 * first["train_steps"]
    assert second["resumed_from"].endswith("epoch-1")
    assert [h["epoch"] for h in second["epoch_history"]] == [1, 2]


def test_real_efficientnet_lite0_loads_and_is_recognised(capsys):
    from vf_core.assets import ASSETS, _target

    if not _target(ASSETS["efficientnet-lite0"]).exists():
        pytest.skip("efficientnet-lite0 weights are not cached in ~/.cache/vectorfit")
    assert main(["inspect", "efficientnet-lite0", "--num-labels", "10", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "timm-efficientnet" and info["class"] == "EfficientNet"
    assert info["methods"]["full"] == info["total_params"]
    assert info["methods"]["vectorfit"] < info["methods"]["lora r=1"] < info["methods"]["full"]


def test_bad_inputs(pixels, tmp_path, capsys):
    assert main(["train", "--model", "no_such_timm_model", "--data", str(pixels), "--output", str(tmp_path / "o")]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["train", "--model", "test_efficientnet", "--data", str(pixels), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3,4,x\n")
    assert main(["train", *MODEL, "--data", str(bad), "--output", str(tmp_path / "o")]) == 2
    assert "integer" in capsys.readouterr().err
    assert main(["train", *MODEL, "--data", str(pixels), "--output", str(tmp_path / "o"), "--task", "regression"]) == 2
    assert "regression" in capsys.readouterr().err


def test_checkpoint_file_for_a_timm_name(pixels, tmp_path):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False)
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    assert main(["train", "--model", "test_efficientnet", "--checkpoint", str(tmp_path / "weights.pth"),
                 "--image-size", "16", "--data", str(pixels), "--output", str(tmp_path / "c"), *COMMON,
                 "--max-steps", "1", "--no-plots", "--no-checkpoints"]) == 0


def test_a_non_finite_loss_stops_the_run(pixels, tmp_path, capsys):
    out = tmp_path / "nan"
    assert _train(out, pixels, "--method", "full", "--lr", "1e12", "--max-grad-norm", "0", "--epochs", "2",
                  "--no-plots") == 2
    err = capsys.readouterr().err
    assert "vectorfit: error: the training loss became" in err and "Lower --lr" in err
    assert not (out / "metrics.json").exists()
