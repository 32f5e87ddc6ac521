"""VectorFit's part (https://arxiv.org/abs/2503.19530): ``y = U diag(s) V^T x + b``, ``s`` and/or ``b`` trained.

Example:
    >>> import torch
    >>> from vf_core.parts import SigmaPart
    >>> from vf_core.layouts import LinearLayout
    >>> lin = torch.nn.Linear(4, 3)
    >>> part = SigmaPart.from_weight(lin.weight, lin.bias, train_sigma=True, train_bias=True)
    >>> bool(torch.allclose(part(torch.ones(2, 4), LinearLayout(lin)), lin(torch.ones(2, 4)), atol=1e-5))
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from ..svd import Decomposition, decompose
from .base import Part, param_or_buffer

if TYPE_CHECKING:  # pragma: no cover
    from ..config import VectorFitConfig

__all__ = ["SigmaPart", "SIGMA_PARAMETRIZATIONS"]

#: what ``SigmaPart.sigma`` holds: the singular values (the paper) or their relative change
SIGMA_PARAMETRIZATIONS = ("absolute", "relative")


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
            param_or_buffer(self, "sigma", torch.zeros_like(dec.s, dtype=dtype), train_sigma)
        else:
            param_or_buffer(self, "sigma", dec.s.to(dtype), train_sigma)
        self._init_bias(bias, train_bias)

    @classmethod
    def from_decomposition(cls, dec: Decomposition, weight: torch.Tensor, bias: Optional[torch.Tensor],
                           options: "VectorFitConfig", name: str) -> "SigmaPart":
        return cls(dec, bias, weight.dtype, train_sigma=options.sigma_trained, train_bias=options.bias_trained,
                   sigma_parametrization=options.sigma_parametrization)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: Optional[torch.Tensor], *, train_sigma: bool,
                    train_bias: bool, svd_dtype: str = "float32",
                    sigma_parametrization: str = "absolute") -> "SigmaPart":
        return cls(decompose(weight, svd_dtype), bias, weight.dtype, train_sigma=train_sigma, train_bias=train_bias,
                   sigma_parametrization=sigma_parametrization)

    def singular_values(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The current singular values ``s`` (differentiable), in ``dtype`` (default: the part's)."""
        sigma = self.value("sigma")
        sigma = sigma if dtype is None else sigma.to(dtype)
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
