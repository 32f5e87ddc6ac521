"""The one-time decomposition ``W0 = U diag(s0) V^T``: deterministic signs, a fast driver, an on-disk cache.

- Precision: float32 or float64 whatever the model's dtype (``svd_dtype``).
- Signs: singular vectors are defined up to sign; each pair is flipped so that the entry of largest
  magnitude of ``u_i`` is positive, so decomposing the same weight twice gives the same ``U`` and ``V``.
- Driver ``"gram"``: eigen-decompose the small Gram matrix ``A^T A`` (``A`` is the weight or its transpose,
  whichever is tall) and recover the other factor as ``A v_i / s_i``. ``U diag(s) V^T = W V V^T = W`` holds to
  the working precision by construction. In float32 the Gram matrix loses the directions whose singular value
  is small against the largest one (their ``u_i`` come out far from orthogonal), so the tail below 10% of
  ``s_max`` is re-derived in float64: a first-order correction of its coupling to the head, then an exact small
  SVD of ``A V_tail``. ``U`` and ``V`` are then orthonormal to about 1e-5 whatever the conditioning. When the
  tail is more than a quarter of the spectrum, LAPACK is cheaper and is used instead.
- Driver ``"svd"``: ``torch.linalg.svd`` (LAPACK).
- Driver ``"auto"`` (the default): ``"gram"`` for rectangular weights (aspect ratio 2 or more, e.g. the MLP's
  ``d x 4d``: 2 to 5 times faster than LAPACK) and for square-ish ones with a flat spectrum (a freshly
  initialised weight: short tail, about 20% faster); ``"svd"`` for other square-ish ones, where LAPACK is as fast
  as the Gram path with its long refinement. Every path gives the SVD to float32 accuracy; only the time differs.
- Cache: decompositions are stored (on a background thread) under ``$VECTORFIT_CACHE/svd/`` keyed by a
  SHA-256 of the weight's bytes, dtype and shape plus the driver and precision, so a second start is a file
  read, and a different weight can never be served another's factors.

Example:
    >>> import torch
    >>> from vf_core.svd import decompose
    >>> w = torch.randn(5, 3)
    >>> u, s, v = decompose(w)
    >>> bool(torch.allclose(u @ torch.diag(s) @ v.T, w, atol=1e-5))
    True
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import NamedTuple, Optional

import torch

from .svd_cache_usage import enforce_cache_limit

__all__ = ["Decomposition", "decompose", "fingerprint", "DecompositionCache", "default_cache",
           "wait_for_cache_writes"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: the Gram path is used by ``"auto"`` when the longer side is at least this many times the shorter one
_GRAM_ASPECT = 2.0
#: ... and for square-ish weights whose mean ``s_i^2`` is at least this fraction of ``s_max^2`` (see _flat_spectrum)
_FLAT = 0.2
#: float32: singular values below this fraction of the largest are re-derived in float64
_TAIL = 0.1
#: float32: a tail longer than this fraction of the spectrum costs more than LAPACK's SVD
_MAX_TAIL = 0.25
#: float64 has no wider type to refine in: the Gram path is kept only while ``s_min / s_max`` is above this
#: (the orthogonality error of ``U`` grows like ``eps * (s_max / s_min)^2``: here at most about 2e-8)
_GRAM_MIN_RATIO_F64 = 1e-4
#: part of every cache key: bumped whenever the algorithm's output changes
_ALGORITHM = "v3"


class Decomposition(NamedTuple):
    u: torch.Tensor  # (d_out, k)
    s: torch.Tensor  # (k,)
    v: torch.Tensor  # (d_in, k); the transpose of a contiguous (k, d_in) V^T


def _fix_signs(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each pair ``(u_i, v_i)`` so that the entry of largest magnitude of ``u_i`` is positive (on a tie
    between a positive and a negative entry, positive wins)."""
    signs = torch.where(u.amax(dim=0) >= -u.amin(dim=0), 1.0, -1.0).to(u.dtype)
    return u.mul_(signs), v.mul_(signs)  # u and v are fresh results: flipped in place


def _svd(work: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(work, full_matrices=False)
    return u, s, vh.mT


def _refine_tail(a: torch.Tensor, v: torch.Tensor, b: torch.Tensor, s: torch.Tensor, cut: int):
    """Float64 re-derivation of the small singular triplets (columns ``cut:``) of the tall ``a`` (``n x k``).

    ``v`` comes from a float32 eigendecomposition of ``a^T a``: its tail columns span the right subspace only up
    to an angle of about ``eps32 * s_max^2 / (s_cut^2 - s_tail^2)`` with the head. That coupling ``E`` is removed
    to first order (a rotation between the two blocks, so ``V`` stays orthonormal), then the tail is decomposed
    exactly: ``a V_tail = U_t diag(s_t) Q^T``, ``V_tail <- V_tail Q``.
    """
    a64 = a.double()
    v_head, v_tail = v[:, :cut].double(), v[:, cut:].double()
    b_head, b_tail = b[:, :cut].double(), a64 @ v_tail
    lam_head = s[:cut].double() ** 2
    lam_tail = torch.linalg.vector_norm(b_tail, dim=0) ** 2
    e = (b_head.mT @ b_tail) / (lam_head[:, None] - lam_tail[None, :])
    v_head, v_tail = v_head + v_tail @ e.mT, v_tail - v_head @ e
    b_head = b_head + b_tail @ e.mT
    v_tail, _ = torch.linalg.qr(v_tail)
    u_tail, s_tail, q_h = torch.linalg.svd(a64 @ v_tail, full_matrices=False)
    v_tail = v_tail @ q_h.mT
    s_head = torch.linalg.vector_norm(b_head, dim=0)
    u = torch.cat([b_head / s_head, u_tail], 1)
    return u, torch.cat([s_head, s_tail]), torch.cat([v_head, v_tail], 1)


def _tail_cut(evals: torch.Tensor) -> int:
    """Where the float32 tail starts (descending ``evals``): at the widest gap between ``(TAIL/2)^2`` and
    ``TAIL^2`` of the largest eigenvalue, so that no near-degenerate pair is split between head and tail."""
    top = evals[0]
    below = int((evals >= (_TAIL ** 2) * top).sum())  # first index under TAIL * s_max
    if below >= evals.numel():
        return below
    last = min(int((evals >= (_TAIL / 2) ** 2 * top).sum()), evals.numel() - 1)  # the last candidate cut
    if last <= below:
        return below
    gaps = evals[below - 1:last] - evals[below:last + 1]  # the gap just before each candidate cut
    return below + int(torch.argmax(gaps))


def _gram(work: torch.Tensor, svd_dtype: str) -> Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The Gram-eigendecomposition path; None where LAPACK is the better choice (the caller falls back)."""
    tall = work.shape[0] >= work.shape[1]
    a = work if tall else work.mT
    evals, v = torch.linalg.eigh(a.mT @ a)  # ascending
    evals, v = evals.flip(0), v.flip(1)
    b = a @ v  # columns: s_i * u_i
    s = torch.linalg.vector_norm(b, dim=0)
    s_max = s.max()
    if s_max == 0 or not torch.isfinite(s_max):
        return None
    if svd_dtype == "float64":
        if s.min() / s_max < _GRAM_MIN_RATIO_F64:
            return None
        u = b / s
    else:
        cut = _tail_cut(evals)
        m = s.numel() - cut
        if m > _MAX_TAIL * s.numel() or cut == 0:
            return None
        if m:
            u, s, v = _refine_tail(a, v, b, s, cut)
            u, s, v = u.to(work.dtype), s.to(work.dtype), v.to(work.dtype)
        else:
            u = b / s
    order = torch.argsort(s, descending=True)
    if not bool((order == torch.arange(order.numel(), device=order.device)).all()):
        s, u, v = s[order], u[:, order], v[:, order]
    return (u, s, v) if tall else (v, s, u)


def _flat_spectrum(work: torch.Tensor, iterations: int = 8) -> bool:
    """Whether the mean of ``s_i^2`` is at least ``_FLAT`` of ``s_max^2`` (``s_max`` by a few power iterations
    from a fixed start): a flat spectrum, such as a freshly initialised weight's, has a short small-value tail,
    which the Gram path refines cheaply; trained weights usually have a long one (30% below ``0.1 s_max`` in
    MiniLM's attention), for which LAPACK is cheaper."""
    x = torch.randn(work.shape[1], 1, generator=torch.Generator().manual_seed(0), dtype=work.dtype)
    x = x.to(work.device)
    for _ in range(iterations):
        x = work.mT @ (work @ x)
        norm = x.norm()
        if norm == 0 or not torch.isfinite(norm):
            return False
        x = x / norm
    top = (work @ x).pow(2).sum()
    return bool(work.pow(2).sum() / min(work.shape) >= _FLAT * top)


def _choose(work: torch.Tensor, driver: str) -> str:
    """``"auto"``: the Gram path for rectangular weights and for square-ish ones with a flat spectrum, else LAPACK."""
    if driver != "auto":
        return driver
    long, short = max(work.shape), min(work.shape)
    if short == 0:
        return "svd"
    return "gram" if long >= _GRAM_ASPECT * short or _flat_spectrum(work) else "svd"


def decompose(matrix: torch.Tensor, svd_dtype: str = "float32", driver: str = "auto",
              cache: Optional["DecompositionCache"] = None, key: Optional[str] = None) -> Decomposition:
    """Economy SVD of a ``(d_out, d_in)`` matrix in ``svd_dtype``; factors are returned in that dtype.

    Args:
        matrix: the weight, any dtype and device.
        svd_dtype: ``"float32"`` or ``"float64"``.
        driver: ``"auto"`` (by shape), ``"gram"`` (Gram eigendecomposition, falling back to LAPACK where that
            is cheaper) or ``"svd"`` (LAPACK).
        cache: where to look the result up and store it (None: no cache).
        key: the weight's :func:`fingerprint` when the caller already has it.
    """
    if driver not in ("auto", "gram", "svd"):
        raise ValueError(f"unknown SVD driver {driver!r}; use 'auto', 'gram' or 'svd'")
    cache_key = None
    if cache is not None:
        cache_key = f"{key or fingerprint(matrix)}-{driver}-{svd_dtype}-{_ALGORITHM}"
        hit = cache.get(cache_key, matrix.device)
        if hit is not None:
            return hit
    work = matrix.detach().to(dtype=_DTYPES[svd_dtype])
    factors = _gram(work, svd_dtype) if _choose(work, driver) == "gram" else None
    u, s, v = factors if factors is not None else _svd(work)
    u, v = _fix_signs(u, v)
    # V is kept as the transposed view of a contiguous V^T: the layout the layers compute with, so they need no
    # copy of their own, and the one the cache stores
    dec = Decomposition(u.contiguous(), s.contiguous(), v.mT.contiguous().mT)
    if cache is not None and cache_key is not None:
        cache.put(cache_key, dec)
    return dec


def fingerprint(matrix: torch.Tensor) -> str:
    """A SHA-256 of a weight's dtype, shape and bytes: identifies the exact base weight an adapter needs."""
    t = matrix.detach().cpu().contiguous()
    h = hashlib.sha256()
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer itself, not a copy
    return h.hexdigest()


#: writes still running in this process, by file: a read of one of them waits for it instead of recomputing
_IN_FLIGHT: dict[str, Future] = {}
_IN_FLIGHT_LOCK = threading.RLock()  # re-entered when a write is done before its callback is added


def wait_for_cache_writes() -> None:
    """Block until every decomposition this process queued for the on-disk cache has been written.

    ``get_vectorfit_model`` returns as soon as the layers are built; the cache files are written on a
    background thread meanwhile (the interpreter waits for them at exit). Call this before copying or
    inspecting the cache directory.
    """
    with _IN_FLIGHT_LOCK:
        pending = list(_IN_FLIGHT.values())
    wait(pending)  # a failed write was warned about; it only costs the cache


class DecompositionCache:
    """Decompositions on disk, one safetensors file per weight, keyed by fingerprint, driver and precision.

    Writes are queued while a model is decomposed and run on a background thread once it is built
    (:meth:`close`; those whose factors the layers do not keep themselves start at once, :meth:`write_now`),
    overlapping whatever follows (:meth:`flush` or :func:`wait_for_cache_writes` waits for them;
    the interpreter does at exit). Each goes to a temporary file that is then renamed, so no process ever reads
    half a file; a read of an entry this process is still writing waits for it. A file that cannot be read is
    ignored (and recomputed).
    """

    def __init__(self, directory: os.PathLike | str) -> None:
        self.directory = Path(directory)
        self._queued: list[tuple[Path, Decomposition]] = []
        self._pending: list[Future] = []
        self._writer: Optional[ThreadPoolExecutor] = None
        self._early: Optional[Future] = None  # the last write started by write_now, before close

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.safetensors"

    def get(self, key: str, device: torch.device) -> Optional[Decomposition]:
        from safetensors.torch import load_file

        path = self._path(key)
        with _IN_FLIGHT_LOCK:
            writing = _IN_FLIGHT.get(str(path))
        if writing is not None:
            wait([writing])
        if not path.is_file():
            return None
        try:
            os.utime(path)  # a hit is a use: the size limit removes the entries used least recently
        except OSError:
            pass
        try:
            t = load_file(str(path), device=str(device))
            # views of the file's private mapping: pages are read as they are used, and nothing is copied
            return Decomposition(t["u"], t["s"], t["vt"].mT)
        except Exception:  # a damaged entry is a miss, never an error
            return None

    def put(self, key: str, dec: Decomposition) -> None:
        """Queue ``dec`` for writing under ``key``; the writes start at :meth:`close` (or :meth:`flush`), so they do
        not compete with the decompositions still to come. ``s`` is copied now (layers train it in place);
        ``U`` and ``V`` are frozen buffers and are written from where they are."""
        self._queued.append((self._path(key), Decomposition(dec.u, dec.s.detach().clone(), dec.v)))

    def close(self) -> None:
        """Start writing what was queued, on a background thread, and return at once (:meth:`flush` or
        :func:`wait_for_cache_writes` wait for the writes; the interpreter does at exit)."""
        queued, self._queued = self._queued, []
        writer, self._writer, self._early = self._writer, None, None
        if not queued and writer is None:
            return
        writer = writer or ThreadPoolExecutor(max_workers=1, thread_name_prefix="vectorfit-svd-cache")
        for path, snapshot in queued:
            self._submit(writer, path, snapshot)
        self._pending.append(writer.submit(self.enforce_limit))  # after this batch's writes, on the same thread
        writer.shutdown(wait=False)  # the thread ends once the queue is written

    def _submit(self, writer: ThreadPoolExecutor, path: Path, snapshot: Decomposition) -> Future:
        with _IN_FLIGHT_LOCK:
            future = writer.submit(self._write, path, snapshot)
            _IN_FLIGHT[str(path)] = future
            future.add_done_callback(lambda f, name=str(path): _done(name, f))
            self._pending.append(future)
        return future

    def write_now(self, dec: Decomposition) -> None:
        """Start writing the queued entry of ``dec`` at once instead of at :meth:`close`.

        For a caller that keeps copies of the factors rather than the factors themselves (a half-precision model
        stores them in its own dtype; SVFit keeps its top slices): until written, the queued float32 factors are
        memory the model does not use, and over a whole model they would add up to twice the half-precision
        factors. Waits for the previous such write first, so at most one is ever pending.
        """
        found = next((i for i, (_, queued) in enumerate(self._queued) if queued.u is dec.u), None)
        if found is None:
            return
        path, snapshot = self._queued.pop(found)
        if self._early is not None:
            wait([self._early])  # keeps the float32 copies waiting for the disk to one decomposition
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vectorfit-svd-cache")
        self._early = self._submit(self._writer, path, snapshot)

    def enforce_limit(self) -> None:
        """Keep the cache within ``VECTORFIT_CACHE_MAX_GB`` (least recently used entries go first)."""
        try:
            enforce_cache_limit(self.directory)
        except Exception as error:  # the limit only costs the cache, never the run
            warnings.warn(f"vectorfit: could not keep the SVD cache within its limit: {error}", RuntimeWarning,
                          stacklevel=1)

    def flush(self) -> None:
        """Write everything queued through this cache and wait until it is on disk."""
        self.close()
        pending, self._pending = self._pending, []
        wait(pending)

    @staticmethod
    def _write(path: Path, dec: Decomposition) -> None:
        from safetensors.torch import save_file

        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"u": dec.u.cpu().contiguous(), "s": dec.s.cpu(), "vt": dec.v.cpu().mT.contiguous()}, str(tmp))
            os.replace(tmp, path)
        except BaseException as error:
            tmp.unlink(missing_ok=True)  # never leave a partial file behind
            if not isinstance(error, OSError):  # a read-only or full disk only costs the cache
                raise


def _done(name: str, future: Future) -> None:
    with _IN_FLIGHT_LOCK:
        if _IN_FLIGHT.get(name) is future:
            del _IN_FLIGHT[name]
    error = future.exception()
    if error is not None:
        warnings.warn(f"vectorfit: could not write the SVD cache entry {name}: {error!r}", RuntimeWarning,
                      stacklevel=1)


def default_cache() -> Optional[DecompositionCache]:
    """The cache under ``$VECTORFIT_CACHE/svd`` unless ``VECTORFIT_SVD_CACHE=0``."""
    if os.environ.get("VECTORFIT_SVD_CACHE", "1").lower() in ("0", "false", "no", "off"):
        return None
    from .assets import cache_dir

    return DecompositionCache(cache_dir() / "svd")
