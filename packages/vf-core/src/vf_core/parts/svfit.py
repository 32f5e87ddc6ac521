"""SVFit's part (https://arxiv.org/abs/2409.05926): ``y = W_e x + U_r diag(s_r) V_r^T x + b``, the top-``r``
singular values ``s_r`` trained over a frozen residual ``W_e``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from ..errors import ConfigError
from ..svd import Decomposition
from .base import Part, param_or_buffer

if TYPE_CHECKING:  # pragma: no cover
    from ..config import VectorFitConfig

__all__ = ["SVFitPart", "svfit_rank"]


def svfit_rank(s: torch.Tensor, rank: Optional[int], energy: Optional[float], name: str = "") -> int:
    """The number of top singular values to train: ``rank``, or the fewest holding ``energy`` of the spectrum's
    energy (sum of squares); :class:`ConfigError` when ``rank`` exceeds what the weight has."""
    if rank is not None and rank > s.numel():
        raise ConfigError(f"svfit rank={rank} is larger than module {name!r} allows: its weight has only"
                          f" {s.numel()} singular values; lower 'rank' or use 'energy'", fields=("rank",))
    if energy is not None:
        share = torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum().clamp_min(1e-300)
        target = torch.tensor(energy, dtype=share.dtype, device=share.device) - 1e-12
        found = int(torch.searchsorted(share, target).item()) + 1
        return min(found, s.numel())
    return min(int(rank), s.numel())


class SVFitPart(Part):
    """SVFit: the top-``r`` singular values train; ``U_r``, ``V_r`` and the residual ``W_e`` are frozen."""

    def __init__(self, dec: Decomposition, rank: int, weight: torch.Tensor, bias: Optional[torch.Tensor], *,
                 train_bias: bool) -> None:
        super().__init__()
        dtype = weight.dtype
        u, s, v = dec.u[:, :rank], dec.s[:rank], dec.v[:, :rank]
        top = (u * s) @ v.mT
        residual = weight.detach().to(top.dtype) - top
        # own copies of the top-r slices: a view would keep the whole decomposition (e.g. a cache file) alive
        self.register_buffer("u", u.to(dtype).clone(), persistent=False)
        self.register_buffer("vt", v.mT.to(dtype).clone(), persistent=False)
        self.register_buffer("residual", residual.to(dtype), persistent=False)
        param_or_buffer(self, "sigma", s.to(dtype), True)
        self._init_bias(bias, train_bias)

    @classmethod
    def from_decomposition(cls, dec: Decomposition, weight: torch.Tensor, bias: Optional[torch.Tensor],
                           options: "VectorFitConfig", name: str) -> "SVFitPart":
        rank, energy = options.svfit_rank_or_energy
        return cls(dec, svfit_rank(dec.s, rank, energy, name), weight, bias, train_bias=options.bias_trained)

    def dense_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        u, s, vt, res = (t if dtype is None else t.to(dtype) for t in (self.u, self.value("sigma"), self.vt,
                                                                        self.residual))
        return res + (u * s) @ vt

    def project(self, x: torch.Tensor, layout, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """``W_e x + b + U_r (s * V_r^T x)``: the bias fused into the residual's product, the low-rank term
        added by the last product itself."""
        z = layout.scale(layout.apply_in(x, self.vt), self.value("sigma"))
        return layout.add_out(layout.apply_dense(x, self.residual, bias), z, self.u)
