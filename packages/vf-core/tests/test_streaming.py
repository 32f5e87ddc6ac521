"""Injection streams: one target decomposed, swapped in and its temporaries freed before the next; all or nothing;
half-precision models keep their factors in their own dtype, exact at init to that dtype's precision."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vf_core import DecomposedLayer, VectorFitConfig, get_vectorfit_model

from vf_core_test_utils import TINY_ROLES, TinyNet, assert_untouched, snapshot


def _count_decomposed(model: nn.Module) -> int:
    return sum(isinstance(m, DecomposedLayer) for m in model.modules())


def test_each_target_is_swapped_in_before_the_next_is_decomposed(monkeypatch):
    """Layer by layer: when the i-th SVD starts, exactly the i-1 targets before it are in the model already, and
    no decomposition result outlives its layer's build (none is alive when the next SVD starts)."""
    import gc
    import weakref

    from vf_core.layers import layer as layer_module

    net = TinyNet()
    real = layer_module.decompose
    seen, results = [], []

    def recording(*args, **kwargs):
        gc.collect()
        alive = sum(r() is not None for r in results)
        seen.append((_count_decomposed(net), alive))
        dec = real(*args, **kwargs)
        results.append(weakref.ref(dec.s))  # s is copied by the parts, never kept: it dies with the result
        return dec

    monkeypatch.setattr(layer_module, "decompose", recording)
    vf = get_vectorfit_model(net, VectorFitConfig(target_modules=TINY_ROLES, svd_cache=False))
    n = len(vf.decomposed_layers())
    assert n == 12 and seen == [(i, 0) for i in range(n)]


@pytest.mark.parametrize("fail_at", [1, 6, 12])
def test_a_failure_at_any_target_leaves_the_model_as_it_was(tiny_net, monkeypatch, fail_at):
    """After streaming, a failure in the first, a middle or the last SVD undoes every swap already made."""
    from vf_core.layers import layer as layer_module

    real = layer_module.decompose
    calls = []

    def flaky(*args, **kwargs):
        calls.append(_count_decomposed(tiny_net))
        if len(calls) == fail_at:
            raise RuntimeError(f"simulated failure in SVD {fail_at}")
        return real(*args, **kwargs)

    monkeypatch.setattr(layer_module, "decompose", flaky)
    snap = snapshot(tiny_net)
    with pytest.raises(RuntimeError, match=f"SVD {fail_at}"):
        get_vectorfit_model(tiny_net, VectorFitConfig(target_modules=TINY_ROLES))
    assert calls[-1] == fail_at - 1  # the earlier targets were in the model when it failed
    assert_untouched(tiny_net, snap)
    vf = get_vectorfit_model(tiny_net, VectorFitConfig(target_modules=TINY_ROLES))  # and it still decomposes
    assert len(vf.decomposed_layers()) == 12


def test_an_interrupt_while_streaming_leaves_the_model_as_it_was(tiny_net, monkeypatch):
    from vf_core.layers import layer as layer_module

    real = layer_module.decompose
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(layer_module, "decompose", interrupted)
    snap = snapshot(tiny_net)
    with pytest.raises(KeyboardInterrupt):
        get_vectorfit_model(tiny_net, VectorFitConfig(target_modules=TINY_ROLES))
    assert_untouched(tiny_net, snap)


def test_a_failure_while_wrapping_undoes_the_swaps_and_the_freezing(tiny_net, monkeypatch):
    import vf_core.model as model_module

    def broken(*args, **kwargs):
        raise RuntimeError("wrapper failed")

    monkeypatch.setattr(model_module, "_freeze_except", broken)
    snap = snapshot(tiny_net)
    with pytest.raises(RuntimeError, match="wrapper failed"):
        get_vectorfit_model(tiny_net, VectorFitConfig(target_modules=TINY_ROLES))
    assert_untouched(tiny_net, snap)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ["vectorfit", "svft"])
def test_half_precision_factors_are_stored_in_the_models_dtype_and_exact_to_it(dtype, method):
    """The SVD runs in float32; ``U``, ``V^T`` and the vectors are stored in the model's dtype (half the bytes of
    float32 factors), and ``U diag(s) V^T`` rebuilt from them matches ``W0`` to that dtype's precision."""
    torch.manual_seed(0)
    net = TinyNet(d=32).to(dtype)
    weights = {n: m.weight.detach().clone() for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    vf = get_vectorfit_model(net, VectorFitConfig(target_modules=TINY_ROLES, method=method, svd_cache=False))
    eps = torch.finfo(dtype).eps
    for name, layer in vf.decomposed_layers().items():
        part = layer.parts["main"]
        assert part.u.dtype == dtype and part.vt.dtype == dtype, name
        assert all(t.dtype == dtype for t in layer.parameters()), name
        w0 = weights[name].float()
        # rounding U and V^T to the dtype gives each product an error of a few eps, whatever the matrix's size
        error = (layer.dense_weight(torch.float32) - w0).norm() / w0.norm()
        assert error < 4 * eps, (name, float(error))
        stored = layer.weight.detach()  # rebuilt at float32 and rounded once, as unmerged inference uses it
        assert stored.dtype == dtype
        assert ((stored.float() - w0).norm() / w0.norm()) < 4 * eps, name


def test_half_precision_factors_do_not_keep_float32_copies_queued_for_the_cache(tmp_path, monkeypatch):
    """With the SVD cache on, a bfloat16 model's float32 factors (what the cache stores) are written as they come
    instead of all waiting for the end beside the model's own bfloat16 copies."""
    from vf_core.svd import DecompositionCache, wait_for_cache_writes

    monkeypatch.setenv("VECTORFIT_CACHE", str(tmp_path))
    queued_at_each_put = []
    real_put = DecompositionCache.put

    def put(self, key, dec):
        queued_at_each_put.append(len(self._queued))
        real_put(self, key, dec)

    monkeypatch.setattr(DecompositionCache, "put", put)
    torch.manual_seed(0)
    vf = get_vectorfit_model(TinyNet().to(torch.bfloat16), VectorFitConfig(target_modules=TINY_ROLES))
    wait_for_cache_writes()
    assert len(queued_at_each_put) == 12 and max(queued_at_each_put) == 0
    assert len(list((tmp_path / "svd").rglob("*.safetensors"))) == 12
    # a second start is served from those entries, in bfloat16 again
    torch.manual_seed(0)
    again = get_vectorfit_model(TinyNet().to(torch.bfloat16), VectorFitConfig(target_modules=TINY_ROLES))
    for a, b in zip(vf.vectors, again.vectors):
        assert b.parameter.dtype == torch.bfloat16
        torch.testing.assert_close(a.initial, b.parameter, atol=0, rtol=0)


def test_float32_factors_wait_for_the_end_as_before(tmp_path, monkeypatch):
    """A float32 model's layers keep the decomposition's own tensors, so queueing them costs nothing: the writes
    still start once the model is built, not competing with the SVDs."""
    from vf_core.svd import DecompositionCache, wait_for_cache_writes

    monkeypatch.setenv("VECTORFIT_CACHE", str(tmp_path))
    early = []
    real = DecompositionCache.write_now
    monkeypatch.setattr(DecompositionCache, "write_now", lambda self, dec: early.append(1) or real(self, dec))
    get_vectorfit_model(TinyNet(), VectorFitConfig(target_modules=TINY_ROLES))
    wait_for_cache_writes()
    assert early == [] and len(list((tmp_path / "svd").rglob("*.safetensors"))) == 12
