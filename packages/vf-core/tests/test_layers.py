"""Decomposed layers: exact at initialisation, deterministic, correct per method, layout and fused split."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vf_core import VectorFitConfig
from vf_core.layers import DecomposedLayer, SliceSpec, pattern_size, sparsity_pattern
from vf_core.svd import decompose

from vf_core_test_utils import Conv1D

METHODS = [
    VectorFitConfig(method="vectorfit"),
    VectorFitConfig(method="vectorfit", train_sigma=False),
    VectorFitConfig(method="vectorfit", sigma_parametrization="relative"),
    VectorFitConfig(method="svfit", rank=3, train_bias=True),
    VectorFitConfig(method="svfit", rank=None, energy=0.9, train_bias=True),
    VectorFitConfig(method="svft", pattern="plain", train_bias=True),
    VectorFitConfig(method="svft", pattern="banded", off_diagonals=1, train_bias=True),
    VectorFitConfig(method="svft", pattern="random", off_diagonals=2, seed=3, train_bias=True),
]


def _layers():
    torch.manual_seed(0)
    return {
        "linear": (nn.Linear(7, 5), torch.randn(3, 4, 7)),
        "linear_tall": (nn.Linear(4, 9), torch.randn(3, 4)),
        "linear_nobias": (nn.Linear(6, 6, bias=False), torch.randn(2, 6)),
        "conv1d": (Conv1D(6, 5), torch.randn(2, 3, 5)),
        "conv1x1": (nn.Conv2d(6, 4, 1), torch.randn(2, 6, 5, 5)),
        "conv3x3": (nn.Conv2d(3, 5, 3, stride=2, padding=1), torch.randn(2, 3, 7, 7)),
    }


@pytest.mark.parametrize("opts", METHODS, ids=lambda o: f"{o.method}-{o.pattern if o.method == 'svft' else o.rank}")
@pytest.mark.parametrize("kind", list(_layers()))
def test_exact_at_initialisation_train_and_eval(kind, opts):
    module, x = _layers()[kind]
    d_out = module.weight.shape[1] if kind == "conv1d" else module.weight.shape[0]
    layer = DecomposedLayer.build(module, kind, [SliceSpec("q", d_out)], options=opts)
    ref = module(x)
    torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)  # factored (training) path
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)  # cached dense path
    merged = layer.merged()
    assert type(merged) is type(module)
    torch.testing.assert_close(merged(x), ref, atol=1e-5, rtol=1e-5)


def test_decomposition_is_deterministic_and_signs_fixed():
    w = torch.randn(12, 7)
    a, b = decompose(w), decompose(w.clone())
    assert torch.equal(a.u, b.u) and torch.equal(a.v, b.v) and torch.equal(a.s, b.s)
    assert (a.u.gather(0, a.u.abs().argmax(0)[None]) > 0).all()
    torch.testing.assert_close((a.u * a.s) @ a.v.T, w, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_svd_dtype_independent_of_model_dtype(dtype):
    w = torch.randn(6, 4, dtype=torch.float16)
    dec = decompose(w, dtype)
    assert dec.u.dtype == getattr(torch, dtype)


def test_fused_projection_split_per_role():
    torch.manual_seed(0)
    fused = Conv1D(12, 4)  # q, k, v stacked along the output
    x = torch.randn(2, 3, 4)
    slices = [SliceSpec("q", 4), SliceSpec("k", 4, targeted=False), SliceSpec("v", 4)]
    layer = DecomposedLayer.build(fused, "c_attn", slices)
    torch.testing.assert_close(layer(x), fused(x), atol=1e-5, rtol=1e-5)
    vectors = list(layer.trainable_vectors())
    assert [(k, r, kind) for k, r, kind, _ in vectors] == [
        ("q", "q", "sigma"), ("q", "q", "bias"), ("v", "v", "sigma"), ("v", "v", "bias")]
    assert vectors[0][3].shape == (4,) and vectors[1][3].shape == (4,)
    # moving q's vectors changes only the q slice of the output
    with torch.no_grad():
        vectors[0][3].mul_(1.5)
        vectors[1][3].add_(1.0)
    out, ref = layer(x), fused(x)
    assert not torch.allclose(out[..., :4], ref[..., :4])
    torch.testing.assert_close(out[..., 4:], ref[..., 4:], atol=1e-5, rtol=1e-5)


def test_svfit_rank_by_count_and_energy():
    torch.manual_seed(0)
    lin = nn.Linear(10, 10)
    s = decompose(lin.weight).s.double()
    layer = DecomposedLayer.build(lin, "l", [SliceSpec(None, 10)],
                                  options=VectorFitConfig(method="svfit", rank=4, train_bias=True))
    assert layer.parts["main"].sigma.numel() == 4
    energy = 0.8
    layer = DecomposedLayer.build(lin, "l", [SliceSpec(None, 10)],
                                  options=VectorFitConfig(method="svfit", energy=energy, train_bias=True))
    r = layer.parts["main"].sigma.numel()
    share = torch.cumsum(s**2, 0) / (s**2).sum()
    assert share[r - 1] >= energy and (r == 1 or share[r - 2] < energy)
    assert not layer.parts["main"].residual.requires_grad


def test_svft_patterns():
    assert pattern_size(6, 2) == 6 * 5 - 2 * 3
    rows, cols = sparsity_pattern("banded", k=6, off_diagonals=2)
    assert len(rows) == pattern_size(6, 2) and ((rows - cols).abs() <= 2).all()
    r1 = sparsity_pattern("random", k=6, off_diagonals=2, seed=1, name="a")
    r2 = sparsity_pattern("random", k=6, off_diagonals=2, seed=1, name="a")
    r3 = sparsity_pattern("random", k=6, off_diagonals=2, seed=2, name="a")
    assert torch.equal(r1[0], r2[0]) and torch.equal(r1[1], r2[1])
    assert not (torch.equal(r3[0], r1[0]) and torch.equal(r3[1], r1[1]))
    assert len(r1[0]) == pattern_size(6, 2)
    dec = decompose(torch.randn(6, 6))
    top = sparsity_pattern("topk", k=6, off_diagonals=1, u=dec.u, v=dec.v)
    assert len(top[0]) == pattern_size(6, 1)
    from vf_core import ConfigError

    dec = decompose(torch.randn(8, 6))
    with pytest.raises(ConfigError, match="square"):
        sparsity_pattern("topk", k=6, off_diagonals=1, u=dec.u, v=dec.v, name="rect")


def test_svft_m_starts_at_zero_and_moves_off_diagonals():
    torch.manual_seed(0)
    lin = nn.Linear(5, 5)
    layer = DecomposedLayer.build(lin, "l", [SliceSpec(None, 5)],
                                  options=VectorFitConfig(method="svft", off_diagonals=1, train_bias=True))
    part = layer.parts["main"]
    assert torch.count_nonzero(part.m) == 0
    with torch.no_grad():
        part.m.add_(0.3)
    dense = part.u @ part.coefficient_matrix() @ part.vt
    torch.testing.assert_close(layer.dense_weight(), dense)
    x = torch.randn(3, 5)
    torch.testing.assert_close(layer(x), x @ dense.T + part.bias, atol=1e-5, rtol=1e-5)


def test_eval_cache_follows_parameter_updates():
    torch.manual_seed(0)
    lin = nn.Linear(4, 4)
    layer = DecomposedLayer.build(lin, "l", [SliceSpec(None, 4)]).eval()
    x = torch.randn(2, 4)
    with torch.no_grad():
        before = layer(x)
        layer.parts["main"].sigma.mul_(2.0)
        after = layer(x)
    assert not torch.allclose(before, after)
    with torch.no_grad():
        torch.testing.assert_close(after, layer.parts["main"](x, layer.layout))


@pytest.mark.parametrize("change", ["replace_sigma", "assign_data", "edit_buffer", "replace_buffer", "double"])
def test_eval_cache_follows_replacements_casts_and_buffer_edits(change):
    torch.manual_seed(0)
    layer = DecomposedLayer.build(nn.Linear(4, 4), "l", [SliceSpec(None, 4)]).eval()
    part = layer.parts["main"]
    x = torch.randn(2, 4)
    with torch.no_grad():
        layer(x)  # fills the cache
        if change == "replace_sigma":
            part.sigma = nn.Parameter(part.sigma * 3.0)
        elif change == "assign_data":
            part.sigma.data = part.sigma.data * 3.0
        elif change == "edit_buffer":
            part.u.mul_(-1.0)
        elif change == "replace_buffer":
            part.u = part.u * -1.0
        else:
            layer.double()
            x = x.double()
        torch.testing.assert_close(layer(x), part(x, layer.layout))


def test_bias_only_training_runs_one_dense_product_with_the_same_values_and_gradients(monkeypatch):
    """With no spectral parameter taking gradients (``train_sigma=False``), a training forward is the base layer's
    single product with the cached dense weight: same output and gradients as the factored form, biases fresh."""
    torch.manual_seed(0)
    lin = nn.Linear(6, 5)
    layer = DecomposedLayer.build(lin, "l", [SliceSpec(None, 5)],
                                  options=VectorFitConfig(train_sigma=False, train_bias=True)).train()
    part = layer.parts["main"]
    assert not isinstance(part.sigma, nn.Parameter) and isinstance(part.bias, nn.Parameter)
    x = torch.randn(3, 6, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    factored = part(x2, layer.layout)
    factored.pow(2).sum().backward()
    bias_grad = part.bias.grad.clone()
    part.bias.grad = None
    monkeypatch.setattr(type(part), "project", lambda *a: (_ for _ in ()).throw(AssertionError("factored path")))
    out = layer(x)
    out.pow(2).sum().backward()
    torch.testing.assert_close(out, factored, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(part.bias.grad, bias_grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        part.bias.add_(1.0)  # an optimizer step: the bias is read fresh, the weight stays cached
    torch.testing.assert_close(layer(x), out + 1.0, atol=1e-5, rtol=1e-5)


def test_sigma_that_trains_keeps_the_factored_form_in_training():
    torch.manual_seed(0)
    layer = DecomposedLayer.build(nn.Linear(6, 5), "l", [SliceSpec(None, 5)]).train()
    layer(torch.randn(3, 6)).sum().backward()
    assert layer.parts["main"].sigma.grad is not None
