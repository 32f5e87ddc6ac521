"""Which adapter's values the decomposed layers and the heads compute with, without writing into any parameter.

Paper: https://arxiv.org/abs/2503.19530 (VectorFit). Every adapter trained on one decomposed base shares its ``U`` and
``V``; an adapter is only its vectors (``s``, ``b``, SVFT's ``M`` values) and its heads (``modules_to_save``). So a
layer can compute with other values than its live parameters just by reading them from elsewhere:

- :func:`override_parts` puts values in front of the parts' parameters (:attr:`vf_core.parts.Part._override`), for
  ``disable_adapter()`` (the base values ``s0``, ``b0``): the parameters are never written, so a backward pass still
  pending (a reference pass in the middle of a training step, as preference-tuning trainers do) is not disturbed;
- :class:`MixedBatch` gives each example of a batch its own adapter: every decomposed layer gathers, per example,
  the rows of its adapters' stacked vectors and runs one factored pass over the whole batch
  (``U (s_e * (V^T x)) + b_e``); an expanded batch (beam search, ``num_return_sequences``, or a model that flattens
  ``(batch, tokens)`` before a layer) repeats each example's rows contiguously, as transformers does;
- :func:`route_heads` runs each ``modules_to_save`` module with each adapter's own parameters on its sub-batch
  (``torch.func.functional_call``), or with the base parameters when adapters are disabled.

Example:
    >>> import torch
    >>> from vf_core import get_vectorfit_model
    >>> vf = get_vectorfit_model(torch.nn.Sequential(torch.nn.Linear(3, 3)), target_modules=["0"]).eval()
    >>> with torch.no_grad():
    ...     _ = vf.vectors["0.sigma"].parameter.mul_(2.0)   # the default adapter doubles the singular values
    ...     x = torch.ones(2, 3)
    ...     mixed = vf(x, adapter_names=["default", "__base__"])
    ...     with vf.disable_adapter():
    ...         base = vf(x)
    ...     bool(torch.allclose(mixed[0], vf(x)[0])), bool(torch.allclose(mixed[1], base[1]))
    (True, True)
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch
from torch import nn

from .errors import AdapterUsageError

__all__ = ["MixedBatch", "override_parts", "route_heads", "BASE_ADAPTER"]

#: the name that stands for the base model (no adapter) in ``adapter_names``
BASE_ADAPTER = "__base__"


class MixedBatch:
    """A batch in which example ``i`` computes with adapter ``index[i]``.

    ``stacks`` maps ``id(part)`` to that part's values by attribute, stacked over the adapters in the batch
    (``(adapters, size)``). :meth:`rows` gives the adapter of each row of a layer's input.
    """

    def __init__(self, index: torch.Tensor, stacks: dict[int, dict[str, torch.Tensor]], *,
                 names: Sequence[str] = (), active: Optional[str] = None,
                 dense_cache: Optional[dict[str, dict[int, tuple]]] = None) -> None:
        self.index = index
        self.stacks = stacks
        self.names = list(names)
        self.active = active
        #: ``mixed_batch_strategy="dense"``: adapter name -> id(layer) -> (key, dense weight, dense bias)
        self.dense_cache = dense_cache
        self._rows: dict[int, torch.Tensor] = {index.numel(): index}
        self._groups: dict[int, list[tuple[int, torch.Tensor]]] = {}

    def groups(self, n: int, where: str) -> list[tuple[int, torch.Tensor]]:
        """``(adapter index, rows)`` of every adapter with rows among ``n``."""
        found = self._groups.get(n)
        if found is None:
            rows = self.rows(n, where)
            found = self._groups[n] = [(a, sel) for a in range(len(self.names))
                                       if (sel := (rows == a).nonzero().squeeze(1)).numel()]
        return found

    def dense(self, layer: Any, a: int, device: torch.device) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Adapter ``a``'s dense weight and bias for ``layer`` (a :class:`~vf_core.layers.DecomposedLayer`), cached
        across batches in :attr:`dense_cache` (the active adapter's entry follows its parameters' versions)."""
        name = self.names[a]
        cache = self.dense_cache.setdefault(name, {})
        key: tuple = (device, layer.dtype)
        if name == self.active:
            key += tuple((t.data_ptr(), t._version) for part in layer.parts.values()
                         for t in part._parameters.values() if t is not None)
        hit = cache.get(id(layer))
        if hit is not None and hit[0] == key:
            return hit[1], hit[2]
        restore = override_parts({part: {attr: t[a] for attr, t in self.stacks[id(part)].items()}
                                  for part in layer.parts.values() if self.stacks.get(id(part))})
        try:
            with torch.no_grad():
                weight, bias = layer._current_weight(), layer.dense_bias()
        finally:
            restore()
        cache[id(layer)] = (key, weight, None if bias is None else bias.detach().clone())
        return cache[id(layer)][1], cache[id(layer)][2]

    @property
    def size(self) -> int:
        return self.index.numel()

    def rows(self, n: int, where: str) -> torch.Tensor:
        """The adapter index of each of ``n`` rows: one per example, or each example's repeated contiguously."""
        found = self._rows.get(n)
        if found is not None:
            return found
        size = self.size
        if n % size:
            raise AdapterUsageError(
                f"module {where!r} got an input of {n} rows in a batch of {size} examples with one adapter name"
                " each; a mixed-adapter batch needs the examples along the first dimension of every decomposed"
                " layer's input (possibly repeated, as beam search does)")
        found = self._rows[n] = self.index.repeat_interleave(n // size)
        return found


def override_parts(overrides: Mapping[Any, Mapping[str, torch.Tensor]]) -> Callable[[], None]:
    """Set ``part._override`` for each ``part -> values`` (key: the part); returns the function that restores the
    previous overrides."""
    saved = [(part, part._override) for part in overrides]
    for part, values in overrides.items():
        part._override = dict(values)

    def restore() -> None:
        for part, previous in saved:
            part._override = previous

    return restore


def _first_rows(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Optional[int]:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return None


def _take(value: Any, n: int, sel: torch.Tensor) -> Any:
    return value.index_select(0, sel) if isinstance(value, torch.Tensor) and value.dim() > 0 and \
        value.shape[0] == n else value


@contextlib.contextmanager
def route_heads(model: nn.Module, heads: Sequence[str], params: Sequence[Optional[Mapping[str, Mapping[str,
                torch.Tensor]]]], batch: Optional[MixedBatch] = None) -> Iterator[None]:
    """Within the block, each head module (a name in ``model``) runs with ``params[a][head]`` (its parameters by
    name; None: its own live parameters) for the examples of adapter ``a`` in ``batch``, or with ``params[0]`` for
    all when ``batch`` is None. The module's ``forward`` is wrapped on the instance for the block's duration."""
    patched = []
    try:
        for head in heads:
            module = model.get_submodule(head)
            previous = module.__dict__.get("forward")
            patched.append((module, previous))
            original = getattr(previous, "__vf_original__", None) or previous or type(module).forward.__get__(module)
            module.forward = _routed(module, head, original, params, batch)
        yield
    finally:
        for module, previous in reversed(patched):
            if previous is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous


def _routed(module: nn.Module, head: str, original: Callable, params, batch: Optional[MixedBatch]) -> Callable:
    state = {"inside": False}

    def call(values: Optional[Mapping[str, torch.Tensor]], args, kwargs):
        if values is None:
            return original(*args, **kwargs)
        state["inside"] = True
        try:
            return torch.func.functional_call(module, dict(values), tuple(args), dict(kwargs), strict=False)
        finally:
            state["inside"] = False

    def forward(*args: Any, **kwargs: Any) -> Any:
        if state["inside"]:
            return original(*args, **kwargs)
        if batch is None:
            return call(None if params[0] is None else params[0][head], args, kwargs)
        n = _first_rows(args, kwargs)
        if n is None:
            raise AdapterUsageError(f"head {head!r} got no batched tensor input in a mixed-adapter batch")
        rows = batch.rows(n, head)
        out = None
        for a in torch.unique(rows).tolist():
            sel = (rows == a).nonzero().squeeze(1)
            sub = call(None if params[a] is None else params[a][head], [_take(v, n, sel) for v in args],
                       {k: _take(v, n, sel) for k, v in kwargs.items()})
            if not isinstance(sub, torch.Tensor):
                raise AdapterUsageError(f"head {head!r} returns a {type(sub).__name__}; in a mixed-adapter batch a"
                                        " head (modules_to_save) must return one tensor")
            if out is None:
                out = sub.new_zeros((n, *sub.shape[1:]))
            out = out.index_copy(0, sel, sub)
        return out

    forward.__vf_original__ = original  # type: ignore[attr-defined]
    return forward
