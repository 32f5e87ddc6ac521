"""`DecomposedLayer`: the drop-in replacement of a targeted layer.

It keeps the layer's call signature and output, holds one :mod:`part <vf_core.parts>` per row slice
(one for a plain matrix, one per role for a fused ``qkv`` projection), and can fold itself back into the
original layer type (:meth:`DecomposedLayer.merged`).

Training runs the factored form ``U (s * (V^T x))``, which keeps only what the singular-value gradient
needs. Under ``torch.no_grad()`` in eval mode the dense weight ``U diag(s) V^T`` is rebuilt once and cached
until a trained vector changes, so unmerged inference costs one ordinary matmul.

Example:
    >>> import torch
    >>> from vf_core import VectorFitConfig
    >>> from vf_core.layers import DecomposedLayer, SliceSpec
    >>> lin = torch.nn.Linear(6, 4)
    >>> layer = DecomposedLayer.build(lin, "fc", [SliceSpec(role=None, rows=4)], options=VectorFitConfig())
    >>> bool(torch.allclose(layer(torch.ones(1, 6)), lin(torch.ones(1, 6)), atol=1e-5))
    True
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch import nn

from ..config import VectorFitConfig
from ..experts import expert_index
from ..layouts import WeightLayout, layout_for
from ..parts import PART_TYPES, FrozenPart, Part
from ..svd import DecompositionCache, decompose, fingerprint

__all__ = ["DecomposedLayer", "SliceSpec"]


@dataclass(frozen=True)
class SliceSpec:
    """A slice of output rows: its role (or None), its number of rows, and whether it is decomposed.

    ``index`` gives the weight rows the slice takes, in order, when a role's rows are not contiguous (GPT-NeoX's
    ``query_key_value`` interleaves q, k and v per head); by default each slice takes the next ``rows`` rows. Either
    every slice of a layer has an ``index`` or none has, and together they cover every row exactly once.
    """

    role: Optional[str]
    rows: int
    targeted: bool = True
    index: Optional[tuple[int, ...]] = None


def _shell_of(module: nn.Module) -> nn.Module:
    """A weightless copy of ``module`` (its class and settings), to merge back into."""
    shell = copy.copy(module)
    shell._parameters = OrderedDict((k, None) for k in module._parameters)
    shell._buffers = OrderedDict(module._buffers)
    shell._modules = OrderedDict(module._modules)
    return shell


def _holds(module: nn.Module, tensor: torch.Tensor) -> bool:
    """Whether ``module`` keeps ``tensor``'s memory itself (a buffer or parameter on the same storage)."""
    ptr = tensor.untyped_storage().data_ptr()
    return any(t.untyped_storage().data_ptr() == ptr for t in (*module.buffers(), *module.parameters()))


def _row_inverse(slices: list[SliceSpec], d_out: int, name: str, device) -> Optional[torch.Tensor]:
    """For slices that take rows by index: the position of each weight row in the stacked slices (checked to be a
    permutation); None for contiguous slices."""
    given = [s.index is not None for s in slices]
    if not any(given):
        return None
    if not all(given) or any(len(s.index) != s.rows for s in slices):
        raise ValueError(f"slices of {name!r}: give an index of 'rows' entries for every slice or for none")
    order = torch.tensor([i for s in slices for i in s.index], dtype=torch.long)
    if order.numel() != d_out or not torch.equal(order.sort().values, torch.arange(d_out)):
        raise ValueError(f"the slice indices of {name!r} do not take each of its {d_out} rows exactly once")
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(d_out)
    return inverse.to(device)


class DecomposedLayer(nn.Module):
    """A linear map held as decomposed parts. Built by :meth:`build`; not usually created by hand."""

    #: a mixed-adapter batch in progress (:class:`vf_core.selection.MixedBatch`), set by the wrapper's forward
    mixed = None

    def __init__(self, module_name: str, layout: WeightLayout, parts: "OrderedDict[str, Part]",
                 shell: nn.Module, fingerprint_: str, had_bias: bool,
                 row_inverse: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        self.module_name = module_name
        self.layout = layout
        self.parts = nn.ModuleDict(parts)
        self.fingerprint = fingerprint_
        self.had_bias = had_bias
        object.__setattr__(self, "_shell", shell)  # not a submodule: holds no tensors
        self._dense_cache: Optional[tuple[tuple, torch.Tensor]] = None
        # where each weight row lies in the parts' stacked rows, when slices take rows by index (not saved: the
        # slicing is rebuilt from the model each time)
        self.register_buffer("row_inverse", row_inverse, persistent=False)

    # ----------------------------------------------------------------------------------------- building
    @classmethod
    def build(cls, module: nn.Module, name: str, slices: list[SliceSpec], *,
              options: Optional[VectorFitConfig] = None, method: str = "vectorfit",
              cache: Optional[DecompositionCache] = None, layout: Optional[WeightLayout] = None,
              weight_fingerprint: Optional[str] = None) -> "DecomposedLayer":
        """Decompose ``module`` (left untouched) into a new layer with one part per slice.

        ``options`` is the adapter's :class:`~vf_core.VectorFitConfig` (default: ``VectorFitConfig(method=method)``);
        the part class is ``PART_TYPES[options.method]``. ``cache`` keeps decompositions on disk.
        """
        opts = options if options is not None else VectorFitConfig(method=method)
        layout = layout or layout_for(module, name)
        weight = layout.matrix(module).detach()
        weight_fingerprint = weight_fingerprint or fingerprint(weight)
        bias = getattr(module, "bias", None)
        bias = bias.detach() if isinstance(bias, torch.Tensor) else None
        had_bias = bias is not None
        if bias is None and opts.add_missing_bias and opts.bias_trained:
            bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        parts: OrderedDict[str, Part] = OrderedDict()
        row_inverse = _row_inverse(slices, weight.shape[0], name, weight.device)
        start = 0
        for i, spec in enumerate(slices):
            rows: object = slice(start, start + spec.rows)
            if spec.index is not None:
                rows = torch.tensor(spec.index, dtype=torch.long, device=weight.device)
            start += spec.rows
            key = "main" if len(slices) == 1 else (spec.role or f"slice{i}")
            if key in parts:
                key = f"{key}{i}"
            w, b = weight[rows], None if bias is None else bias[rows]
            part_name = name if len(slices) == 1 else f"{name}[{key}]"
            key_fp = weight_fingerprint if len(slices) == 1 else None
            parts[key] = cls._make_part(w, b, spec, opts, part_name, cache, key_fp)
            parts[key].role = spec.role
        if start != weight.shape[0]:
            raise ValueError(f"slices of {name!r} cover {start} rows, the weight has {weight.shape[0]}")
        return cls(name, layout, parts, _shell_of(module), weight_fingerprint, had_bias, row_inverse)

    @staticmethod
    def _make_part(w: torch.Tensor, b: Optional[torch.Tensor], spec: SliceSpec, opts: VectorFitConfig,
                   name: str, cache: Optional[DecompositionCache] = None, key: Optional[str] = None) -> Part:
        if not spec.targeted:
            return FrozenPart(w, b)
        dec = decompose(w, opts.svd_dtype, opts.svd_driver, cache=cache, key=key)
        part = PART_TYPES[opts.method].from_decomposition(dec, w, b, opts, name)
        if cache is not None and not _holds(part, dec.u):
            cache.write_now(dec)  # the part keeps copies (its own dtype, or slices): free these once written
        return part

    # ----------------------------------------------------------------------------------------- vectors
    def trainable_vectors(self) -> Iterator[tuple[str, Optional[str], str, nn.Parameter]]:
        """``(part_key, role, kind, parameter)`` for every trainable vector."""
        for key, part in self.parts.items():
            role = getattr(part, "role", None)
            for kind, param in part.trainable():
                yield key, role, kind, param

    def part_suffix(self, key: str) -> str:
        """What a part's vectors add to the module's name: nothing for a whole matrix, ``.<key>`` for a slice."""
        return "" if len(self.parts) == 1 else f".{key}"

    def expert_of(self, key: str) -> Optional[int]:
        """The expert index when this layer is one of separate linear experts (``...experts.3.w1``), else None."""
        return expert_index(self.module_name)

    # ----------------------------------------------------------------------------------------- compute
    @property
    def dtype(self) -> torch.dtype:
        """The layer's dtype: its factors' (it follows ``.to()``, ``.half()``, ...)."""
        for part in self.parts.values():
            for t in (*part._buffers.values(), *part._parameters.values()):
                if t is not None and t.is_floating_point():
                    return t.dtype
        return torch.get_default_dtype()

    def _current_weight(self) -> torch.Tensor:
        """``dense_weight`` in the layer's dtype, computed at float32 or better (half precision is only the
        storage)."""
        dtype = self.dtype
        work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else None
        return self.dense_weight(work).to(dtype)

    def dense_bytes(self) -> int:
        """The bytes of the layer's dense weight in its dtype (what one cached dense copy costs), from its parts'
        factor shapes (``u`` rows by ``vt`` columns, or a frozen part's weight), without building it."""
        total = 0
        for part in self.parts.values():
            u, vt, weight = (getattr(part, name, None) for name in ("u", "vt", "weight"))
            if u is not None and vt is not None:
                total += u.shape[0] * vt.shape[-1]
            elif weight is not None:
                total += weight.numel()
        return total * torch.empty((), dtype=self.dtype).element_size()

    def dense_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The current ``(d_out, d_in)`` weight ``U diag(s) V^T`` (stacked over parts), computed in ``dtype``."""
        weights = [part.dense_weight(dtype) for part in self.parts.values()]
        return weights[0] if len(weights) == 1 else self._in_row_order(torch.cat(weights, 0), 0)

    def _in_row_order(self, stacked: torch.Tensor, dim: int) -> torch.Tensor:
        """The parts' stacked rows (or output features along ``dim``) back in the weight's row order."""
        return stacked if self.row_inverse is None else stacked.index_select(dim, self.row_inverse)

    @property
    def weight(self) -> torch.Tensor:
        """The current ``U diag(s) V^T`` in the replaced layer's own layout and dtype (differentiable).

        For model code that reads ``layer.weight`` itself (T5 checks ``wo.weight.dtype``; timm's BEiT calls
        ``F.linear(x, qkv.weight, qkv_bias)``).
        """
        return self.layout.stored(self._current_weight())

    def dense_bias(self) -> Optional[torch.Tensor]:
        biases = [part.value("bias") for part in self.parts.values()]
        if len(biases) == 1 or all(b is None for b in biases):
            return biases[0]
        ref = next(b for b in biases if b is not None)
        return self._in_row_order(torch.cat([b if b is not None else ref.new_zeros(p.dense_weight().shape[0])
                                             for b, p in zip(biases, self.parts.values())]), 0)

    def _cache_key(self) -> tuple:
        """Identity, version and dtype of every tensor the dense weight depends on (biases aside): any in-place
        update (an optimizer step, ``load_state_dict``), replacement or cast changes it. Read straight from the
        parts' tensor dicts (parts hold no submodules): this runs on every call that uses the cached weight."""
        key: list = []
        for owner in (self, *self.parts.values()):
            for group in (owner._parameters, owner._buffers):
                for name, t in group.items():
                    if t is not None and name != "bias":
                        key += (t.data_ptr(), t._version, t.dtype)
        return tuple(key)

    def _dense_cached(self) -> torch.Tensor:
        """``U diag(s) V^T`` (stacked over parts), rebuilt only when a tensor it depends on changed."""
        key = self._cache_key()
        if self._dense_cache is None or self._dense_cache[0] != key:
            with torch.no_grad():
                self._dense_cache = (key, self._current_weight())
        return self._dense_cache[1]

    def _spectrum_trains(self) -> bool:
        """Whether any of ``s``, ``s_r`` or ``M`` takes gradients (biases aside)."""
        return any(t is not None and t.requires_grad and name != "bias"
                   for part in self.parts.values() for name, t in part._parameters.items())

    def train(self, mode: bool = True) -> "DecomposedLayer":
        self._dense_cache = None
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True):
        """``.to()``, ``.half()``, ``.cuda()``...: the cached weight is of the old tensors; drop it now."""
        self._dense_cache = None
        return super()._apply(fn, recurse)

    def _overridden(self) -> bool:
        """Whether some part computes with values other than its parameters (``disable_adapter()``)."""
        return any(part._override is not None for part in self.parts.values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.mixed
        if mixed is not None:
            return self._forward_mixed(x, mixed)
        if not self._overridden() and (not (torch.is_grad_enabled() or self.training) or not self._spectrum_trains()):
            # inference, or only biases train here: one product with the cached dense weight, as in the base layer
            return self.layout.apply_dense(x, self._dense_cached(), self.dense_bias())
        return self._factored(x)

    def _factored(self, x: torch.Tensor) -> torch.Tensor:
        outs = [part(x, self.layout) for part in self.parts.values()]
        if len(outs) == 1:
            return outs[0]
        dim = self.layout.out_dim % outs[0].dim()
        return self._in_row_order(torch.cat(outs, dim=dim), dim)

    def _forward_mixed(self, x: torch.Tensor, mixed) -> torch.Tensor:
        """One factored pass where each example (row of ``x``'s first dimension) computes with its own adapter's
        values: the stacked values of the adapters in the batch, gathered per example
        (:class:`vf_core.selection.MixedBatch`)."""
        if mixed.dense_cache is not None and not torch.is_grad_enabled():
            return self._forward_grouped(x, mixed)
        rows = mixed.rows(x.shape[0], self.module_name)
        saved = [(part, part._override) for part in self.parts.values()]
        try:
            for part in self.parts.values():
                stacked = mixed.stacks.get(id(part))
                if stacked:
                    part._override = {attr: t.index_select(0, rows) for attr, t in stacked.items()}
            return self._factored(x)
        finally:
            for part, override in saved:
                part._override = override

    def _forward_grouped(self, x: torch.Tensor, mixed) -> torch.Tensor:
        """``mixed_batch_strategy="dense"``: each adapter's examples through its own cached dense weight (the arithmetic
        of one adapter; the memory of one dense copy of this layer per adapter)."""
        n = x.shape[0]
        groups = mixed.groups(n, self.module_name)
        out = None
        for a, sel in groups:
            weight, bias = mixed.dense(self, a, x.device)
            if len(groups) == 1:
                return self.layout.apply_dense(x, weight, bias)
            y = self.layout.apply_dense(x.index_select(0, sel), weight, bias)
            if out is None:
                out = y.new_empty((n, *y.shape[1:]))
            out.index_copy_(0, sel, y)
        return out

    # ----------------------------------------------------------------------------------------- merging
    @torch.no_grad()
    def merged(self) -> nn.Module:
        """A plain layer of the original type holding ``U diag(s) V^T`` and the trained bias."""
        module = _shell_of(self._shell)
        self.layout.write(module, self._current_weight())  # merged at float32 or better
        bias = self.dense_bias()
        if "bias" in module._parameters or bias is not None:
            module.bias = None if bias is None else nn.Parameter(bias.to(self.dtype).clone())
        return module

    def extra_repr(self) -> str:
        kinds = ", ".join(f"{k}: {type(p).__name__}" for k, p in self.parts.items())
        return f"{self.module_name!r}, {type(self._shell).__name__}, parts=({kinds})"
