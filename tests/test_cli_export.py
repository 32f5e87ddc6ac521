"""``vectorfit export RUN_DIR --format peft-lora``: a trained run's adapter written as a PEFT LoRA adapter that
``PeftModel.from_pretrained`` loads with the run's outputs; one ``vectorfit: error:`` line for bad input."""

from __future__ import annotations

import json

import pytest
import torch

from vectorfit import main
from vectorfit.methods import restore_trained

peft = pytest.importorskip("peft")

from test_cli import BASE, FakeRunner, _data, fake_backend  # noqa: E402,F401  (the throwaway task and its fixture)

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture
def run_dir(fake_backend, tmp_path):  # noqa: F811
    out = tmp_path / "vf"
    assert main([*BASE, "--output", str(out)]) == 0
    return out


def test_export_loads_in_peft_with_the_runs_outputs(run_dir, tmp_path, capsys):
    out = tmp_path / "lora"
    capsys.readouterr()
    assert main(["export", str(run_dir), "--format", "peft-lora", "--output", str(out)]) == 0
    assert "PEFT LoRA export (lossless)" in capsys.readouterr().out
    assert {"adapter_config.json", "adapter_model.safetensors", "export_report.json"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["head"] and config["base_model_name_or_path"] == "tiny"
    x, _ = _data()
    with torch.no_grad():
        trained = restore_trained(FakeRunner().load_model("tiny"), "vectorfit", run_dir / "adapter")
        loaded = peft.PeftModel.from_pretrained(FakeRunner().load_model("tiny"), str(out))
        assert (loaded(x) - trained(x)).abs().max().item() <= 1e-5

    truncated = tmp_path / "r2"
    assert main(["export", str(run_dir), "--rank", "2", "--output", str(truncated), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "rank=2" and {m["rank"] for m in report["modules"]} == {2}
    assert report["max_relative_error"] > 0


@pytest.mark.parametrize("extra, message", [
    (["--rank", "2", "--energy", "0.9"], "give --rank or --energy, not both"),
    (["--energy", "1.5"], "--energy must be a share in (0, 1]"),
    (["--energy", "0"], "--energy must be a share in (0, 1]"),
    (["--format", "gguf"], "unknown --format 'gguf'"),
])
def test_bad_options_give_one_error_line(tmp_path, capsys, extra, message):
    # options are checked before the run is opened
    assert main(["export", str(tmp_path / "run"), "--output", str(tmp_path / "x"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vectorfit: error:") and message in err[0]
    assert not (tmp_path / "x").exists()


def test_not_a_run_and_non_empty_output_are_refused(run_dir, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "file").write_text("x")
    capsys.readouterr()
    assert main(["export", str(run_dir), "--output", str(busy)]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--output", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a run directory" in err[0]
