"""Everything the CPU tests check, on a CUDA device: decomposition, every method's exactness and gradients, the
adapter round trip, merging, a bfloat16 model and the SVD cache. Skipped where no CUDA device is present (CI);
run on a GPU machine with ``pytest packages/vf-core/tests/test_cuda.py``."""

from __future__ import annotations

import copy

import pytest
import torch

from vf_core import VectorFitConfig, VectorFitModel, get_vectorfit_model
from vf_core.svd import DecompositionCache, decompose
from vf_core_test_utils import TINY_ROLES, TinyNet

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

METHODS = [{}, {"train_sigma": False}, {"method": "svfit", "rank": 3}, {"method": "svfit", "energy": 0.9},
           {"method": "svft", "pattern": "plain"}, {"method": "svft", "pattern": "banded", "off_diagonals": 1},
           {"method": "svft", "pattern": "random"},
           {"method": "svft", "pattern": "topk", "off_diagonals": 1, "roles": ["q", "k", "v", "o"]}]


def _net(seed: int = 0, dtype=torch.float32) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(d=16).to("cuda", dtype)


def _input(dtype=torch.float32) -> torch.Tensor:
    return torch.randn(4, 5, 16, generator=torch.Generator().manual_seed(1)).to("cuda", dtype)


@pytest.mark.parametrize("driver", ["auto", "gram", "svd"])
@pytest.mark.parametrize("shape", [(48, 48), (96, 24), (24, 96)])
def test_decompose_on_cuda_matches_the_cpu(driver, shape):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    w[:, 0] *= 1e-3  # a small tail, so the float64 refinement runs
    u, s, v = decompose(w.cuda(), driver=driver)
    assert u.is_cuda and s.is_cuda and v.is_cuda
    eye = torch.eye(s.numel(), device="cuda")
    torch.testing.assert_close(u.mT @ u, eye, atol=5e-5, rtol=0)
    torch.testing.assert_close(v.mT @ v, eye, atol=5e-5, rtol=0)
    torch.testing.assert_close((u * s) @ v.mT, w.cuda(), atol=1e-5 * float(s[0]), rtol=0)
    torch.testing.assert_close(s.cpu(), decompose(w, driver=driver).s, atol=1e-5 * float(s[0]), rtol=0)


@pytest.mark.parametrize("method_kw", METHODS,
                         ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "vectorfit")
def test_every_method_is_exact_trains_and_round_trips_on_cuda(method_kw, tmp_path):
    net, x = _net(), _input()
    base = copy.deepcopy(net)
    expected = net(x)
    vf = get_vectorfit_model(net, VectorFitConfig(target_modules=TINY_ROLES, modules_to_save=["head"], **method_kw))
    torch.testing.assert_close(vf(x), expected, atol=1e-5, rtol=1e-5)
    trainable = [p for p in vf.parameters() if p.requires_grad]
    assert trainable and all(p.is_cuda for p in vf.parameters())
    opt = torch.optim.AdamW(trainable, lr=0.05)
    for _ in range(3):
        vf(x).pow(2).mean().backward()
        assert all(p.grad is not None and p.grad.is_cuda and torch.isfinite(p.grad).all() for p in trainable)
        opt.step()
        opt.zero_grad()
    trained = vf(x).detach()
    assert not torch.allclose(trained, expected)
    vf.save_pretrained(tmp_path)
    loaded = VectorFitModel.from_pretrained(base, tmp_path, is_trainable=True)
    torch.testing.assert_close(loaded(x), trained)
    merged = vf.merge_and_unload()
    torch.testing.assert_close(merged(x), trained, atol=1e-5, rtol=1e-4)


def test_a_model_moved_to_cuda_after_injection():
    net = TinyNet(d=16)
    x = _input()
    vf = get_vectorfit_model(net, VectorFitConfig(target_modules=TINY_ROLES, method="svft", pattern="banded"))
    vf = vf.cuda()
    expected = copy.deepcopy(vf).merge_and_unload()(x)
    torch.testing.assert_close(vf(x), expected, atol=1e-5, rtol=1e-4)


def test_bfloat16_model_on_cuda():
    net, x = _net(dtype=torch.bfloat16), _input(torch.bfloat16)
    expected = net(x).float()
    vf = get_vectorfit_model(net, VectorFitConfig(target_modules=TINY_ROLES))
    out = vf(x)
    assert out.dtype == torch.bfloat16 and all(v.parameter.dtype == torch.bfloat16 for v in vf.vectors)
    assert (out.float() - expected).norm() / expected.norm() < 2e-2  # bf16 rounding of U and V
    out.float().pow(2).mean().backward()
    assert all(v.parameter.grad is not None for v in vf.vectors)


def test_the_svd_cache_serves_cuda_weights(tmp_path):
    w = torch.randn(40, 24, generator=torch.Generator().manual_seed(3)).cuda()
    cache = DecompositionCache(tmp_path)
    first = decompose(w, cache=cache)
    cache.flush()
    assert list(tmp_path.rglob("*.safetensors"))
    again = decompose(w, cache=cache)
    assert again.u.is_cuda
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
