"""The decomposition: both drivers agree, ill-conditioned matrices fall back, the disk cache is keyed by content."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vf_core.svd import DecompositionCache, decompose, fingerprint


def _check(dec, w, atol):
    torch.testing.assert_close((dec.u * dec.s) @ dec.v.T, w.to(dec.u.dtype), atol=atol, rtol=0)
    assert (dec.s[:-1] >= dec.s[1:]).all()


def test_gram_and_svd_drivers_agree():
    torch.manual_seed(0)
    for shape in [(40, 12), (12, 40), (16, 16)]:
        w = torch.randn(*shape, dtype=torch.float64)
        a, b = decompose(w, "float64", "gram"), decompose(w, "float64", "svd")
        _check(a, w, 1e-10)
        torch.testing.assert_close(a.s, b.s, atol=1e-10, rtol=0)
        torch.testing.assert_close(a.u, b.u, atol=1e-8, rtol=0)  # same signs after the sign fix
        torch.testing.assert_close(a.v, b.v, atol=1e-8, rtol=0)
        torch.testing.assert_close(a.u.T @ a.u, torch.eye(a.s.numel(), dtype=torch.float64), atol=1e-8, rtol=0)


def test_rank_deficient_falls_back_to_svd():
    torch.manual_seed(0)
    w = torch.randn(10, 2) @ torch.randn(2, 8)  # rank 2
    dec = decompose(w, "float32", "auto")
    _check(dec, w, 1e-5)
    assert torch.isfinite(dec.u).all() and torch.isfinite(dec.v).all()
    torch.testing.assert_close(dec.u.T @ dec.u, torch.eye(8), atol=1e-4, rtol=0)
    zero = decompose(torch.zeros(4, 3))
    assert torch.isfinite(zero.u).all() and (zero.s == 0).all()


def test_cache_round_trip_and_content_keying(tmp_path):
    torch.manual_seed(0)
    cache = DecompositionCache(tmp_path)
    w = torch.randn(20, 10)
    first = decompose(w, cache=cache)
    cache.flush()
    assert len(list(tmp_path.rglob("*.safetensors"))) == 1
    again = decompose(w.clone(), cache=cache)
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    w2 = w.clone()
    w2[3, 4] += 1e-6  # one entry, barely changed: must not be served the cached factors
    assert fingerprint(w2) != fingerprint(w)
    other = decompose(w2, cache=cache)
    _check(other, w2, 1e-5)
    cache.flush()
    assert len(list(tmp_path.rglob("*.safetensors"))) == 2


def test_damaged_cache_entry_is_recomputed(tmp_path):
    cache = DecompositionCache(tmp_path)
    w = torch.randn(6, 6)
    decompose(w, cache=cache)
    cache.flush()
    (path,) = tmp_path.rglob("*.safetensors")
    path.write_bytes(b"garbage")
    _check(decompose(w, cache=cache), w, 1e-5)


def test_fingerprint_depends_on_dtype_and_shape():
    w = torch.arange(6.0)
    assert fingerprint(w.view(2, 3)) != fingerprint(w.view(3, 2))
    assert fingerprint(w) != fingerprint(w.double())


def _with_spectrum(rows: int, cols: int, spectrum: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q1, _ = torch.linalg.qr(torch.randn(rows, spectrum.numel(), generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(cols, spectrum.numel(), generator=g, dtype=torch.float64))
    return ((q1 * spectrum.double()) @ q2.T).float()


SPECTRA = {
    "flat": lambda k: torch.ones(k),
    "decade": lambda k: torch.logspace(0, -1, k),
    "two decades": lambda k: torch.logspace(0, -2, k),
    "near the old threshold": lambda k: torch.logspace(0, -2.9, k),
    "six decades": lambda k: torch.logspace(0, -6, k),
    "short tail": lambda k: torch.cat([torch.ones(k - k // 10), torch.logspace(-1.2, -3, k // 10)]),
    "tail only just under the cut": lambda k: torch.cat([torch.ones(k - 5), torch.full((5,), 0.07)]),
    "degenerate at the tail cut": lambda k: torch.tensor([0.1001, 0.099]).repeat(k // 2).sort(descending=True)[0],
}


def test_factors_are_orthonormal_whatever_the_conditioning():
    """float32 Gram eigendecomposition loses orthogonality of the small singular vectors: the tail refinement
    (or the fallback) must keep U and V orthonormal like LAPACK, for every driver and shape."""
    for name, make in SPECTRA.items():
        for rows, cols in [(96, 96), (288, 96), (96, 288)]:
            k = min(rows, cols)
            w = _with_spectrum(rows, cols, make(k))
            exact = torch.linalg.svdvals(w.double())
            for driver in ("auto", "gram", "svd"):
                dec = decompose(w, "float32", driver)
                eye = torch.eye(k)
                where = f"{name}, {rows}x{cols}, driver {driver}"
                assert (dec.u.T @ dec.u - eye).abs().max() < 5e-5, where
                assert (dec.v.T @ dec.v - eye).abs().max() < 5e-5, where
                _check(dec, w, 1e-5 * float(exact[0]))
                assert (dec.s.double() - exact).abs().max() < 1e-5 * exact[0], where


def test_float64_gram_keeps_float64_accuracy():
    for name, make in SPECTRA.items():
        w = _with_spectrum(120, 40, make(40)).double()
        dec = decompose(w, "float64", "gram")
        eye = torch.eye(40, dtype=torch.float64)
        assert (dec.u.T @ dec.u - eye).abs().max() < 1e-10, name
        _check(dec, w, 1e-12)


def test_auto_driver_picks_by_shape_and_spectrum():
    from vf_core.svd import _choose

    torch.manual_seed(0)
    assert _choose(torch.randn(300, 100), "auto") == "gram"  # rectangular
    assert _choose(torch.randn(100, 300), "auto") == "gram"
    assert _choose(torch.randn(200, 200) * 0.02, "auto") == "gram"  # square, flat spectrum (fresh init)
    decaying = _with_spectrum(200, 200, torch.logspace(0, -3, 200))
    assert _choose(decaying, "auto") == "svd"  # square, long small-value tail (like trained weights)
    assert _choose(decaying, "gram") == "gram" and _choose(torch.randn(300, 100), "svd") == "svd"
    assert _choose(torch.zeros(50, 50), "auto") == "svd"


def test_signs_are_deterministic_and_largest_entry_positive():
    torch.manual_seed(0)
    w = torch.randn(30, 12)
    a, b = decompose(w, driver="svd"), decompose(-(-w), driver="gram")
    for dec in (a, b):
        idx = dec.u.abs().argmax(dim=0)
        assert (dec.u.gather(0, idx[None, :]) > 0).all()
    torch.testing.assert_close(a.u, b.u, atol=1e-5, rtol=0)


def test_cache_writes_finish_in_the_background_and_a_second_start_reads_them(tmp_path, monkeypatch):
    """Injection returns while the cache files are still being written; a second model built at once waits for
    those writes and is served from them (same factors, no half file), and the trained ``s`` of the first model
    never leaks into the cache."""
    from vf_core import VectorFitConfig, get_vectorfit_model
    from vf_core.svd import wait_for_cache_writes
    from vf_core.testing.tiny import TINY_ROLES, TinyNet

    monkeypatch.setenv("VECTORFIT_CACHE", str(tmp_path))
    torch.manual_seed(0)
    net = TinyNet()
    twin = TinyNet()
    twin.load_state_dict(net.state_dict())
    first = get_vectorfit_model(net, VectorFitConfig(target_modules=TINY_ROLES))
    with torch.no_grad():
        for v in first.vectors:
            v.parameter.add_(1.0)  # an optimizer step, possibly before the writes end
    second = get_vectorfit_model(twin, VectorFitConfig(target_modules=TINY_ROLES))
    wait_for_cache_writes()
    n_layers = sum(1 for m in first.modules() if type(m).__name__ == "DecomposedLayer")
    files = list((tmp_path / "svd").rglob("*.safetensors"))
    assert n_layers > 0 and len(files) == n_layers
    assert not list((tmp_path / "svd").rglob("*.tmp"))
    for a, b in zip(first.vectors, second.vectors):
        expected = a.initial if a.kind == "sigma" else b.parameter
        torch.testing.assert_close(b.parameter, expected.to(b.parameter), atol=0, rtol=0)


def test_factors_come_in_the_layout_the_layers_use(tmp_path):
    """``V`` is the transpose of a contiguous ``V^T`` (fresh or from the cache), so a layer keeps it without a copy
    (a copy of a cached ``V`` used to keep the whole cache file's ``V`` resident next to it)."""
    from vf_core.parts import SigmaPart

    cache = DecompositionCache(tmp_path)
    w = torch.randn(24, 10)
    fresh = decompose(w, cache=cache)
    cache.flush()
    cached = decompose(w, cache=cache)
    for dec in (fresh, cached):
        assert dec.u.is_contiguous() and dec.v.mT.is_contiguous()
        part = SigmaPart(dec, None, torch.float32, train_sigma=True, train_bias=False)
        assert part.vt.data_ptr() == dec.v.mT.data_ptr() and part.u.data_ptr() == dec.u.data_ptr()
    for a, b in zip(fresh, cached):
        assert torch.equal(a, b)


def test_svfit_keeps_its_own_copy_of_the_top_slices(tmp_path):
    """A view of the top-r rows would keep the whole decomposition alive (all of a cache file's pages)."""
    from vf_core.parts import SVFitPart

    cache = DecompositionCache(tmp_path)
    w = torch.randn(24, 10)
    decompose(w, cache=cache)
    cache.flush()
    dec = decompose(w, cache=cache)
    part = SVFitPart(dec, 3, w, None, train_bias=False)
    for name in ("u", "vt"):
        assert getattr(part, name).untyped_storage().data_ptr() not in (
            dec.u.untyped_storage().data_ptr(), dec.v.untyped_storage().data_ptr()), name
    torch.testing.assert_close(part.dense_weight(), w, atol=1e-5, rtol=0)


def test_a_queued_write_stores_s_as_it_was_when_queued(tmp_path, monkeypatch):
    """Layers train ``s`` in place: a write still queued when the first optimizer step lands must store ``s0``."""
    import threading

    gate = threading.Event()
    real_write = DecompositionCache._write

    def held_write(path, dec):
        gate.wait(10)
        real_write(path, dec)

    monkeypatch.setattr(DecompositionCache, "_write", staticmethod(held_write))
    cache = DecompositionCache(tmp_path)
    w = torch.randn(12, 7)
    dec = decompose(w, cache=cache)
    s0 = dec.s.clone()
    dec.s.add_(1.0)  # the write has not started yet
    gate.set()
    cache.flush()
    torch.testing.assert_close(decompose(w, cache=cache).s, s0, atol=0, rtol=0)


def test_building_a_model_returns_the_decompositions_memory(monkeypatch):
    """Each decomposition's freed temporaries go back to the operating system as soon as its layer is in, before
    the next target is decomposed."""
    import vf_core.injection as injection
    from vf_core import VectorFitConfig, get_vectorfit_model
    from vf_core.heap import return_freed_memory
    from vf_core.layers import DecomposedLayer
    from vf_core.testing.tiny import TINY_ROLES, TinyNet

    assert isinstance(return_freed_memory(), bool)
    net = TinyNet()
    swapped_at_each_trim = []
    monkeypatch.setattr(injection, "return_freed_memory", lambda: swapped_at_each_trim.append(
        sum(isinstance(m, DecomposedLayer) for m in net.modules())) or True)
    vf = get_vectorfit_model(net, VectorFitConfig(target_modules=TINY_ROLES))
    n = len(vf.decomposed_layers())
    assert n > 1 and swapped_at_each_trim == list(range(1, n + 1))


def test_a_failed_cache_write_leaves_no_file_and_only_warns(tmp_path, monkeypatch):
    def broken_save(tensors, filename):
        Path(filename).write_bytes(b"partial")
        raise RuntimeError("disk vanished")

    from vf_core.svd import wait_for_cache_writes

    wait_for_cache_writes()  # earlier tests' background writes must not meet the broken writer below
    monkeypatch.setattr("safetensors.torch.save_file", broken_save)
    cache = DecompositionCache(tmp_path)
    w = torch.randn(9, 5)
    with pytest.warns(RuntimeWarning, match="could not write the SVD cache entry.*disk vanished"):
        dec = decompose(w, cache=cache)
        cache.flush()
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.safetensors"))
    _check(dec, w, 1e-5)
