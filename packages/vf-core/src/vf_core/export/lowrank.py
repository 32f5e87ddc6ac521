"""Balanced LoRA factors of a low-rank change ``dW = B0 A0``, whole or truncated to a rank or an energy share.

``B0 = Q_b R_b`` and ``A0^T = Q_a R_a`` (thin QR), then the SVD of the small core ``R_b R_a^T = P S Q^T`` gives
``dW = (Q_b P) S (Q_a Q)^T``: the exact singular values of ``dW``, found without ever forming it densely. LoRA's
``B = Q_b P sqrt(S)`` and ``A = sqrt(S) Q^T Q_a^T`` split ``S`` evenly. Keeping the top ``r`` terms is the best
rank-``r`` approximation of ``dW`` in Frobenius norm (Eckart-Young); its relative error is
``sqrt(sum of the dropped S^2 / sum of all S^2)``. Paper: https://arxiv.org/abs/2503.19530.

Example:
    >>> import torch
    >>> from vf_core.export.lowrank import factor
    >>> b0, a0 = torch.randn(5, 3, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    >>> f = factor(b0, a0)
    >>> f.rank, bool(torch.allclose(f.b @ f.a, b0 @ a0))
    (3, True)
    >>> factor(b0, a0, rank=1).rank
    1
    >>> u, _ = torch.linalg.qr(torch.randn(5, 3, dtype=torch.float64))
    >>> g = factor(u * torch.tensor([0.5, -2.0, 1.0], dtype=torch.float64), u.mT, orthogonal=True)
    >>> [round(x, 6) for x in g.spectrum.tolist()]
    [2.0, 1.0, 0.5]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["Factors", "factor", "rank_for_energy"]


@dataclass
class Factors:
    """``b @ a`` approximates ``dW``; ``spectrum`` holds every singular value of ``dW`` (float64, descending),
    ``rank`` how many were kept."""

    b: torch.Tensor
    a: torch.Tensor
    spectrum: torch.Tensor

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    def relative_error(self) -> float:
        """``||dW - b a||_F / ||dW||_F`` from the dropped singular values (0 when nothing was dropped)."""
        total = float((self.spectrum ** 2).sum())
        dropped = float((self.spectrum[self.rank:] ** 2).sum())
        return (dropped / total) ** 0.5 if total > 0 else 0.0

    def energy_kept(self) -> float:
        total = float((self.spectrum ** 2).sum())
        return 1.0 - float((self.spectrum[self.rank:] ** 2).sum()) / total if total > 0 else 1.0


def rank_for_energy(spectrum: torch.Tensor, energy: float) -> int:
    """The fewest top singular values whose squares hold at least ``energy`` (in ``(0, 1]``) of the total."""
    if spectrum.numel() == 0:
        return 0
    share = torch.cumsum(spectrum.double() ** 2, 0) / (spectrum.double() ** 2).sum().clamp_min(1e-300)
    target = torch.tensor(energy - 1e-12, dtype=share.dtype, device=share.device)
    found = int(torch.searchsorted(share, target).item()) + 1
    return min(found, spectrum.numel())


def _keep(s: torch.Tensor, rank: Optional[int], energy: Optional[float]) -> int:
    if rank is not None:
        return min(int(rank), s.numel())
    if energy is not None:
        return rank_for_energy(s, energy)
    return s.numel()


def factor(b0: torch.Tensor, a0: torch.Tensor, *, rank: Optional[int] = None, energy: Optional[float] = None,
           orthogonal: bool = False) -> Factors:
    """Balanced factors of ``b0 @ a0`` (float64): every term (``rank=None, energy=None``), the top ``rank`` terms,
    or the fewest holding ``energy`` of ``||dW||_F^2``.

    ``orthogonal=True`` says that ``b0``'s columns are orthogonal and ``a0``'s rows orthonormal (``U diag(d)`` and
    ``V^T`` of one decomposed matrix): ``b0 @ a0`` is then its own SVD, and no QR or SVD is needed."""
    b0, a0 = b0.to(torch.float64), a0.to(torch.float64)
    if a0.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.float64, device=a0.device)
        return Factors(b0[:, :0], a0[:0], empty)
    if orthogonal:
        s = torch.linalg.vector_norm(b0, dim=0)
        order = s.argsort(descending=True)
        s = s[order]
        keep = _keep(s, rank, energy)
        root = s[:keep].sqrt()
        b = b0[:, order[:keep]] / root
        return Factors(b, root[:, None] * a0[order[:keep]], s)
    qb, rb = torch.linalg.qr(b0)
    qa, ra = torch.linalg.qr(a0.mT)
    p, s, qt = torch.linalg.svd(rb @ ra.mT, full_matrices=False)
    keep = _keep(s, rank, energy)
    root = s[:keep].sqrt()
    b = (qb @ p[:, :keep]) * root
    a = root[:, None] * (qt[:keep] @ qa.mT)
    return Factors(b, a, s)
