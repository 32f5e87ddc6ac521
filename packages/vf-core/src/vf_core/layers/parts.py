"""The row slices of a decomposed layer, one class per method.

A layer's output rows are split into parts: a whole matrix is one part; a fused ``qkv`` projection is one
part per role. Each part computes its slice of the output and can rebuild its dense weight for merging.

- :class:`SigmaPart` (VectorFit, https://arxiv.org/abs/2503.19530): ``y = U diag(s) V^T x + b``.
- :class:`SVFitPart` (SVFit, https://arxiv.org/abs/2409.05926): ``y = W_e x + U_r diag(s_r) V_r^T x + b``.
- :class:`SVFTPart` (SVFT, https://arxiv.org/abs/2405.19597): ``y = U (diag(s0) + M) V^T x + b``, ``M`` sparse.
- :class:`FrozenPart`: a slice nothing trains (a fused role left out of ``roles``).

Example:
    >>> import torch
    >>> from vf_core.layers.parts import SigmaPart
    >>> from vf_core.layouts import LinearLayout
    >>> lin = torch.nn.Linear(4, 3)
    >>> part = SigmaPart.from_weight(lin.weight, lin.bias, train_sigma=True, train_bias=True)
    >>> bool(torch.allclose(part(torch.ones(2, 4), LinearLayout(lin)), lin(torch.ones(2, 4)), atol=1e-5))
    True
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch
from torch import nn

from ..svd import Decomposition, decompose

__all__ = ["Part", "FrozenPart", "SigmaPart", "SVFitPart", "SVFTPart", "SIGMA_PARAMETRIZATIONS"]

#: what ``SigmaPart.sigma`` holds: the singular values (the paper) or their relative change
SIGMA_PARAMETRIZATIONS = ("absolute", "relative")


def _param_or_buffer(module: nn.Module, name: str, value: Optional[torch.Tensor], trainable: bool) -> None:
    if value is None:
        setattr(module, name, None)
    elif trainable:
        setattr(module, name, nn.Parameter(value.detach().clone(), requires_grad=True))
    else:
        module.register_buffer(name, value.detach().clone(), persistent=False)


class Part(nn.Module):
    """A slice of output rows. Subclasses define ``project(x, layout, bias)`` and ``dense_weight()``."""

    bias: Optional[torch.Tensor]

    def _init_bias(self, bias: Optional[torch.Tensor], train_bias: bool) -> None:
        _param_or_buffer(self, "bias", bias, train_bias)

    def trainable(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(kind, parameter)`` for every vector of this part that trains."""
        for kind, attr in (("sigma", "sigma"), ("m", "m"), ("bias", "bias")):
            value = getattr(self, attr, None)
            if isinstance(value, nn.Parameter):
                yield kind, value

    def dense_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The slice's current dense weight, computed in ``dtype`` (default: the part's own dtype)."""
        raise NotImplementedError

    def project(self, x: torch.Tensor, layout, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """The slice's output for the layer input ``x`` plus ``bias`` (None: none), the bias fused into a
        matrix product."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, layout) -> torch.Tensor:
        return self.project(x, layout, self.bias)


class FrozenPart(Part):
    """A slice kept as a frozen dense weight."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone(), persistent=False)
        self._init_bias(bias, False)

    def dense_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        return self.weight if dtype is None else self.weight.to(dtype)

    def project(self, x: torch.Tensor, layout, bias: Optional[torch.Tensor]) -> torch.Tensor:
        return layout.apply_dense(x, self.weight, bias)


class SigmaPart(Part):
    """VectorFit: frozen ``U``, ``V``; trainable singular values and/or ``bias``.

    ``sigma_parametrization`` says what the trained vector ``sigma`` holds:

    - ``"absolute"`` (the paper): the singular values themselves, ``s = sigma`` (starts at ``s0``);
    - ``"relative"``: the relative change of each singular value, ``s = s0 * (1 + sigma)`` (starts at 0), so
      that Adam's steps, about the learning rate per step whatever a parameter's size, move every singular
      value in proportion to its size instead of by the same absolute amount (docs/method.md, "stalls").
    """

    def __init__(self, dec: Decomposition, bias: Optional[torch.Tensor], dtype: torch.dtype, *,
                 train_sigma: bool, train_bias: bool, sigma_parametrization: str = "absolute") -> None:
        super().__init__()
        if sigma_parametrization not in SIGMA_PARAMETRIZATIONS:
            raise ValueError(f"sigma_parametrization must be one of {SIGMA_PARAMETRIZATIONS},"
                             f" got {sigma_parametrization!r}")
        self.sigma_parametrization = sigma_parametrization
        self.register_buffer("u", dec.u.to(dtype), persistent=False)
        self.register_buffer("vt", dec.v.mT.contiguous().to(dtype), persistent=False)
        if sigma_parametrization == "relative":
            self.register_buffer("s0", dec.s.to(dtype), persistent=False)
            _param_or_buffer(self, "sigma", torch.zeros_like(dec.s, dtype=dtype), train_sigma)
        else:
            _param_or_buffer(self, "sigma", dec.s.to(dtype), train_sigma)
        self._init_bias(bias, train_bias)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: Optional[torch.Tensor], *, train_sigma: bool,
                    train_bias: bool, svd_dtype: str = "float32",
                    sigma_parametrization: str = "absolute") -> "SigmaPart":
        return cls(decompose(weight, svd_dtype), bias, weight.dtype, train_sigma=train_sigma, train_bias=train_bias,
                   sigma_parametrization=sigma_parametrization)

    def singular_values(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The current singular values ``s`` (differentiable), in ``dtype`` (default: the part's)."""
        sigma = self.sigma if dtype is None else self.sigma.to(dtype)
        if self.sigma_parametrization == "relative":
            s0 = self.s0 if dtype is None else self.s0.to(dtype)
            return s0 + s0 * sigma
        return sigma

    def dense_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        u, vt = (t if dtype is None else t.to(dtype) for t in (self.u, self.vt))
        return (u * self.singular_values(dtype)) @ vt

    def project(self, x: torch.Tensor, layout, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """``U (s * V^T x) + b``, the bias fused into the last matrix product."""
        return layout.apply_out(layout.scale(layout.apply_in(x, self.vt), self.singular_values()), self.u, bias)


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
        _param_or_buffer(self, "sigma", s.to(dtype), True)
        self._init_bias(bias, train_bias)

    def dense_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        u, s, vt, res = (t if dtype is None else t.to(dtype) for t in (self.u, self.sigma, self.vt, self.residual))
        return res + (u * s) @ vt

    def project(self, x: torch.Tensor, layout, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """``W_e x + b + U_r (s * V_r^T x)``: the bias fused into the residual's product, the low-rank term
        added by the last product itself."""
        z = layout.scale(layout.apply_in(x, self.vt), self.sigma)
        return layout.add_out(layout.apply_dense(x, self.residual, bias), z, self.u)


class SVFTPart(Part):
    """SVFT: ``U (diag(s0) + M) V^T`` with the values ``m`` of a sparse ``M`` (fixed pattern) trainable.

    ``M`` starts at zero (the method spec's choice), so the part is exact at initialisation.
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
        dtype = dtype or self.m.dtype
        core = torch.diag(self.s0.to(dtype))
        return core.index_put((self.rows, self.cols), self.m.to(dtype), accumulate=True)

    def dense_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        u, vt = (t if dtype is None else t.to(dtype) for t in (self.u, self.vt))
        return u @ self.coefficient_matrix(dtype) @ vt

    def project(self, x: torch.Tensor, layout, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """``U (diag(s0) + M) V^T x + b``, the bias fused into the last matrix product."""
        z = layout.apply_in(x, self.vt)
        w = layout.scale(z, self.s0)
        plan = self._band_plan()
        if plan is None:  # random / top-k positions
            w = layout.index_add(w, self.rows, layout.scale(layout.gather(z, self.cols), self.m))
        else:  # whole diagonals: w[i] += m[i, i + off] * z[i + off]
            dim = layout.out_dim
            for off, sel, start, length in plan:
                term = layout.scale(z.narrow(dim, start + off, length), self.m[sel])
                w.narrow(dim, start, length).add_(term)
        return layout.apply_out(w, self.u, bias)
