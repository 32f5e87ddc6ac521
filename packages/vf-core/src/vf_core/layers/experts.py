"""`DecomposedExperts`: a 3-D expert parameter held as one decomposed part per expert (and half).

The experts module keeps its own forward (transformers' eager loop, ``grouped_mm`` or ``batched_mm``): it reads
``self.gate_up_proj`` as before. That attribute becomes a :mod:`torch.nn.utils.parametrize` parametrization whose
value is rebuilt from the parts, ``W[e] = U_e diag(s_e) V_e^T`` (stacked over the halves, then the experts, in the
stored layout), so the original 3-D tensor is not kept. The parts are the methods' own
(:data:`vf_core.parts.PART_TYPES`): VectorFit's ``s`` and ``b``, SVFit's ``s_r``, SVFT's ``M``, one vector each per
expert and half. A trained ``(experts, out)`` bias parameter (gpt-oss's ``gate_up_proj_bias``) is parametrized the
same way from the parts' biases.

Cost: in training the whole 3-D tensor is rebuilt once per forward of the experts module (the value is shared by
every read within that forward, whatever the experts implementation), and its graph lives until the backward pass,
about one dense copy of the experts' weights per layer; gradient checkpointing rebuilds it instead. In eval mode
without gradients the rebuilt tensor is cached until a trained vector changes, so unmerged inference holds one
copy of the weights besides the factors. :meth:`DecomposedExperts.merged` gives plain parameters back
(``merge_and_unload``). An experts module without a bias parameter gets none (``add_missing_bias`` does not apply:
its forward would not read it).

Example:
    >>> import torch
    >>> from vf_core import VectorFitConfig
    >>> from vf_core.experts import ExpertParam
    >>> from vf_core.layers import DecomposedExperts
    >>> experts = torch.nn.Module()
    >>> experts.gate_up_proj = torch.nn.Parameter(torch.randn(3, 8, 4))
    >>> before = experts.gate_up_proj.detach().clone()
    >>> layout = ExpertParam("f1").resolve(experts, "gate_up_proj", "gate_up_proj")
    >>> layer = DecomposedExperts.build(experts, "gate_up_proj", layout, options=VectorFitConfig())
    >>> _ = layer.install(experts)
    >>> bool(torch.allclose(experts.gate_up_proj, before, atol=1e-5)), sorted(layer.parts)[:2]
    (True, ['e0_gate', 'e0_up'])
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator, Optional

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..config import VectorFitConfig
from ..experts import ExpertLayout
from ..parts import Part
from ..svd import DecompositionCache, fingerprint
from .layer import DecomposedLayer, SliceSpec

__all__ = ["DecomposedExperts", "PlainExpertParams"]


@dataclass
class PlainExpertParams:
    """The plain parameters of an experts module that a :class:`DecomposedExperts` stands for (what it replaced,
    or its merge): attribute name -> parameter (the 3-D weight, and the bias when that is trained)."""

    tensors: dict[str, nn.Parameter] = field(default_factory=dict)


def _own_class(owner: nn.Module) -> None:
    """Give a parametrized ``owner`` a class of its own before a parametrization is removed from it.

    :mod:`torch.nn.utils.parametrize` puts the properties on a class made for the module, which a deep copy of the
    module shares; removing a parametrization deletes the property from that class, so without this, merging a
    deep copy would break the original.
    """
    cls = type(owner)
    if not parametrize.is_parametrized(owner):
        return
    namespace = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    owner.__class__ = type(cls.__name__, cls.__bases__, namespace)


class _ExpertBias(nn.Module):
    """The parametrization of a trained ``(experts, out)`` bias: the parts' biases, stacked."""

    def __init__(self, experts: "DecomposedExperts") -> None:
        super().__init__()
        object.__setattr__(self, "_experts", experts)  # not a submodule: its tensors are registered once

    def right_inverse(self, value: torch.Tensor) -> tuple:
        return self._experts.right_inverse(value)

    def forward(self) -> torch.Tensor:
        return self._experts.current("bias")


class DecomposedExperts(nn.Module):
    """A 3-D expert parameter held as parts (one per expert, or per expert and half). Built by :meth:`build`,
    put in place by :meth:`install` (a parametrization of the experts module); not usually created by hand."""

    def __init__(self, name: str, layout: ExpertLayout, parts: "OrderedDict[str, Part]",
                 labels: dict[str, tuple[int, Optional[str]]], fingerprint_: str, dtype: torch.dtype,
                 bias_trained: bool) -> None:
        super().__init__()
        self.module_name = name
        self.layout = layout
        self.parts = nn.ModuleDict(parts)
        self.fingerprint = fingerprint_
        self.bias_trained = bias_trained
        self._labels = labels
        self._by_expert: list[list[str]] = [[] for _ in range(layout.experts)]
        for key, (expert, _) in labels.items():
            self._by_expert[expert].append(key)
        self._dtype = dtype
        self._installed = False
        self._order: list[str] = []
        self._scoped: Optional[dict[tuple, torch.Tensor]] = None  # values shared within one forward of the owner
        self._cached: dict[str, tuple[tuple, torch.Tensor]] = {}  # values kept while no gradient is recorded

    # ----------------------------------------------------------------------------------------- building
    @classmethod
    def build(cls, owner: nn.Module, name: str, layout: ExpertLayout, *, options: Optional[VectorFitConfig] = None,
              cache: Optional[DecompositionCache] = None,
              weight_fingerprint: Optional[str] = None) -> "DecomposedExperts":
        """Decompose every expert's matrix of ``owner.<layout.attr>`` (left untouched) into one part per expert and
        half; ``options`` is the adapter's :class:`~vf_core.VectorFitConfig` (its method, SVD and bias options)."""
        opts = options if options is not None else VectorFitConfig()
        stored = owner._parameters[layout.attr].detach()
        mats = stored.mT if layout.transposed else stored  # (experts, out, in)
        bias = owner._parameters.get(layout.bias) if layout.bias else None
        train_bias = bias is not None and opts.bias_trained
        halves = layout.halves or (None,)
        rows = layout.rows_per_half
        parts: OrderedDict[str, Part] = OrderedDict()
        labels: dict[str, tuple[int, Optional[str]]] = {}
        for expert in range(layout.experts):
            for i, half in enumerate(halves):
                if half is None:
                    index = slice(None)
                elif layout.interleaved:
                    index = slice(i, None, len(halves))
                else:
                    index = slice(i * rows, (i + 1) * rows)
                w = mats[expert, index]
                b = bias.detach()[expert, index] if train_bias else None
                key = f"e{expert}" if half is None else f"e{expert}_{half}"
                label = f"{name}[{expert}]" + ("" if half is None else f".{half}")
                spec = SliceSpec(role=layout.role, rows=w.shape[0])
                parts[key] = DecomposedLayer._make_part(w, b, spec, opts, label, cache)
                parts[key].role = layout.role
                labels[key] = (expert, half)
        return cls(name, layout, parts, labels, weight_fingerprint or fingerprint(stored), stored.dtype, train_bias)

    # ----------------------------------------------------------------------------------------- vectors
    def trainable_vectors(self) -> Iterator[tuple[str, Optional[str], str, nn.Parameter]]:
        """``(part_key, role, kind, parameter)`` for every trainable vector."""
        for key, part in self.parts.items():
            role = getattr(part, "role", None)
            for kind, param in part.trainable():
                yield key, role, kind, param

    def part_suffix(self, key: str) -> str:
        """What a part's vectors add to the parameter's name: ``[3]``, or ``[3].gate`` for a half."""
        expert, half = self._labels[key]
        return f"[{expert}]" + ("" if half is None else f".{half}")

    def expert_of(self, key: str) -> Optional[int]:
        """The expert index of a part."""
        return self._labels[key][0]

    # ----------------------------------------------------------------------------------------- compute
    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the rebuilt tensor: the parts' (it follows ``.to()``, ``.half()``...)."""
        for part in self.parts.values():
            for t in (*part._buffers.values(), *part._parameters.values()):
                if t is not None and t.is_floating_point():
                    return t.dtype
        return self._dtype

    def _assemble(self, pieces: list[torch.Tensor]) -> torch.Tensor:
        """One expert's rows from its halves' rows (stacked, or interleaved row by row)."""
        if len(pieces) == 1:
            return pieces[0]
        if self.layout.interleaved:
            return torch.stack(pieces, 1).reshape(-1, *pieces[0].shape[1:])
        return torch.cat(pieces, 0)

    def dense_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The current 3-D weight in its stored layout, computed in ``dtype`` (default: the parts')."""
        mats = []
        for keys in self._by_expert:
            w = self._assemble([self.parts[k].dense_weight(dtype) for k in keys])
            mats.append(w.mT if self.layout.transposed else w)
        return torch.stack(mats)

    def dense_bias(self) -> Optional[torch.Tensor]:
        """The current ``(experts, out)`` bias, or None when the bias is not trained here."""
        if not self.bias_trained:
            return None
        return torch.stack([self._assemble([self.parts[k].value("bias") for k in keys]) for keys in self._by_expert])

    def _rebuild(self, what: str) -> torch.Tensor:
        if what == "bias":
            return self.dense_bias()
        dtype = self.dtype
        work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else None
        return self.dense_weight(work).to(dtype)  # half precision is only the storage

    def _cache_key(self, what: str) -> tuple:
        key: list = []
        for part in self.parts.values():
            for group in (part._parameters, part._buffers):
                for name, t in group.items():
                    if t is not None and (name == "bias") == (what == "bias"):
                        key += (t.data_ptr(), t._version, t.dtype)
        return tuple(key)

    def current(self, what: str = "weight") -> torch.Tensor:
        """The value the experts module reads (``"weight"`` or ``"bias"``). In eval mode without gradients it is
        cached until a trained vector changes (unmerged inference); otherwise it is rebuilt once per forward of the
        experts module, whatever reads it how often within that forward, and dropped after it (training keeps no
        dense copy beyond what the backward pass needs)."""
        grad = torch.is_grad_enabled()
        if any(part._override is not None for part in self.parts.values()):  # disable_adapter(): not cached
            return self._rebuild(what)
        if not grad and not self.training:
            key = self._cache_key(what)
            hit = self._cached.get(what)
            if hit is None or hit[0] != key:
                hit = (key, self._rebuild(what))
                self._cached[what] = hit
            return hit[1]
        if self._scoped is not None:
            value = self._scoped.get((what, grad))
            if value is None:
                value = self._scoped[(what, grad)] = self._rebuild(what)
            return value
        return self._rebuild(what)

    def forward(self) -> torch.Tensor:
        return self.current("weight")

    def right_inverse(self, value: torch.Tensor) -> tuple:
        """Registration keeps no copy of the original tensor; assigning a new one later is refused."""
        if self._installed:
            raise RuntimeError(f"{self.module_name!r} is decomposed by VectorFit and cannot be assigned; call"
                               " merge_and_unload() (or unload()) first")
        return ()

    def train(self, mode: bool = True) -> "DecomposedExperts":
        self._cached = {}
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True):
        self._cached, self._scoped = {}, None
        return super()._apply(fn, recurse)

    def _enter(self, module: nn.Module, args) -> None:
        self._scoped = {}

    def _leave(self, module: nn.Module, args, output) -> None:
        self._scoped = None

    # ----------------------------------------------------------------------------------------- in place
    def install(self, owner: nn.Module) -> PlainExpertParams:
        """Parametrize ``owner.<attr>`` (and its trained bias) by this layer; returns the parameters it replaced."""
        attr, bias_attr = self.layout.attr, self.layout.bias if self.bias_trained else None
        previous = [p[0] for p in owner.parametrizations.values()
                    if isinstance(p[0], DecomposedExperts)] if parametrize.is_parametrized(owner) else []
        self._order = previous[0]._order if previous else list(owner._parameters)
        replaced = PlainExpertParams({attr: owner._parameters[attr]})
        if bias_attr:
            replaced.tensors[bias_attr] = owner._parameters[bias_attr]
        self._installed = False
        parametrize.register_parametrization(owner, attr, self)
        try:
            if bias_attr:
                parametrize.register_parametrization(owner, bias_attr, _ExpertBias(self))
        except Exception:
            self._remove(owner, replaced)
            raise
        self._installed = True
        owner.register_forward_pre_hook(self._enter)
        owner.register_forward_hook(self._leave, always_call=True)
        return replaced

    def uninstall(self, owner: nn.Module, plain: PlainExpertParams) -> None:
        """Put plain parameters back in place of this layer (in the owner's original parameter order)."""
        for hooks in (owner._forward_pre_hooks, owner._forward_hooks):
            for hook_id, hook in list(hooks.items()):  # by owner, not by handle: a deep copy keeps working
                if getattr(hook, "__self__", None) is self:
                    del hooks[hook_id]
                    owner._forward_hooks_always_called.pop(hook_id, None)
        self._remove(owner, plain)
        self._installed = False

    def _remove(self, owner: nn.Module, plain: PlainExpertParams) -> None:
        _own_class(owner)
        for attr, value in plain.tensors.items():
            if parametrize.is_parametrized(owner, attr):
                # the parametrization holds no original: say what to leave in place ourselves
                lst = owner.parametrizations[attr]
                lst.is_tensor, lst.original = True, value
                parametrize.remove_parametrizations(owner, attr, leave_parametrized=False)
            else:
                setattr(owner, attr, value)
        order = {n: i for i, n in enumerate(self._order)}
        params = sorted(owner._parameters.items(), key=lambda kv: order.get(kv[0], len(order)))
        owner._parameters.clear()
        owner._parameters.update(params)

    # ----------------------------------------------------------------------------------------- merging
    @torch.no_grad()
    def merged(self) -> PlainExpertParams:
        """Plain parameters holding the current ``U_e diag(s_e) V_e^T`` (and the trained bias), for
        :meth:`uninstall`."""
        out = PlainExpertParams({self.layout.attr: nn.Parameter(self._rebuild("weight").clone())})
        if self.bias_trained:
            out.tensors[self.layout.bias] = nn.Parameter(self._rebuild("bias").to(self.dtype).clone())
        return out

    def extra_repr(self) -> str:
        lay = self.layout
        shape = (lay.experts, lay.d_in, lay.d_out) if lay.transposed else (lay.experts, lay.d_out, lay.d_in)
        halves = f", halves={list(lay.halves)}" + (" interleaved" if lay.interleaved else "") if lay.halves else ""
        return f"{self.module_name!r}, shape={shape}{halves}, parts={len(self.parts)}"
