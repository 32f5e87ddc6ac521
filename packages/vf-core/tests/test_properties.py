"""Property tests (hypothesis) over layer shapes, types, dtypes and methods.

For every drawn case: exact at initialisation, gradients equal to the dense reference, and the save/load
and merge round trips reproduce the trained outputs.
"""

from __future__ import annotations

import copy
import tempfile

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from vf_core import VectorFitConfig, VectorFitModel, get_vectorfit_model

from vf_core_test_utils import Conv1D

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def cases(draw):
    d_in, d_out = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    kind = draw(st.sampled_from(["linear", "linear_nobias", "conv1d", "conv1x1", "conv3x3"]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    k = min(d_out, d_in * (9 if kind == "conv3x3" else 1))
    method = draw(st.sampled_from(["vectorfit", "vectorfit_sigma", "svfit", "svft_banded", "svft_random",
                                   "svft_plain"]))
    config = {"vectorfit": {}, "vectorfit_sigma": {"train_bias": False},
              "svfit": {"method": "svfit", "rank": draw(st.integers(1, k))},
              "svft_banded": {"method": "svft", "off_diagonals": draw(st.integers(0, 3))},
              "svft_random": {"method": "svft", "pattern": "random", "seed": draw(st.integers(0, 99))},
              "svft_plain": {"method": "svft", "pattern": "plain"}}[method]
    if method.startswith("svft") or method == "svfit":
        config["train_bias"] = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return d_in, d_out, kind, dtype, config, seed


def _model(d_in, d_out, kind, dtype, seed):
    torch.manual_seed(seed)
    layer = {"linear": lambda: nn.Linear(d_in, d_out), "linear_nobias": lambda: nn.Linear(d_in, d_out, bias=False),
             "conv1d": lambda: Conv1D(d_out, d_in), "conv1x1": lambda: nn.Conv2d(d_in, d_out, 1),
             "conv3x3": lambda: nn.Conv2d(d_in, d_out, 3, padding=1)}[kind]()
    x = torch.randn(3, d_in, 4, 4) if kind.startswith("conv") and kind != "conv1d" else torch.randn(2, 3, d_in)
    return nn.Sequential(layer).to(dtype), x.to(dtype)


def _tol(dtype):
    return dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-9)


@SETTINGS
@given(cases())
def test_exact_at_initialisation(case):
    d_in, d_out, kind, dtype, config, seed = case
    model, x = _model(d_in, d_out, kind, dtype, seed)
    ref = model(x).detach()
    svd_dtype = "float64" if dtype == torch.float64 else "float32"
    vf = get_vectorfit_model(model, VectorFitConfig(target_modules=["0"], svd_dtype=svd_dtype, **config))
    torch.testing.assert_close(vf(x), ref, **_tol(dtype))


@SETTINGS
@given(cases())
def test_gradients_match_dense_reference(case):
    d_in, d_out, kind, dtype, config, seed = case
    model, x = _model(d_in, d_out, kind, dtype, seed)
    svd_dtype = "float64" if dtype == torch.float64 else "float32"
    vf = get_vectorfit_model(model, VectorFitConfig(target_modules=["0"], svd_dtype=svd_dtype, **config))
    layer = vf.get_base_model()[0]
    with torch.no_grad():
        for v in vf.vectors:
            v.parameter.add_(torch.randn_like(v.parameter) * 0.1)
    y = vf(x)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    # reference: the same parameter values, through an explicitly built dense weight
    for part in layer.parts.values():
        saved = dict(part.named_parameters())
        ref = {n: p.detach().clone().requires_grad_(True) for n, p in saved.items()}
        part._parameters.update(ref)
        try:
            y_ref = layer.layout.apply_dense(x, layer.dense_weight())
            bias = layer.dense_bias()
            if bias is not None:
                y_ref = layer.layout.add_bias(y_ref, bias)
            (y_ref * g).sum().backward()
        finally:
            part._parameters.update(saved)
        for n, p in saved.items():
            torch.testing.assert_close(p.grad, ref[n].grad, **_tol(dtype))


@SETTINGS
@given(cases())
def test_save_load_and_merge_round_trips(case):
    d_in, d_out, kind, dtype, config, seed = case
    model, x = _model(d_in, d_out, kind, dtype, seed)
    base, layer_type = copy.deepcopy(model), type(model[0])
    svd_dtype = "float64" if dtype == torch.float64 else "float32"
    vf = get_vectorfit_model(model, VectorFitConfig(target_modules=["0"], svd_dtype=svd_dtype, **config))
    with torch.no_grad():
        for v in vf.vectors:
            v.parameter.add_(torch.randn_like(v.parameter) * 0.1)
        trained = vf(x)
    with tempfile.TemporaryDirectory() as d:
        vf.save_pretrained(d)
        loaded = VectorFitModel.from_pretrained(base, d)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), trained, **_tol(dtype))
    merged = vf.merge_and_unload()
    assert type(merged[0]) is layer_type
    with torch.no_grad():
        torch.testing.assert_close(merged(x), trained, **_tol(dtype))
