"""The weight change of each decomposed module as exact low-rank factors: ``dW = B A`` and the bias change ``db``.

VectorFit trains the singular values of ``W0 = U diag(s0) V^T`` (https://arxiv.org/abs/2503.19530), so its weight
change is already factored: ``dW = U diag(s - s0) V^T`` has one rank per changed singular value. SVFit's is the top-r
part of the same; SVFT's is ``U M V^T`` with ``M`` the trained sparse matrix, factored by an SVD of that small
``(k, k)`` matrix. A fused projection (GPT-2's ``c_attn``, timm's ``qkv``) holds one part per role: its ``dW`` stacks
the roles' rows, ``B`` block-diagonal over the roles and ``A`` their ``V^T`` rows one under the other, so the whole
module's change is exported under the module's own name.

The values read are the active adapter's, through the parts' accessors (``singular_values()``, ``sigma``, ``m``,
``bias``) and the registry's starting values (:attr:`vf_core.TrainableVector.initial`).

Example:
    >>> import torch
    >>> from vf_core import get_vectorfit_model
    >>> from vf_core.export.deltas import module_deltas
    >>> vf = get_vectorfit_model(torch.nn.Sequential(torch.nn.Linear(6, 4)), target_modules=["0"])
    >>> with torch.no_grad():
    ...     vf.vectors["0.sigma"].parameter[:2] += 0.5
    >>> delta = module_deltas(vf)["0"]
    >>> delta.rank, tuple(delta.b.shape), tuple(delta.a.shape)
    (2, (4, 2), (2, 6))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

from ..errors import ExportError
from ..layers import DecomposedExperts, DecomposedLayer
from ..layouts import Conv1DLayout, Conv2dLayout, LinearLayout
from ..parts import FrozenPart, SigmaPart, SVFitPart, SVFTPart

if TYPE_CHECKING:  # pragma: no cover
    from ..model import VectorFitModel

__all__ = ["ModuleDelta", "module_deltas", "part_delta"]

#: the layer kinds a LoRA adapter can hold, by the layout that reads the weight
_KINDS = {LinearLayout: "linear", Conv1DLayout: "conv1d", Conv2dLayout: "conv2d"}


@dataclass
class ModuleDelta:
    """The change of one decomposed module: ``dW = b @ a`` (float64, ``(d_out, R)`` and ``(R, d_in)``; ``d_in`` is
    ``c_in * kh * kw`` for a convolution) and the bias change ``bias`` (None when no bias changed)."""

    name: str
    kind: str  # "linear", "conv1d" (GPT-2's transposed Conv1D) or "conv2d"
    b: torch.Tensor
    a: torch.Tensor
    bias: Optional[torch.Tensor]
    dtype: torch.dtype  # the module's own dtype, the one the export is written in
    kernel: Optional[tuple[int, ...]] = None  # (c_in, kh, kw) of a convolution
    had_bias: bool = True  # whether the base module has a bias of its own
    orthogonal: bool = False  # b's columns orthogonal, a's rows orthonormal: b @ a is its own SVD

    @property
    def rank(self) -> int:
        """The number of rank-one terms held (changed singular values, summed over a fused module's roles)."""
        return int(self.a.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.b.shape[0]), int(self.a.shape[1])

    def dense(self) -> torch.Tensor:
        """``dW`` as a dense float64 ``(d_out, d_in)`` matrix."""
        return self.b @ self.a


def _initial(vf: "VectorFitModel", name: str, current: torch.Tensor) -> torch.Tensor:
    """The starting value of the trained vector ``name`` (its current value when it does not train)."""
    vectors = vf.vectors
    if name in vectors:
        return vectors[name].initial.detach().to(device=current.device, dtype=torch.float64)
    return current.detach().to(torch.float64)


def part_delta(vf: "VectorFitModel", part, prefix: str) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """``(b, a, db)`` of one part (float64): ``b @ a`` is the part's weight change, ``db`` its bias change (None when
    its bias does not train). ``prefix`` is the part's vector name before the kind (``"encoder.0.q."``)."""
    bias = getattr(part, "bias", None)
    db = None
    if isinstance(bias, torch.nn.Parameter):
        db = bias.detach().to(torch.float64) - _initial(vf, prefix + "bias", bias)
    if isinstance(part, FrozenPart):
        weight = part.dense_weight()
        rows, cols = weight.shape
        empty = {"dtype": torch.float64, "device": weight.device}
        return torch.zeros(rows, 0, **empty), torch.zeros(0, cols, **empty), db
    if isinstance(part, (SigmaPart, SVFitPart)):
        u, vt = part.u.detach().to(torch.float64), part.vt.detach().to(torch.float64)
        if isinstance(part, SigmaPart) and part.sigma_parametrization == "relative":
            s = part.singular_values(torch.float64).detach()
            s0 = part.s0.detach().to(torch.float64) * (1 + _initial(vf, prefix + "sigma", part.sigma))
        else:
            s = part.sigma.detach().to(torch.float64)
            s0 = _initial(vf, prefix + "sigma", part.sigma)
        d = s - s0
        keep = (d != 0).nonzero().flatten()
        keep = keep[d[keep].abs().argsort(descending=True)]
        return u[:, keep] * d[keep], vt[keep], db
    if isinstance(part, SVFTPart):
        k = part.s0.numel()
        m = part.m.detach().to(torch.float64) - _initial(vf, prefix + "m", part.m)
        core = torch.zeros(k, k, dtype=torch.float64, device=m.device)
        core = core.index_put((part.rows, part.cols), m, accumulate=True)
        p, s, qt = torch.linalg.svd(core)
        tol = s.max().item() * k * torch.finfo(torch.float64).eps if s.numel() else 0.0
        r = int((s > tol).sum().item())
        u, vt = part.u.detach().to(torch.float64), part.vt.detach().to(torch.float64)
        return (u @ p[:, :r]) * s[:r], qt[:r] @ vt, db
    raise ExportError(f"cannot export a {type(part).__name__} part to LoRA: only VectorFit, SVFit and SVFT parts"
                      " (and frozen slices) have a known weight change")


def _block(rows: list[torch.Tensor]) -> torch.Tensor:
    """The parts' ``b`` factors as one block-diagonal ``(d_out, R)`` matrix."""
    return torch.block_diag(*rows) if rows else torch.zeros(0, 0, dtype=torch.float64)


def layer_delta(vf: "VectorFitModel", name: str, layer: DecomposedLayer) -> ModuleDelta:
    """The whole module's :class:`ModuleDelta`, its roles' rows put back in the weight's row order."""
    kind = next((k for cls, k in _KINDS.items() if type(layer.layout) is cls), None)
    if kind is None:
        raise ExportError(f"module {name!r} is held through a {type(layer.layout).__name__}, which a PEFT LoRA"
                          " adapter cannot hold (Linear, GPT-2's Conv1D and Conv2d can); leave it out of the"
                          " adapter or merge the model instead")
    if kind == "conv2d" and tuple(getattr(layer.layout, "dilation", (1, 1))) != (1, 1):
        raise ExportError(f"module {name!r} is a dilated Conv2d; PEFT's LoRA convolution has no dilation, so its"
                          " change cannot be exported exactly; merge the model instead")
    bs, as_, dbs = [], [], []
    for key, part in layer.parts.items():
        b, a, db = part_delta(vf, part, f"{name}{layer.part_suffix(key)}.")
        bs.append(b)
        as_.append(a)
        dbs.append(db if db is not None else torch.zeros(b.shape[0], dtype=torch.float64, device=b.device))
    any_bias = any(isinstance(getattr(p, "bias", None), torch.nn.Parameter) for p in layer.parts.values())
    b, a = _block(bs), torch.cat(as_, 0)
    bias = torch.cat(dbs) if any_bias else None
    inverse = layer.row_inverse
    if inverse is not None:  # the parts' stacked rows back in the weight's own row order
        b = b.index_select(0, inverse.to(b.device))
        bias = None if bias is None else bias.index_select(0, inverse.to(bias.device))
    if bias is not None and not bool(bias.any()):
        bias = None
    kernel = tuple(layer.layout.kernel) if kind == "conv2d" else None
    single = sum(x.shape[0] > 0 for x in as_) <= 1 and len(layer.parts) == 1  # one part: U d and V^T (or SVFT's)
    return ModuleDelta(name, kind, b, a, bias, layer.dtype, kernel, bool(layer.had_bias), orthogonal=single)


def module_deltas(vf: "VectorFitModel") -> dict[str, ModuleDelta]:
    """Every decomposed module's change, by module name (relative to the wrapped model), in model order; 3-D expert
    parameters are left out (see :func:`expert_parameters`)."""
    return {name: layer_delta(vf, name, layer) for name, layer in vf.decomposed_layers().items()
            if isinstance(layer, DecomposedLayer)}


def expert_parameters(vf: "VectorFitModel") -> list[str]:
    """The decomposed 3-D expert parameters (which this export does not hold)."""
    return [name for name, layer in vf.decomposed_layers().items() if isinstance(layer, DecomposedExperts)]
