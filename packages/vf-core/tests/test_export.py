"""``vf_core.export`` without PEFT: the factors, truncation, the written files, the report's own output check, and what
is left out (3-D experts). The PEFT and diffusers round trips are in the repository's ``tests/test_export_lora.py``."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from vf_core import ExportError, VectorFitConfig, get_vectorfit_model
from vf_core.export.lowrank import factor, rank_for_energy


def _perturb(vf, scale: float = 0.1, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for v in vf.vectors:
            noise = torch.randn(v.parameter.shape, generator=g)
            v.parameter.add_(noise * scale * (v.parameter.abs() if v.kind == "sigma" else 1.0))


def test_general_and_orthogonal_factoring_agree():
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(12, 5, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(9, 5, generator=g, dtype=torch.float64))
    d = torch.tensor([0.3, -2.0, 0.0001, 1.1, -0.7], dtype=torch.float64)
    fast, slow = factor(u * d, v.mT, orthogonal=True), factor(u * d, v.mT)
    assert torch.allclose(fast.spectrum, slow.spectrum) and torch.allclose(fast.spectrum, d.abs().sort(descending=True).values)
    for r in (1, 3, 5):
        a, b = factor(u * d, v.mT, rank=r, orthogonal=True), factor(u * d, v.mT, rank=r)
        assert torch.allclose(a.b @ a.a, b.b @ b.a) and a.relative_error() == pytest.approx(b.relative_error())
    assert rank_for_energy(fast.spectrum, 1.0) == 5 and rank_for_energy(fast.spectrum, 0.5) == 1


class _Experts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.randn(3, 8, 6) / 3)

    def forward(self, x):
        return sum(x @ self.gate_up_proj[e].mT for e in range(3))[..., :6]


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(6, 6)
        self.experts = _Experts()
        self.head = nn.Linear(6, 2)

    def forward(self, image, x):
        return self.head(self.experts(self.fc(x))) + self.conv(image).mean((1, 2, 3))[:, None]


def test_written_files_report_and_what_is_left_out(tmp_path):
    torch.manual_seed(0)
    vf = get_vectorfit_model(_Net(), VectorFitConfig(
        target_modules={"f1": ["fc", "conv", "gate_up_proj"]}, modules_to_save=["head"]))
    _perturb(vf)
    with torch.no_grad():
        vf.head.weight.add_(0.5)
    inputs = {"image": torch.randn(2, 2, 5, 5), "x": torch.randn(2, 6)}
    with pytest.warns(UserWarning, match="3-D expert"):
        report = vf.save_as_lora(tmp_path / "out", sample_inputs=inputs)
    assert set(report.ranks) == {"fc", "conv"} and any("gate_up_proj" in k for k in report.not_exported)
    # the experts' change is missing from the LoRA adapter, so the outputs differ; without it they agree
    assert report.max_output_difference > 1e-3
    tensors = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    assert tensors["base_model.model.conv.lora_A.weight"].shape == (report.ranks["conv"], 2, 3, 3)
    assert tensors["base_model.model.conv.lora_B.weight"].shape == (4, report.ranks["conv"], 1, 1)
    assert torch.equal(tensors["base_model.model.head.weight"], vf.head.weight.detach())
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config["target_modules"] == ["conv", "fc"] and config["lora_alpha"] == config["r"]
    assert config["modules_to_save"] == ["head"] and config["lora_bias"] is True
    text = (tmp_path / "out" / "export_report.txt").read_text()
    assert "not exported" in text and "modules_to_save" in text


def test_exact_without_experts_and_name_collisions(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 5), nn.Sequential(nn.Linear(5, 5), nn.Linear(5, 3)))
    vf = get_vectorfit_model(net, VectorFitConfig(target_modules=["0", "1.0", "1.1"]))
    _perturb(vf)
    x = torch.randn(4, 5)
    report = vf.save_as_lora(tmp_path / "seq", sample_inputs=x)
    assert report.max_output_difference < 1e-5 and report.max_relative_error < 1e-6
    config = json.loads((tmp_path / "seq" / "adapter_config.json").read_text())
    # "0" would also match "1.0" by PEFT's suffix rule: the names become one exact regex
    assert isinstance(config["target_modules"], str)
    import re

    names = [n for n, _ in net.named_modules()]
    assert sorted(n for n in names if re.fullmatch(config["target_modules"], n)) == ["0", "1.0", "1.1"]


def test_errors(tmp_path):
    vf = get_vectorfit_model(nn.Sequential(nn.Linear(4, 4)), target_modules=["0"])
    with pytest.raises(ExportError, match="nothing to export"):
        vf.save_as_lora(tmp_path / "a")
    dilated = get_vectorfit_model(nn.Sequential(nn.Conv2d(2, 2, 3, dilation=2)), target_modules=["0"])
    _perturb(dilated)
    with pytest.raises(ExportError, match="dilated"):
        dilated.save_as_lora(tmp_path / "b")
