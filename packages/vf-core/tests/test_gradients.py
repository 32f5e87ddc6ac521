"""Gradients of s, b and M: gradcheck, and equality with a dense float64 reference ``x (U diag(s) V^T)^T + b``."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from vf_core import VectorFitConfig
from vf_core.layers import DecomposedLayer, SliceSpec

from vf_core_test_utils import Conv1D

CASES = {
    "vectorfit": VectorFitConfig(method="vectorfit"),
    "vectorfit-relative": VectorFitConfig(method="vectorfit", sigma_parametrization="relative"),
    "svfit": VectorFitConfig(method="svfit", rank=2, train_bias=True),
    "svft-banded": VectorFitConfig(method="svft", pattern="banded", off_diagonals=1, train_bias=True),
    "svft-random": VectorFitConfig(method="svft", pattern="random", off_diagonals=1, seed=5, train_bias=True),
}
MODULES = {
    "linear": lambda: (nn.Linear(4, 3).double(), torch.randn(2, 4, dtype=torch.float64)),
    "conv1d": lambda: (Conv1D(3, 4).double(), torch.randn(2, 4, dtype=torch.float64)),
    "conv2d": lambda: (nn.Conv2d(3, 4, 1).double(), torch.randn(1, 3, 2, 2, dtype=torch.float64)),
}


def _build(module_key: str, case: str):
    torch.manual_seed(0)
    module, x = MODULES[module_key]()
    d_out = module.nf if module_key == "conv1d" else module.weight.shape[0]
    layer = DecomposedLayer.build(module, "m", [SliceSpec(None, d_out)],
                                  options=CASES[case].model_copy(update={"svd_dtype": "float64"}))
    with torch.no_grad():  # move away from the initial point so every term matters
        for _, _, _, p in layer.trainable_vectors():
            p.add_(torch.randn_like(p) * 0.1)
    return layer, x


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("module_key", list(MODULES))
def test_gradcheck(module_key, case):
    layer, x = _build(module_key, case)
    names = [n for n, p in layer.named_parameters()]

    def f(*params):
        return functional_call(layer, dict(zip(names, params)), (x,))

    params = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("module_key", ["linear", "conv2d"])
def test_gradients_match_dense_reference(module_key, case):
    layer, x = _build(module_key, case)
    part = layer.parts["main"]
    y = layer(x)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    # dense reference: the same parameter values, differentiated through W = U diag(s) V^T (or its SVFit/SVFT
    # form) built explicitly, then an ordinary dense layer
    saved = dict(part.named_parameters())
    ref_params = {n: p.detach().clone().requires_grad_(True) for n, p in saved.items()}
    try:
        part._parameters.update(ref_params)
        y_ref = layer.layout.apply_dense(x, part.dense_weight())
        if part.bias is not None:
            y_ref = layer.layout.add_bias(y_ref, part.bias)
        (y_ref * g).sum().backward()
    finally:
        part._parameters.update(saved)
    torch.testing.assert_close(y.detach(), y_ref.detach(), atol=1e-10, rtol=1e-8)
    for n, p in saved.items():
        torch.testing.assert_close(p.grad, ref_params[n].grad, atol=1e-10, rtol=1e-8)
