"""How each decomposable layer type stores its weight, and how to apply factors to an input.

A :class:`WeightLayout` reads a module's weight as a ``(d_out, d_in)`` matrix ``W`` and applies
``V^T``-like and ``U``-like factors to the layer's input, so every method works the same on
``nn.Linear``, GPT-2's ``Conv1D`` (weight stored ``(d_in, d_out)``) and ``nn.Conv2d`` (a ``k x k`` kernel is
read as ``(d_out, d_in * k * k)``; a ``1 x 1`` convolution is a linear map per pixel).

New layer types (quantised linears, say) plug in through the ``vectorfit_weight_layouts`` hook.

Example:
    >>> import torch
    >>> from vf_core.layouts import layout_for
    >>> lin = torch.nn.Linear(4, 3)
    >>> layout = layout_for(lin, "lin")
    >>> tuple(layout.matrix(lin).shape)
    (3, 4)
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UnsupportedLayerError
from .plugins import list_weight_layouts

__all__ = ["WeightLayout", "LinearLayout", "Conv1DLayout", "Conv2dLayout", "BUILTIN_LAYOUTS", "layout_for"]


class WeightLayout:
    """Base class. Subclasses implement ``handles`` and the matrix / apply methods."""

    #: the dimension of an output tensor that holds the output features
    out_dim: int = -1

    def __init__(self, module: nn.Module) -> None:
        self.module_type = type(module)

    @classmethod
    def handles(cls, module: nn.Module) -> bool:
        raise NotImplementedError

    def matrix(self, module: nn.Module) -> torch.Tensor:
        """The weight as ``(d_out, d_in)`` (a view where possible)."""
        raise NotImplementedError

    def write(self, module: nn.Module, matrix: torch.Tensor) -> None:
        """Store a ``(d_out, d_in)`` matrix back into ``module``'s weight, in its own layout and dtype."""
        raise NotImplementedError

    def stored(self, matrix: torch.Tensor) -> torch.Tensor:
        """A ``(d_out, d_in)`` matrix in the layer's own weight layout (the inverse of :meth:`matrix`)."""
        return matrix

    def apply_dense(self, x: torch.Tensor, matrix: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``W x (+ bias)`` for the layer's input ``x``, the bias fused into the product."""
        raise NotImplementedError

    def apply_in(self, x: torch.Tensor, vt: torch.Tensor) -> torch.Tensor:
        """``V^T x`` with ``vt`` of shape ``(r, d_in)``: the input projected on the right singular vectors."""
        return self.apply_dense(x, vt)

    def apply_out(self, z: torch.Tensor, u: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``U z (+ bias)`` with ``u`` of shape ``(d_out, r)`` and ``z`` the output of :meth:`apply_in` (the bias
        is fused into the matrix product)."""
        return F.linear(z, u, bias)

    def add_out(self, y: torch.Tensor, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``y + U z``, the addition fused into the matrix product (one GEMM writing onto ``y``)."""
        flat = torch.addmm(y.reshape(-1, y.shape[-1]), z.reshape(-1, z.shape[-1]), u.mT)
        return flat.view(y.shape)

    def scale(self, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """``diag(s) z`` along the feature dimension; ``s`` of shape ``(n, k)`` scales each example (the first
        dimension of ``z``) by its own row (a mixed-adapter batch)."""
        return z * self.along_features(s, z)

    def add_bias(self, y: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``y + bias`` along the feature dimension; a ``(n, d_out)`` bias adds one row per example."""
        return y + self.along_features(bias, y)

    def along_features(self, v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``v`` shaped to broadcast along the feature dimension (:attr:`out_dim`) of ``like``: a vector ``(k,)``
        for every example, or ``(n, k)``, one row per example (``like.shape[0] == n``)."""
        dim = self.out_dim % like.dim()
        shape = [1] * like.dim()
        shape[dim] = v.shape[-1]
        if v.dim() == 2:
            shape[0] = v.shape[0]
        elif dim == like.dim() - 1:
            return v
        return v.view(shape)

    def gather(self, z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Select features ``index`` of ``z`` along the feature dimension."""
        return z.index_select(self.out_dim, index)

    def index_add(self, z: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return z.index_add(self.out_dim, index, values)


class LinearLayout(WeightLayout):
    """``nn.Linear``: weight ``(d_out, d_in)``, ``y = x W^T + b``."""

    @classmethod
    def handles(cls, module: nn.Module) -> bool:
        return isinstance(module, nn.Linear)

    def matrix(self, module: nn.Module) -> torch.Tensor:
        return module.weight

    def write(self, module: nn.Module, matrix: torch.Tensor) -> None:
        module.weight = nn.Parameter(matrix.contiguous())

    def apply_dense(self, x: torch.Tensor, matrix: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        return F.linear(x, matrix, bias)


class Conv1DLayout(WeightLayout):
    """transformers' GPT-2-style ``Conv1D``: weight stored transposed, ``(d_in, d_out)``; ``y = x W + b``.

    Recognised by duck typing (class name ``Conv1D`` with an ``nf`` attribute) so vf-core never imports
    transformers.
    """

    @classmethod
    def handles(cls, module: nn.Module) -> bool:
        return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None

    def matrix(self, module: nn.Module) -> torch.Tensor:
        return module.weight.t()

    def write(self, module: nn.Module, matrix: torch.Tensor) -> None:
        module.weight = nn.Parameter(matrix.t().contiguous())

    def stored(self, matrix: torch.Tensor) -> torch.Tensor:
        return matrix.t()

    def apply_dense(self, x: torch.Tensor, matrix: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        return F.linear(x, matrix, bias)


class Conv2dLayout(WeightLayout):
    """``nn.Conv2d`` with ``groups == 1``: kernel ``(d_out, c_in, kh, kw)`` read as ``(d_out, c_in*kh*kw)``.

    ``V^T`` is applied as a convolution with the layer's stride, padding and dilation, then ``U`` as a
    ``1 x 1`` convolution, so the factored form is exact for any kernel size.
    """

    out_dim = 1

    def __init__(self, module: nn.Module) -> None:
        super().__init__(module)
        self.kernel = tuple(module.weight.shape[1:])
        self.stride, self.padding, self.dilation = module.stride, module.padding, module.dilation
        if module.padding_mode != "zeros":
            raise UnsupportedLayerError(
                f"Conv2d with padding_mode={module.padding_mode!r} is not supported; only 'zeros' is"
            )

    @classmethod
    def handles(cls, module: nn.Module) -> bool:
        return isinstance(module, nn.Conv2d)

    def matrix(self, module: nn.Module) -> torch.Tensor:
        return module.weight.reshape(module.weight.shape[0], -1)

    def write(self, module: nn.Module, matrix: torch.Tensor) -> None:
        module.weight = nn.Parameter(matrix.reshape(matrix.shape[0], *self.kernel).contiguous())

    def stored(self, matrix: torch.Tensor) -> torch.Tensor:
        return matrix.reshape(matrix.shape[0], *self.kernel)

    def apply_dense(self, x: torch.Tensor, matrix: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        weight = matrix.reshape(matrix.shape[0], *self.kernel)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)

    def apply_out(self, z: torch.Tensor, u: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        return F.conv2d(z, u[:, :, None, None], bias)

    def add_out(self, y: torch.Tensor, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return y + self.apply_out(z, u)

    def along_features(self, v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Channels first, batched ``(n, c, h, w)`` or not ``(c, h, w)``; a per-example ``(n, c)`` needs a batch."""
        if v.dim() == 2:
            return v.view(*v.shape, *([1] * (like.dim() - 2)))
        return v[:, None, None]



#: the layer types vf-core decomposes by itself; plugins' layouts (``vectorfit_weight_layouts``) are tried first
BUILTIN_LAYOUTS: tuple[type[WeightLayout], ...] = (LinearLayout, Conv1DLayout, Conv2dLayout)


def layout_for(module: nn.Module, name: str) -> WeightLayout:
    """The layout of ``module``, or :class:`UnsupportedLayerError` naming the module and the known types."""
    layouts = [*list_weight_layouts(), *BUILTIN_LAYOUTS]
    for layout_cls in layouts:  # pluggy calls later registrations (third-party plugins) first
        if layout_cls.handles(module):
            if isinstance(module, nn.Conv2d) and module.groups != 1:
                raise UnsupportedLayerError(
                    f"module {name!r} is a grouped/depthwise Conv2d (groups={module.groups}), which has no"
                    " single weight matrix to decompose; leave it out of target_modules"
                )
            return layout_cls(module)
    known = ", ".join(sorted({cls.__name__.replace("Layout", "") for cls in layouts}))
    raise UnsupportedLayerError(
        f"module {name!r} is a {type(module).__name__}, which cannot be decomposed (known layer types: {known});"
        " remove it from target_modules, or register a WeightLayout for it through the"
        " 'vectorfit_weight_layouts' hook"
    )
