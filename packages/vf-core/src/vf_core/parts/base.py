"""What every method's part shares: :class:`Part` (a slice of a layer's output rows) and :class:`FrozenPart`.

A method is one :class:`Part` subclass in its own module (:mod:`vf_core.parts.vectorfit`,
:mod:`~vf_core.parts.svfit`, :mod:`~vf_core.parts.svft`), registered by name in
:data:`vf_core.parts.PART_TYPES`. A part builds itself from the slice's decomposition and the options
(:meth:`Part.from_decomposition`), computes its slice of the output (:meth:`Part.project`), rebuilds its dense
weight for merging (:meth:`Part.dense_weight`), and names the fixed tensors an adapter must store besides the
trained vectors (:meth:`Part.structure_tensors`, SVFT's sparsity pattern).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Mapping, Optional

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from ..config import VectorFitConfig
    from ..svd import Decomposition

__all__ = ["Part", "FrozenPart", "param_or_buffer"]


def param_or_buffer(module: nn.Module, name: str, value: Optional[torch.Tensor], trainable: bool) -> None:
    """Set ``module.<name>`` to a trainable copy of ``value`` (a parameter), or a frozen one (a buffer)."""
    if value is None:
        setattr(module, name, None)
    elif trainable:
        setattr(module, name, nn.Parameter(value.detach().clone(), requires_grad=True))
    else:
        module.register_buffer(name, value.detach().clone(), persistent=False)


class Part(nn.Module):
    """A slice of output rows. Subclasses define ``project(x, layout, bias)``, ``dense_weight()`` and, to be
    built by :class:`~vf_core.layers.DecomposedLayer`, ``from_decomposition``."""

    bias: Optional[torch.Tensor]
    #: values that stand in for the trained tensors (by attribute: ``sigma``, ``m``, ``bias``) while set: an adapter's
    #: values other than the live parameters', ``s0``/``b0`` under ``disable_adapter()``, or per-example rows
    #: ``(n, size)`` in a mixed-adapter batch. Set and cleared by :mod:`vf_core.selection`; never written into the
    #: parameters, so a backward pass still pending is not disturbed.
    _override: Optional[Mapping[str, torch.Tensor]] = None

    def value(self, attr: str) -> Optional[torch.Tensor]:
        """The tensor to compute with for ``attr`` (``sigma``, ``m``, ``bias``): its override when one is set, else
        the part's own."""
        override = self._override
        if override is not None and attr in override:
            return override[attr]
        return getattr(self, attr)

    @classmethod
    def from_decomposition(cls, dec: "Decomposition", weight: torch.Tensor, bias: Optional[torch.Tensor],
                           options: "VectorFitConfig", name: str) -> "Part":
        """The part of the slice ``weight`` (``(rows, d_in)``, decomposed as ``dec``) and its ``bias``, with the
        method's ``options`` (a :class:`~vf_core.VectorFitConfig`); ``name`` is for error messages."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a decomposition")

    def _init_bias(self, bias: Optional[torch.Tensor], train_bias: bool) -> None:
        param_or_buffer(self, "bias", bias, train_bias)

    def trainable(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(kind, parameter)`` for every vector of this part that trains."""
        for kind, attr in (("sigma", "sigma"), ("m", "m"), ("bias", "bias")):
            value = getattr(self, attr, None)
            if isinstance(value, nn.Parameter):
                yield kind, value

    def structure_tensors(self) -> dict[str, torch.Tensor]:
        """Fixed tensors (not trained, not derived from the base weight) an adapter must store to rebuild this
        part, by name; none by default."""
        return {}

    def restore_structure(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Put back what :meth:`structure_tensors` returned (before the trained values are loaded)."""
        if tensors:
            raise ValueError(f"{type(self).__name__} stores no structure tensors, got {sorted(tensors)}")

    def dense_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The slice's current dense weight, computed in ``dtype`` (default: the part's own dtype)."""
        raise NotImplementedError

    def project(self, x: torch.Tensor, layout, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """The slice's output for the layer input ``x`` plus ``bias`` (None: none), the bias fused into a
        matrix product."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, layout) -> torch.Tensor:
        bias = self.value("bias")
        if bias is not None and bias.dim() > 1:  # one bias per example (a mixed-adapter batch): added after
            return layout.add_bias(self.project(x, layout, None), bias)
        return self.project(x, layout, bias)


class FrozenPart(Part):
    """A slice kept as a frozen dense weight (a fused role left out of ``roles``)."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone(), persistent=False)
        self._init_bias(bias, False)

    def dense_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        return self.weight if dtype is None else self.weight.to(dtype)

    def project(self, x: torch.Tensor, layout, bias: Optional[torch.Tensor]) -> torch.Tensor:
        return layout.apply_dense(x, self.weight, bias)
