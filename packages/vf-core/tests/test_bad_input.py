"""Bad input gets a typed error that names the problem, and the user's model and files are left as they were."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from vf_core import (
    AdapterFormatError,
    ConfigError,
    DecomposedLayer,
    NonFiniteWeightError,
    TiedWeightError,
    VectorFitConfig,
    VectorFitError,
    VectorFitModel,
    get_vectorfit_model,
)

from vf_core_test_utils import TINY_ROLES, TinyNet, assert_untouched, snapshot


def test_svfit_rank_larger_than_matrix_names_rank_and_module(tiny_net):
    snap = snapshot(tiny_net)
    with pytest.raises(ConfigError, match=r"rank=9 .*'blocks\.0\.q'") as info:
        get_vectorfit_model(tiny_net, VectorFitConfig(method="svfit", rank=9, target_modules=TINY_ROLES))
    assert info.value.fields == ("rank",)
    assert_untouched(tiny_net, snap)


def test_non_finite_weight_names_the_module_and_changes_nothing(tiny_net):
    with torch.no_grad():
        tiny_net.blocks[1].down.weight[0, 0] = float("nan")
    snap = snapshot(tiny_net)
    with pytest.raises(NonFiniteWeightError, match="blocks.1.down"):
        get_vectorfit_model(tiny_net, VectorFitConfig(target_modules=TINY_ROLES))
    assert_untouched(tiny_net, snap)


def test_failure_half_way_through_decomposition_leaves_model_as_it_was(tiny_net, monkeypatch):
    from vf_core.layers import layer as layer_module

    calls = {"n": 0}
    real = layer_module.decompose

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise RuntimeError("simulated failure in the 7th SVD")
        return real(*args, **kwargs)

    monkeypatch.setattr(layer_module, "decompose", flaky)
    snap = snapshot(tiny_net)
    with pytest.raises(RuntimeError, match="7th SVD"):
        get_vectorfit_model(tiny_net, VectorFitConfig(target_modules=TINY_ROLES))
    assert_untouched(tiny_net, snap)


def test_tied_weights_are_never_decomposed_silently():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 6)
            self.proj = nn.Linear(6, 6)
            self.lm_head = nn.Linear(6, 10, bias=False)
            self.lm_head.weight = self.embed.weight

        def forward(self, ids):
            return self.lm_head(self.proj(self.embed(ids)))

    model = Tied()
    snap = snapshot(model)
    with pytest.raises(TiedWeightError, match="lm_head.*embed.weight"):
        get_vectorfit_model(model, VectorFitConfig(target_modules=["proj", "lm_head"]))
    assert_untouched(model, snap)
    assert model.lm_head.weight is model.embed.weight
    vf = get_vectorfit_model(model, VectorFitConfig(target_modules=["proj", "lm_head"], decompose_tied=True))
    assert isinstance(vf.get_base_model().lm_head, DecomposedLayer)


@pytest.mark.parametrize("dtype, atol", [(torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
def test_half_precision_bases_decompose_in_float32_and_stay_exact_to_their_precision(dtype, atol):
    torch.manual_seed(0)
    net = TinyNet().to(dtype)
    x = torch.randn(2, 5, 8).to(dtype)
    with torch.no_grad():
        ref = net(x).float()
    vf = get_vectorfit_model(net, VectorFitConfig(target_modules=TINY_ROLES)).eval()
    assert all(v.parameter.dtype == dtype for v in vf.vectors)
    with torch.no_grad():
        out = vf(x).float()
    assert (out - ref).abs().max().item() <= atol
    merged = vf.merge_and_unload()
    assert merged.blocks[0].q.weight.dtype == dtype
    with torch.no_grad():
        assert (merged(x).float() - ref).abs().max().item() <= atol


def test_already_wrapped_model_is_refused(tiny_net):
    vf = get_vectorfit_model(tiny_net, VectorFitConfig(target_modules=TINY_ROLES))
    with pytest.raises(VectorFitError, match="already holds VectorFit layers"):
        get_vectorfit_model(vf.get_base_model(), VectorFitConfig(target_modules=TINY_ROLES))


# ------------------------------------------------------------------------------------------------ adapters
@pytest.fixture
def saved(tiny_net, tmp_path):
    base = copy.deepcopy(tiny_net)
    vf = get_vectorfit_model(tiny_net, VectorFitConfig(target_modules=TINY_ROLES))
    vf.save_pretrained(tmp_path)
    return base, tmp_path


def test_future_format_version_is_refused(saved):
    base, path = saved
    meta = json.loads((path / "adapter_config.json").read_text())
    meta["format_version"] = 99
    (path / "adapter_config.json").write_text(json.dumps(meta))
    snap = snapshot(base)
    with pytest.raises(AdapterFormatError, match="format_version 99.*upgrade"):
        VectorFitModel.from_pretrained(base, path)
    assert_untouched(base, snap)


def test_pickle_is_refused_never_unpickled(saved, monkeypatch):
    base, path = saved
    (path / "adapter_model.safetensors").unlink()
    torch.save({"x": torch.ones(1)}, path / "adapter_model.bin")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must not be called"))
    import pickle

    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("pickle.load must not be called"))
    with pytest.raises(AdapterFormatError, match="pickle"):
        VectorFitModel.from_pretrained(base, path)


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "bad_json", "missing_config", "wrong_format"])
def test_damaged_adapters(saved, damage):
    base, path = saved
    weights, config = path / "adapter_model.safetensors", path / "adapter_config.json"
    if damage == "missing":
        weights.unlink()
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "garbage":
        weights.write_bytes(b"\x00" * 64)
    elif damage == "bad_json":
        config.write_text("{not json")
    elif damage == "missing_config":
        config.unlink()
    else:
        config.write_text(json.dumps({"format": "something-else"}))
    snap = snapshot(base)
    with pytest.raises(AdapterFormatError):
        VectorFitModel.from_pretrained(base, path)
    assert_untouched(base, snap)


def test_interrupted_save_keeps_the_previous_adapter(tiny_net, tiny_input, tmp_path, monkeypatch):
    vf = get_vectorfit_model(tiny_net, VectorFitConfig(target_modules=TINY_ROLES))
    vf.save_pretrained(tmp_path)
    good = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with torch.no_grad():
        vf.vectors["blocks.0.q.sigma"].parameter.mul_(2)
    import safetensors.torch

    from vf_core.svd import wait_for_cache_writes

    wait_for_cache_writes()  # the SVD cache's background writes use save_file too: let them finish first

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"half a file")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        vf.save_pretrained(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == good  # no temp files left either
