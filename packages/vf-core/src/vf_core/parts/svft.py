"""SVFT's part (https://arxiv.org/abs/2405.19597): ``y = U (diag(s0) + M) V^T x + b``, the values ``m`` of a
sparse ``M`` (a fixed pattern, :mod:`vf_core.parts.patterns`) trained."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional

import torch
from torch import nn

from ..svd import Decomposition
from .base import Part
from .patterns import sparsity_pattern

if TYPE_CHECKING:  # pragma: no cover
    from ..config import VectorFitConfig

__all__ = ["SVFTPart"]


class SVFTPart(Part):
    """SVFT: ``U (diag(s0) + M) V^T`` with the values ``m`` of a sparse ``M`` (fixed pattern) trainable.

    ``M`` starts at zero (the method spec's choice), so the part is exact at initialisation. The pattern
    (``rows``, ``cols``) is stored with the adapter (:meth:`structure_tensors`).
    """

    def __init__(self, dec: Decomposition, rows: torch.Tensor, cols: torch.Tensor, bias: Optional[torch.Tensor],
                 dtype: torch.dtype, *, train_bias: bool) -> None:
        super().__init__()
        self.register_buffer("u", dec.u.to(dtype), persistent=False)
        self.register_buffer("vt", dec.v.mT.contiguous().to(dtype), persistent=False)
        self.register_buffer("s0", dec.s.to(dtype), persistent=False)
        device = dec.u.device  # patterns are drawn on the CPU; the part lives with its factors
        self.register_buffer("rows", rows.long().to(device), persistent=False)
        self.register_buffer("cols", cols.long().to(device), persistent=False)
        self.m = nn.Parameter(torch.zeros(rows.numel(), dtype=dtype, device=device))
        self._init_bias(bias, train_bias)
        self._diagonals: Optional[list] = None

    @classmethod
    def from_decomposition(cls, dec: Decomposition, weight: torch.Tensor, bias: Optional[torch.Tensor],
                           options: "VectorFitConfig", name: str) -> "SVFTPart":
        rows, cols = sparsity_pattern(options.pattern, k=dec.s.numel(), off_diagonals=options.off_diagonals,
                                      seed=options.seed, name=name, u=dec.u, v=dec.v)
        return cls(dec, rows, cols, bias, weight.dtype, train_bias=options.bias_trained)

    def structure_tensors(self) -> dict[str, torch.Tensor]:
        """The sparsity pattern: ``rows`` and ``cols`` of the entries of ``M``."""
        return {"rows": self.rows, "cols": self.cols}

    def restore_structure(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Take a saved pattern (and a zero ``m`` of its size): a ``random`` or ``topk`` pattern drawn again could
        differ."""
        if set(tensors) != {"rows", "cols"}:
            raise KeyError(f"SVFT's pattern needs 'rows' and 'cols', got {sorted(tensors)}")
        device = self.u.device
        self.rows = tensors["rows"].long().to(device, copy=True)
        self.cols = tensors["cols"].long().to(device, copy=True)
        self.m = nn.Parameter(torch.zeros(self.rows.numel(), dtype=self.m.dtype, device=device))
        self._diagonals = None

    def _band_plan(self) -> Optional[list]:
        """For a pattern made of whole diagonals (plain, banded): ``(offset, m indices, row start, length)``.

        Whole diagonals apply as a few shifted, contiguous multiply-adds instead of a gather and a scatter.
        """
        key = (self.rows.data_ptr(), self.cols.data_ptr(), self.rows.numel())
        if self._diagonals is not None and self._diagonals[0] == key:
            return self._diagonals[1]
        k = self.s0.numel()
        offsets = (self.cols - self.rows).tolist()
        plan: Optional[list] = []
        for off in sorted(set(offsets)):
            sel = [i for i, o in enumerate(offsets) if o == off]
            start = max(0, -off)
            length = k - abs(off)
            rows = self.rows[sel]
            if len(sel) != length or rows[0].item() != start or not torch.equal(
                    rows, torch.arange(start, start + length, device=rows.device)):
                plan = None
                break
            plan.append((off, torch.tensor(sel, device=self.rows.device), start, length))
        self._diagonals = (key, plan)
        return plan

    def coefficient_matrix(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """``diag(s0) + M`` as a dense ``(k, k)`` matrix."""
        m = self.value("m")
        dtype = dtype or m.dtype
        core = torch.diag(self.s0.to(dtype))
        return core.index_put((self.rows, self.cols), m.to(dtype), accumulate=True)

    def dense_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        u, vt = (t if dtype is None else t.to(dtype) for t in (self.u, self.vt))
        return u @ self.coefficient_matrix(dtype) @ vt

    def project(self, x: torch.Tensor, layout, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """``U (diag(s0) + M) V^T x + b``, the bias fused into the last matrix product."""
        z = layout.apply_in(x, self.vt)
        w = layout.scale(z, self.s0)
        plan = self._band_plan()
        m = self.value("m")  # (entries,), or (n, entries) per example in a mixed-adapter batch
        if plan is None:  # random / top-k positions
            w = layout.index_add(w, self.rows, layout.scale(layout.gather(z, self.cols), m))
        else:  # whole diagonals: w[i] += m[i, i + off] * z[i + off]
            dim = layout.out_dim
            for off, sel, start, length in plan:
                term = layout.scale(z.narrow(dim, start + off, length), m[..., sel])
                w.narrow(dim, start, length).add_(term)
        return layout.apply_out(w, self.u, bias)
