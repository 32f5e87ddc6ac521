"""The model API: targeting, freezing, the vector registry, counting, saving, loading and merging."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from vf_core import (
    AdapterFormatError,
    AdapterMismatchError,
    DecomposedLayer,
    TargetError,
    UnknownFamilyError,
    UnsupportedLayerError,
    VectorFitConfig,
    VectorFitModel,
    get_vectorfit_model,
)

from vf_core_test_utils import TINY_ROLES, TinyNet


def _vf(net, **kw):
    return get_vectorfit_model(net, VectorFitConfig(target_modules=TINY_ROLES, modules_to_save=["head"], **kw))


def _train_a_bit(vf, x, steps=3):
    opt = torch.optim.AdamW([p for p in vf.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        vf(x).pow(2).sum().backward()
        opt.step()


def test_registry_fields_and_freezing(tiny_net, tiny_input):
    ref = tiny_net(tiny_input)
    vf = _vf(tiny_net)
    torch.testing.assert_close(vf(tiny_input), ref, atol=1e-5, rtol=1e-5)
    assert len(vf.vectors) == 2 * 6 * 2
    v = vf.vectors["blocks.1.up.sigma"]
    assert (v.layer, v.role, v.kind, v.module) == (1, "f1", "sigma", "blocks.1.up")
    assert v.strength() == 0.0 and torch.equal(v.initial, v.parameter.detach())
    trainable = {n for n, p in vf.named_parameters() if p.requires_grad}
    assert all(".parts." in n or n.startswith("model.head.") for n in trainable)
    assert len(trainable) == len(vf.vectors) + 2
    counts = vf.trainable_parameter_counts()
    assert counts["sigma"] == 2 * (4 * 8 + 8 + 8) and counts["bias"] == 2 * (4 * 8 + 12 + 8)
    assert counts["head"] == 8 * 3 + 3 and counts["other"] == 0


def test_strength_is_mean_absolute_change(tiny_net):
    vf = _vf(tiny_net)
    v = vf.vectors["blocks.0.q.bias"]
    with torch.no_grad():
        v.parameter.add_(torch.tensor([0.5, -0.5, 0, 0, 0, 0, 0, 1.0]))
    assert v.strength() == pytest.approx(2.0 / 8)


def test_roles_and_kinds_select(tiny_net):
    vf = _vf(tiny_net, roles=["q", "v"], train_bias=False)
    assert {(v.role, v.kind) for v in vf.vectors} == {("q", "sigma"), ("v", "sigma")}
    assert not isinstance(vf.get_base_model().blocks[0].o, DecomposedLayer)


def test_regex_and_suffix_targets(tiny_net):
    vf = get_vectorfit_model(copy.deepcopy(tiny_net), VectorFitConfig(target_modules=r"blocks\.0\.(q|v)"))
    assert sorted(vf.decomposed_layers()) == ["blocks.0.q", "blocks.0.v"]
    vf = get_vectorfit_model(copy.deepcopy(tiny_net), VectorFitConfig(target_modules=["0.q", "down"]))
    assert sorted(vf.decomposed_layers()) == ["blocks.0.down", "blocks.0.q", "blocks.1.down"]
    assert {v.role for v in vf.vectors} == {None}


def test_print_trainable_parameters(tiny_net, capsys):
    vf = _vf(tiny_net)
    line = vf.print_trainable_parameters()
    assert "96 singular values + 104 bias entries + 27 head parameters" in line
    total = sum(p.numel() for p in TinyNet().parameters())
    assert f"all params: {total:,}" in capsys.readouterr().out


def test_save_load_round_trip(tiny_net, tiny_input, tmp_path):
    base = copy.deepcopy(tiny_net)
    vf = _vf(tiny_net)
    _train_a_bit(vf, tiny_input)
    expected = vf(tiny_input).detach()
    vf.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "adapter_config.json").read_text())
    assert meta["format_version"] == 1 and len(meta["fingerprints"]) == 12
    from safetensors.torch import load_file

    keys = set(load_file(tmp_path / "adapter_model.safetensors"))
    assert keys == {f"vector::{n}" for n in vf.vectors.names()} | {"module::head.weight", "module::head.bias"}
    loaded = VectorFitModel.from_pretrained(base, tmp_path)
    torch.testing.assert_close(loaded(tiny_input), expected)
    assert not any(p.requires_grad for p in loaded.parameters())


@pytest.mark.parametrize("method_kw", [{"method": "svfit", "rank": 3}, {"method": "svft", "pattern": "random"},
                                       {"method": "svft", "pattern": "topk", "off_diagonals": 1,
                                        "roles": ["q", "k", "v", "o"]}])
def test_save_load_round_trip_other_methods(tiny_net, tiny_input, tmp_path, method_kw):
    base = copy.deepcopy(tiny_net)
    vf = _vf(tiny_net, **method_kw)
    _train_a_bit(vf, tiny_input)
    vf.save_pretrained(tmp_path)
    loaded = VectorFitModel.from_pretrained(base, tmp_path, is_trainable=True)
    torch.testing.assert_close(loaded(tiny_input), vf(tiny_input))
    assert all(v.parameter.requires_grad for v in loaded.vectors)


def test_adapter_on_different_base_names_module_and_leaves_model(tiny_net, tiny_input, tmp_path):
    vf = _vf(tiny_net)
    vf.save_pretrained(tmp_path)
    torch.manual_seed(123)
    other = TinyNet()
    with torch.no_grad():
        other.load_state_dict(copy.deepcopy(TinyNet().state_dict()))
    before = copy.deepcopy(other.state_dict())
    with pytest.raises(AdapterMismatchError, match="blocks.0.q"):
        VectorFitModel.from_pretrained(other, tmp_path)
    assert not any(isinstance(m, DecomposedLayer) for m in other.modules())
    for k, v in other.state_dict().items():
        assert torch.equal(v, before[k])


def test_missing_or_corrupt_adapter(tiny_net, tmp_path):
    base = copy.deepcopy(tiny_net)
    vf = _vf(tiny_net)
    vf.save_pretrained(tmp_path)
    data = (tmp_path / "adapter_model.safetensors").read_bytes()
    (tmp_path / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterFormatError, match="truncated or corrupted"):
        VectorFitModel.from_pretrained(base, tmp_path)
    with pytest.raises(AdapterFormatError, match="does not exist"):
        VectorFitModel.from_pretrained(base, tmp_path / "nope")


def test_merge_and_unload(tiny_net, tiny_input):
    original_flags = {n: p.requires_grad for n, p in tiny_net.named_parameters()}
    vf = _vf(tiny_net)
    _train_a_bit(vf, tiny_input)
    expected = vf(tiny_input).detach()
    plain = vf.merge_and_unload()
    assert isinstance(plain, TinyNet)
    assert not any(isinstance(m, DecomposedLayer) for m in plain.modules())
    assert all(type(m) is torch.nn.Linear for n, m in plain.named_modules() if n.endswith((".q", ".up")))
    torch.testing.assert_close(plain(tiny_input), expected, atol=1e-5, rtol=1e-5)
    assert {n: p.requires_grad for n, p in plain.named_parameters()} == original_flags


def test_unknown_family_without_targets():
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))  # no blocks to infer
    with pytest.raises(UnknownFamilyError) as info:
        get_vectorfit_model(net, VectorFitConfig())
    assert "target_modules" in str(info.value) and "Known families" in str(info.value)


def test_undeclared_model_gets_inferred_roles(tiny_net):
    vf = get_vectorfit_model(tiny_net, VectorFitConfig())
    assert vf.family.origin == "inferred" and vf.modules_to_save == ["head"]
    assert {v.role for v in vf.vectors.select(kind="sigma", layer=1)} == {"q", "k", "v", "o", "f1", "f2"}


def test_no_match_and_unsupported_and_all_or_nothing(tiny_net):
    before = copy.deepcopy(tiny_net.state_dict())
    with pytest.raises(TargetError, match="no module matched"):
        get_vectorfit_model(tiny_net, VectorFitConfig(target_modules=["nothing_like_this"]))
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    with pytest.raises(UnsupportedLayerError, match="'1' is a LayerNorm"):
        get_vectorfit_model(net, VectorFitConfig(target_modules=["0", "1"]))
    assert type(net[0]) is torch.nn.Linear and all(p.requires_grad for p in net.parameters())
    assert all(torch.equal(v, before[k]) for k, v in tiny_net.state_dict().items())


def test_getattr_falls_through_to_base(tiny_net):
    vf = _vf(tiny_net)
    assert vf.head is tiny_net.head and vf.get_base_model() is tiny_net


def test_disable_adapter_and_unload(tiny_net, tiny_input):
    ref = tiny_net(tiny_input).detach()
    vf = get_vectorfit_model(tiny_net, VectorFitConfig(target_modules=TINY_ROLES))  # no head: base is exact
    _train_a_bit(vf, tiny_input)
    trained = vf(tiny_input).detach()
    assert not torch.allclose(trained, ref)
    with vf.disable_adapter(), torch.no_grad():
        torch.testing.assert_close(vf(tiny_input), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vf(tiny_input).detach(), trained)  # restored after the block
    plain = vf.unload()
    assert not any(isinstance(m, DecomposedLayer) for m in plain.modules())
    torch.testing.assert_close(plain(tiny_input).detach(), ref, atol=1e-5, rtol=1e-5)


def test_forward_carries_the_base_signature(tiny_net):
    import inspect

    vf = _vf(tiny_net)
    assert list(inspect.signature(vf.forward).parameters) == ["x"]


def test_state_dict_holds_what_trains_and_loads_back(tiny_net):
    """``state_dict()`` is the vectors and heads only, also under a wrapper's prefix; loading it (strict) reports no
    frozen entry missing; every tensor with ``state_dict_trained_only = False``."""
    config = VectorFitConfig(target_modules={"q": ["q"], "k": ["k"]}, modules_to_save=["head"])  # v, o, up, down frozen
    vf = get_vectorfit_model(tiny_net, config)
    trained = {n for n, p in vf.named_parameters() if p.requires_grad}
    assert set(vf.state_dict()) == vf.trained_state_keys() == trained
    wrapper = torch.nn.ModuleDict({"inner": vf})  # as DDP holds it (``module.``)
    assert set(wrapper.state_dict()) == {f"inner.{k}" for k in trained}
    torch.manual_seed(0)
    twin = get_vectorfit_model(TinyNet(), config)
    with torch.no_grad():
        for v in vf.vectors:
            v.parameter.add_(0.25)
    assert str(torch.nn.ModuleDict({"inner": twin}).load_state_dict(wrapper.state_dict())) == \
        "<All keys matched successfully>"
    assert all(torch.equal(a, b) for a, b in zip(vf.state_dict().values(), twin.state_dict().values()))
    vf.state_dict_trained_only = False
    everything = vf.state_dict()
    assert set(everything) > trained and "model.blocks.0.v.weight" in everything


def test_vectors_follow_replaced_parameters(tiny_net):
    """``load_state_dict(assign=True)`` (and FSDP's ``fully_shard``) put new parameters in place; the registry
    follows them, so the optimizer groups, the freezer and the adapter use the live ones."""
    vf = get_vectorfit_model(tiny_net, VectorFitConfig(target_modules=TINY_ROLES))
    state = {k: v.clone() + 1.0 for k, v in vf.state_dict().items()}
    vf.load_state_dict(state, assign=True)
    live = dict(vf.named_parameters())
    for vec in vf.vectors:
        assert any(vec.parameter is p for p in live.values()), vec.name
        assert vec.strength() == pytest.approx(1.0)
    assert {id(p) for g in vf.parameter_groups(1e-2) for p in g["params"]} == {id(v.parameter) for v in vf.vectors}
