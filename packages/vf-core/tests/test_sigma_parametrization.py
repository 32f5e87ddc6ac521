"""The relative parametrization of the singular values, ``s = s0 * (1 + t)`` (docs/method.md, "stalls").

It must be the same method as the paper's absolute ``s`` up to the optimizer's view of it: exact at
initialisation, the same function for corresponding values, saved, loaded, merged and exported alike, and
Adam's steps relative to each singular value's size.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from vf_core import ConfigError, VectorFitConfig, VectorFitModel, get_vectorfit_model
from vf_core.layers import DecomposedLayer, SigmaPart

from vf_core_test_utils import TINY_ROLES


def _vf(net, **kw):
    return get_vectorfit_model(net, VectorFitConfig(target_modules=TINY_ROLES, modules_to_save=["head"], **kw))


def _train(vf, x, steps=3, lr=1e-2):
    opt = torch.optim.AdamW([p for p in vf.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        vf(x).pow(2).mean().backward()
        opt.step()


def test_relative_starts_at_zero_and_is_exact(tiny_net, tiny_input):
    expected = tiny_net(tiny_input).detach()
    vf = _vf(tiny_net, sigma_parametrization="relative")
    sig = [v.parameter for v in vf.vectors if v.kind == "sigma"]
    assert sig and all(torch.count_nonzero(p) == 0 for p in sig)
    torch.testing.assert_close(vf(tiny_input), expected, atol=1e-5, rtol=1e-5)
    vf.eval()
    with torch.no_grad():
        torch.testing.assert_close(vf(tiny_input), expected, atol=1e-5, rtol=1e-5)


def test_relative_and_absolute_compute_the_same_function():
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 5)
    x = torch.randn(4, 6)
    absolute = SigmaPart.from_weight(lin.weight, lin.bias, train_sigma=True, train_bias=True)
    relative = SigmaPart.from_weight(lin.weight, lin.bias, train_sigma=True, train_bias=True,
                                     sigma_parametrization="relative")
    t = torch.linspace(-0.5, 0.5, relative.sigma.numel())
    with torch.no_grad():
        relative.sigma.copy_(t)
        absolute.sigma.mul_(1 + t)
    torch.testing.assert_close(relative.singular_values(), absolute.sigma)
    torch.testing.assert_close(relative.dense_weight(), absolute.dense_weight())
    from vf_core.layouts import LinearLayout

    torch.testing.assert_close(relative(x, LinearLayout(lin)), absolute(x, LinearLayout(lin)))


def test_adam_steps_are_relative_to_each_singular_value():
    """One Adam step moves every absolute singular value by about lr, every relative one by about lr * s0."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 8)
    with torch.no_grad():  # a spread spectrum: 10 .. 0.01
        u, _, vh = torch.linalg.svd(torch.randn(8, 8))
        lin.weight.copy_(u @ torch.diag(torch.logspace(1, -2, 8)) @ vh)
    x = torch.randn(16, 8)
    moved = {}
    for mode in ("absolute", "relative"):
        part = SigmaPart.from_weight(lin.weight, lin.bias, train_sigma=True, train_bias=False,
                                     sigma_parametrization=mode)
        from vf_core.layouts import LinearLayout

        s0 = part.singular_values().detach().clone()
        opt = torch.optim.Adam([part.sigma], lr=1e-2)
        part(x, LinearLayout(lin)).sum().backward()
        opt.step()
        moved[mode] = ((part.singular_values().detach() - s0).abs(), s0)
    change, s0 = moved["absolute"]
    torch.testing.assert_close(change, torch.full_like(change, 1e-2), atol=1e-4, rtol=0)
    change, s0 = moved["relative"]
    torch.testing.assert_close(change / s0, torch.full_like(change, 1e-2), atol=1e-4, rtol=0)


def _saved(net, x, directory, parametrization: str):
    """(a copy of the untouched base, the trained model's output, the saved adapter's config) after a few steps."""
    base = copy.deepcopy(net)
    vf = _vf(net, sigma_parametrization=parametrization)
    _train(vf, x)
    expected = vf(x).detach()
    vf.save_pretrained(directory)
    return base, expected, json.loads((directory / "adapter_config.json").read_text())


def test_relative_save_load_merge_round_trip(tiny_net, tiny_input, tmp_path):
    base, expected, meta = _saved(tiny_net, tiny_input, tmp_path, "relative")
    assert meta["config"]["sigma_parametrization"] == "relative"
    loaded = VectorFitModel.from_pretrained(copy.deepcopy(base), tmp_path)
    torch.testing.assert_close(loaded(tiny_input), expected)
    assert loaded.vectorfit_config.sigma_parametrization == "relative"
    plain = loaded.merge_and_unload()
    assert not any(isinstance(m, DecomposedLayer) for m in plain.modules())
    torch.testing.assert_close(plain(tiny_input), expected, atol=1e-5, rtol=1e-5)


def test_adapter_without_the_field_loads_as_absolute(tiny_net, tiny_input, tmp_path):
    """Adapters written before the option existed hold absolute singular values, whatever today's default is."""
    base, expected, meta = _saved(tiny_net, tiny_input, tmp_path, "absolute")
    cfg = tmp_path / "adapter_config.json"
    del meta["config"]["sigma_parametrization"]
    cfg.write_text(json.dumps(meta))
    loaded = VectorFitModel.from_pretrained(base, tmp_path)
    assert loaded.vectorfit_config.sigma_parametrization == "absolute"
    torch.testing.assert_close(loaded(tiny_input), expected)


def test_relative_is_for_vectorfit_only():
    with pytest.raises(ConfigError, match="sigma_parametrization"):
        VectorFitConfig(method="svfit", sigma_parametrization="relative")
    with pytest.raises(ConfigError, match="sigma_parametrization"):
        VectorFitConfig(sigma_parametrization="log")
    assert VectorFitConfig(method="svft").method == "svft"  # the default never gets in the way
