"""The one-time decomposition ``W0 = U diag(s0) V^T``, with deterministic signs, and weight fingerprints.

The SVD runs in float32 or float64 whatever the model's dtype. Singular vectors are defined up to sign;
we flip each pair so that the entry of largest magnitude of ``u_i`` is positive, so decomposing the same
weight twice (or on another machine) gives the same ``U`` and ``V``.

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
from typing import NamedTuple

import torch

__all__ = ["Decomposition", "decompose", "fingerprint"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class Decomposition(NamedTuple):
    u: torch.Tensor  # (d_out, k)
    s: torch.Tensor  # (k,)
    v: torch.Tensor  # (d_in, k)


def _fix_signs(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    idx = u.abs().argmax(dim=0)
    signs = torch.sign(u.gather(0, idx[None, :])).squeeze(0)
    signs[signs == 0] = 1
    return u * signs, v * signs


def decompose(matrix: torch.Tensor, svd_dtype: str = "float32") -> Decomposition:
    """Economy SVD of a ``(d_out, d_in)`` matrix in ``svd_dtype``; returns factors in that dtype."""
    work = matrix.detach().to(device=matrix.device, dtype=_DTYPES[svd_dtype])
    u, s, vh = torch.linalg.svd(work, full_matrices=False)
    u, v = _fix_signs(u, vh.mT)
    return Decomposition(u.contiguous(), s.contiguous(), v.contiguous())


def fingerprint(matrix: torch.Tensor) -> str:
    """A SHA-256 of a weight's dtype, shape and bytes: identifies the exact base weight an adapter needs."""
    t = matrix.detach().cpu().contiguous()
    h = hashlib.sha256()
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.dtype.itemsize else b"")
    return h.hexdigest()
