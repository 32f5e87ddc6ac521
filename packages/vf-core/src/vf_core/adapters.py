"""Several adapters on one decomposed base, with PEFT's names: the part of :class:`~vf_core.VectorFitModel` that
manages them.

Paper: https://arxiv.org/abs/2503.19530 (VectorFit). Every adapter trained from the same base shares its ``U`` and
``V``: an adapter is only its vectors (``s``, ``b``, SVFT's ``M`` values) and its own heads (``modules_to_save``), a
few hundred KB. The model holds one decomposition and any number of adapters:

- the *active* adapter lives in the model's parameters: it is what ``forward`` computes with, what trains (the
  Trainer, AVF), what ``state_dict()`` holds (under the same keys as with one adapter);
- the others are kept as tensors beside it and move into the parameters only by :meth:`set_adapter`; they never
  train;
- ``model(..., adapter_names=[...])`` runs a batch in which each example has its own adapter (``"__base__"``: none),
  in one factored pass (:mod:`vf_core.selection`); ``generate`` takes ``adapter_names`` too;
- ``disable_adapter()`` is a switch the layers read (the base values ``s0``, ``b0`` and the base heads), never a
  write into the parameters.

The adapter a model is created or loaded with is named ``default``, as in PEFT. ``save_pretrained`` writes PEFT's
layout: ``default`` at the top of the folder, each other adapter in a sub-folder named after it.

Example:
    >>> import copy, tempfile, torch
    >>> from vf_core import VectorFitModel, get_vectorfit_model
    >>> torch.manual_seed(0) and None
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    >>> pristine = copy.deepcopy(net)
    >>> vf = get_vectorfit_model(net, target_modules=["0", "2"]).eval()
    >>> with torch.no_grad():
    ...     _ = vf.vectors["0.sigma"].parameter.mul_(1.5)    # "train" the default adapter
    >>> vf.add_adapter("task_b")                             # a second adapter, at the base values
    >>> vf.adapters, vf.active_adapter
    (['default', 'task_b'], 'default')
    >>> x = torch.randn(3, 4)
    >>> with torch.no_grad():
    ...     mixed = vf(x, adapter_names=["default", "task_b", "__base__"])   # one adapter per example
    ...     alone = vf(x)                                                    # the active adapter for all
    ...     with vf.disable_adapter():
    ...         base = vf(x)
    >>> bool(torch.allclose(mixed[0], alone[0], atol=1e-6)), bool(torch.allclose(mixed[2], base[2], atol=1e-6))
    (True, True)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     vf.save_pretrained(d)                                # d/ (default) and d/task_b/
    ...     again = VectorFitModel.from_pretrained(pristine, d)
    ...     again.load_adapter(f"{d}/task_b", "task_b")
    >>> again.adapters
    ['default', 'task_b']
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .config import VectorFitConfig
from .errors import AdapterUsageError, IncompatibleAdapterError, UnknownAdapterError
from .selection import BASE_ADAPTER, MixedBatch, override_parts, route_heads

if TYPE_CHECKING:  # pragma: no cover
    from .parts import Part

__all__ = ["AdapterMixin", "DEFAULT_ADAPTER", "BASE_ADAPTER", "AdapterNames"]

#: the name of the adapter a model is created or loaded with (PEFT's)
DEFAULT_ADAPTER = "default"

#: config fields that do not change the decomposition an adapter needs
_FREE_FIELDS = ("svd_cache",)

#: names of transformers' PEFT integration (``PeftAdapterMixin``) that mean nothing for a VectorFit model; every other
#: name of it is defined here
_PEFT_ONLY = ("enable_peft_hotswap", "_prepare_peft_hotswap_kwargs", "_dispatch_accelerate_model")

#: the input names whose first dimension is the batch, in the order they are looked for
_BATCH_INPUTS = ("input_ids", "inputs_embeds", "pixel_values", "input_values", "input_features", "inputs", "x",
                 "sample", "hidden_states")


class AdapterNames(list):
    """A list of adapter names that can also be called: ``vf.active_adapters`` (PEFT's property) and
    ``vf.active_adapters()`` (transformers' method) both work."""

    def __call__(self) -> list[str]:
        return list(self)


def _structure(config: VectorFitConfig) -> dict[str, Any]:
    """What of ``config`` decides the decomposition and the trained tensors."""
    out = config.model_dump(mode="json")
    for field in _FREE_FIELDS:
        out.pop(field, None)
    out["train_bias"], out["train_sigma"] = config.bias_trained, config.sigma_trained
    out.pop("modules_to_save", None)  # compared on their own (None means the family's)
    if config.method != "svfit":
        out.pop("rank", None), out.pop("energy", None)
    else:
        out["rank"], out["energy"] = config.svfit_rank_or_energy
    if config.method != "svft":
        out.pop("pattern", None), out.pop("off_diagonals", None), out.pop("seed", None)
    elif config.pattern != "random":
        out.pop("seed", None)
    if config.method != "vectorfit":
        out.pop("sigma_parametrization", None)
    return out


def _batch_size(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Optional[int]:
    for value in args:
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    for name in (*_BATCH_INPUTS, *kwargs):
        value = kwargs.get(name)
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return None


class AdapterMixin:
    """Adapter management for :class:`~vf_core.VectorFitModel` (see the module's docstring)."""

    # set by VectorFitModel.__init__ through _init_adapters
    model: nn.Module
    vectorfit_config: VectorFitConfig
    modules_to_save: list[str]

    def _init_adapters(self, name: str = DEFAULT_ADAPTER) -> None:
        d = self.__dict__
        d["_active_adapter"] = name
        d["_adapter_configs"] = {name: self.vectorfit_config}
        d["_adapter_store"] = {}  # name -> {key: tensor} of every adapter but the active one
        # the base values (s0, b0, SVFT's zero M, the heads as they were): "__base__" and disable_adapter()
        base = {f"vector::{v.name}": v.initial for v in self.vectors}
        base.update({f"module::{n}": p.detach().clone() for n, p in self.head_parameters().items()})
        d["_base_values"] = base
        d["_disabled"] = None
        d["_mixed_dense"] = {}  # mixed_batch_strategy="dense": adapter -> layer -> its dense weight and bias

    #: how a mixed-adapter batch runs: ``"factored"`` (one factored pass ``U (s_e * (V^T x)) + b_e`` over the whole
    #: batch, each example gathering its adapter's vectors: no memory beyond the vectors), ``"dense"`` (each
    #: adapter's examples through its own dense weight ``U diag(s_a) V^T``, built once and kept: the arithmetic of
    #: one adapter, at the memory of one dense copy of the targeted weights per adapter in the batch) or ``"auto"``
    #: (the default: ``"dense"`` while those copies stay within :attr:`mixed_dense_max_bytes`, else ``"factored"``).
    mixed_batch_strategy: str = "auto"
    #: ``"auto"``'s memory bound for the dense copies of a mixed batch's adapters: ``VECTORFIT_MIXED_DENSE_MAX_GB``
    #: (GB, default 2)
    mixed_dense_max_bytes: int = int(float(os.environ.get("VECTORFIT_MIXED_DENSE_MAX_GB", "2")) * 1024**3)

    def _adapters_changed(self) -> None:
        self.__dict__["_mixed_dense"] = {}

    # ------------------------------------------------------------------------------------------ names
    @property
    def active_adapter(self) -> str:
        """The adapter ``forward`` computes with, which trains and which ``state_dict()`` holds."""
        return self.__dict__["_active_adapter"]

    @property
    def active_adapters(self) -> AdapterNames:
        """``[active_adapter]``; callable too, as transformers' ``active_adapters()`` is."""
        return AdapterNames([self.active_adapter])

    @property
    def adapters(self) -> list[str]:
        """The names of the adapters the model holds, in the order they came."""
        return list(self.__dict__["_adapter_configs"])

    def adapter_config(self, adapter_name: Optional[str] = None) -> VectorFitConfig:
        """The config of an adapter (default: the active one)."""
        return self.__dict__["_adapter_configs"][self._known(adapter_name or self.active_adapter)]

    def _known(self, name: str, *, base: bool = False) -> str:
        if name in self.__dict__["_adapter_configs"] or (base and name == BASE_ADAPTER):
            return name
        names = ", ".join(map(repr, self.adapters + ([BASE_ADAPTER] if base else [])))
        raise UnknownAdapterError(f"no adapter named {name!r} in this model; it holds {names}"
                                  " (add one with add_adapter or load_adapter)")

    def _new_name(self, name: Any) -> str:
        if not isinstance(name, str) or not name or name == BASE_ADAPTER or "/" in name or name.startswith("."):
            raise AdapterUsageError(f"adapter name {name!r} is not usable: give a non-empty string without '/', other"
                                    f" than {BASE_ADAPTER!r}")
        if name in self.__dict__["_adapter_configs"]:
            raise AdapterUsageError(f"the model already holds an adapter named {name!r}; delete_adapter({name!r})"
                                    " first, or choose another name")
        return name

    # ------------------------------------------------------------------------------------------ values
    def _live_slots(self) -> dict[str, nn.Parameter]:
        """The active adapter's tensors by key (``vector::<name>``, ``module::<head param>``): the parameters."""
        out = {f"vector::{v.name}": v.parameter for v in self.vectors}
        out.update({f"module::{n}": p for n, p in self.head_parameters().items()})
        return out

    def _part_slots(self) -> Iterator[tuple["Part", str, str]]:
        """``(part, attribute, key)`` for every trained tensor of every decomposed layer."""
        for name, layer in self.decomposed_layers().items():
            for key, part in layer.parts.items():
                for kind, _ in part.trainable():
                    yield part, kind, f"vector::{name}{layer.part_suffix(key)}.{kind}"

    def _value(self, adapter: str, key: str, live: torch.Tensor) -> torch.Tensor:
        """Adapter ``adapter``'s tensor ``key`` (``live``: the parameter it takes the place of)."""
        if adapter == self.active_adapter:
            return live
        source = self.__dict__["_base_values"] if adapter == BASE_ADAPTER else self.__dict__["_adapter_store"][adapter]
        return source[key].to(device=live.device, dtype=live.dtype)

    def _head_values(self, adapter: str) -> Optional[dict[str, dict[str, torch.Tensor]]]:
        """``{head: {param: tensor}}`` of an adapter's heads; None for the active adapter (the modules' own)."""
        if adapter == self.active_adapter:
            return None
        out: dict[str, dict[str, torch.Tensor]] = {head: {} for head in self.modules_to_save}
        for full, live in self.head_parameters().items():
            head = next(h for h in self.modules_to_save if full.startswith(h + "."))
            out[head][full[len(head) + 1:]] = self._value(adapter, f"module::{full}", live)
        return out

    def _values_of(self, adapter: str) -> dict[str, torch.Tensor]:
        """Every tensor of an adapter by key (detached copies for the active one)."""
        if adapter == self.active_adapter:
            return {k: p.detach().clone() for k, p in self._live_slots().items()}
        return {k: t.clone() for k, t in self.__dict__["_adapter_store"][adapter].items()}

    def get_adapter_state_dict(self, adapter_name: Optional[str] = None,
                               state_dict: Optional[dict] = None) -> dict[str, torch.Tensor]:
        """An adapter's tensors by key, as its ``adapter_model.safetensors`` holds them (default: the active one).
        ``state_dict`` is accepted for transformers' signature and ignored."""
        return self._values_of(self._known(adapter_name or self.active_adapter))

    # ------------------------------------------------------------------------------------------ managing
    def _check_compatible(self, name: str, config: VectorFitConfig) -> None:
        ours, theirs = _structure(self.vectorfit_config), _structure(config)
        diff = [f"{k}: {ours.get(k)!r} here, {theirs.get(k)!r} in {name!r}" for k in sorted(set(ours) | set(theirs))
                if ours.get(k) != theirs.get(k)]
        heads = config.modules_to_save
        if heads is not None and set(heads) != set(self.modules_to_save):
            diff.append(f"modules_to_save: {self.modules_to_save!r} here, {heads!r} in {name!r}")
        if diff:
            raise IncompatibleAdapterError(
                f"adapter {name!r} needs another decomposition than this model's adapters share ({'; '.join(diff)});"
                " every adapter of one model has the same targets, method and trained tensors. Give it a model of"
                " its own (get_vectorfit_model or VectorFitModel.from_pretrained on a fresh base)")

    def add_adapter(self, adapter_name: str, config: Optional[Union[VectorFitConfig, dict]] = None) -> None:
        """A new adapter ``adapter_name`` at the base values (``s0``, ``b0``, the heads as the base had them), on the
        same decomposition. It does not become active: :meth:`set_adapter` it to train it.

        ``config`` (default: the model's) must ask for the same decomposition and trained tensors, else
        :class:`~vf_core.errors.IncompatibleAdapterError`.
        """
        name = self._new_name(adapter_name)
        if config is None:
            config = self.vectorfit_config
        elif isinstance(config, dict):
            config = VectorFitConfig(**config)
        if not isinstance(config, VectorFitConfig):
            raise IncompatibleAdapterError(f"add_adapter takes a VectorFitConfig (or a dict of its fields), not a"
                                           f" {type(config).__name__}; PEFT configs describe another method")
        self._check_compatible(name, config)
        live = self._live_slots()
        base = self.__dict__["_base_values"]
        self.__dict__["_adapter_store"][name] = {k: base[k].to(device=p.device, dtype=p.dtype).clone()
                                                 for k, p in live.items()}
        self.__dict__["_adapter_configs"][name] = config
        self._adapters_changed()

    def load_adapter(self, directory: Union[str, os.PathLike], adapter_name: Optional[str] = None, *,
                     is_trainable: bool = False, **kwargs: Any) -> None:
        """Load the adapter saved in ``directory`` (by :meth:`save_pretrained`) as ``adapter_name`` beside the others;
        it does not become active. Nothing of the model changes if this raises: a fingerprint mismatch (another base)
        is :class:`~vf_core.AdapterMismatchError`, another decomposition
        :class:`~vf_core.errors.IncompatibleAdapterError`.

        ``adapter_name`` defaults to ``default`` when the model has none of that name. ``is_trainable`` is accepted for
        PEFT's signature: the values train once :meth:`set_adapter` makes the adapter active.
        """
        from .saving import read_adapter_values

        if kwargs:
            raise TypeError(f"load_adapter() got options it does not take: {', '.join(sorted(kwargs))} (VectorFit"
                            " adapters load from a local folder; PEFT's hub options do not apply)")
        if adapter_name is None:
            if DEFAULT_ADAPTER in self.__dict__["_adapter_configs"]:
                raise AdapterUsageError("the model already holds the 'default' adapter: give load_adapter an"
                                        " adapter_name for this one")
            adapter_name = DEFAULT_ADAPTER
        name = self._new_name(adapter_name)
        config, values = read_adapter_values(self, directory, {k: p.detach() for k, p in self._live_slots().items()})
        self._check_compatible(name, config)
        self.__dict__["_adapter_store"][name] = values
        self.__dict__["_adapter_configs"][name] = config
        self._adapters_changed()

    @torch.no_grad()
    def set_adapter(self, adapter_name: Union[str, Sequence[str]]) -> None:
        """Make ``adapter_name`` the active adapter: its values move into the parameters (the previous active
        adapter's are kept aside). Make an optimizer for it after this call: one made before holds the previous
        adapter's moments."""
        if isinstance(adapter_name, (list, tuple)):
            if len(adapter_name) != 1:
                raise AdapterUsageError(f"one adapter is active at a time, got {list(adapter_name)!r}; mix adapters"
                                        " per example with model(..., adapter_names=[...])")
            adapter_name = adapter_name[0]
        name = self._known(adapter_name)
        previous = self.active_adapter
        if name == previous:
            return
        store = self.__dict__["_adapter_store"]
        live = self._live_slots()
        kept = {k: p.detach().clone() for k, p in live.items()}
        for key, param in live.items():
            param.copy_(store[name][key])
        del store[name]
        store[previous] = kept
        self.__dict__["_active_adapter"] = name
        self.__dict__["vectorfit_config"] = self.__dict__["_adapter_configs"][name]
        self._adapters_changed()

    def delete_adapter(self, adapter_name: Union[str, Sequence[str]]) -> None:
        """Remove an adapter; deleting the active one makes the first remaining adapter active."""
        names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
        for name in names:
            self._known(name)
        if len(set(names)) >= len(self.adapters):
            raise AdapterUsageError(f"cannot delete {names!r}: a VectorFit model keeps at least one adapter (use"
                                    " unload() for the base model)")
        for name in names:
            if name == self.active_adapter:
                self.set_adapter(next(n for n in self.adapters if n not in names))
            self.__dict__["_adapter_store"].pop(name, None)
            del self.__dict__["_adapter_configs"][name]
        self._adapters_changed()

    # ------------------------------------------------------------------------------------------ adapters off
    def _disable(self, on: bool) -> None:
        if on and self.__dict__["_disabled"] is None:
            overrides: dict[Any, dict[str, torch.Tensor]] = {}
            for part, attr, key in self._part_slots():
                live = getattr(part, attr)
                overrides.setdefault(part, {})[attr] = self._value(BASE_ADAPTER, key, live)
            restore = override_parts(overrides)
            heads = contextlib.ExitStack()
            try:
                heads.enter_context(route_heads(self.model, self.modules_to_save, [self._head_values(BASE_ADAPTER)]))
            except BaseException:
                restore()
                raise
            self.__dict__["_disabled"] = (restore, heads)
        elif not on and self.__dict__["_disabled"] is not None:
            restore, heads = self.__dict__["_disabled"]
            self.__dict__["_disabled"] = None
            restore()
            heads.close()

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Within the block the model computes the base function: every decomposed layer reads the base values
        (``s0``, ``b0``) and every head its base parameters, in place of the active adapter's. Nothing is written
        into the parameters, so a backward pass still pending (a reference pass in the middle of a training step,
        as DPO does) is not disturbed.

        Example:
            >>> import torch
            >>> from vf_core import get_vectorfit_model
            >>> vf = get_vectorfit_model(torch.nn.Sequential(torch.nn.Linear(3, 3)), target_modules=["0"])
            >>> with vf.disable_adapter():
            ...     _ = vf(torch.ones(1, 3))
        """
        if self.__dict__["_disabled"] is not None:
            yield
            return
        self._disable(True)
        try:
            yield
        finally:
            self._disable(False)

    def disable_adapters(self) -> None:
        """Compute the base function until :meth:`enable_adapters` (transformers' name; see
        :meth:`disable_adapter`)."""
        self._disable(True)

    def enable_adapters(self) -> None:
        """Compute with the active adapter again after :meth:`disable_adapters`."""
        self._disable(False)

    # ------------------------------------------------------------------------------------------ mixed batches
    @contextlib.contextmanager
    def _mixed_batch(self, adapter_names: Any, batch_size: Optional[int]) -> Iterator[None]:
        from .layers import DecomposedExperts, DecomposedLayer

        if isinstance(adapter_names, str) or not isinstance(adapter_names, (list, tuple)) or \
                not all(isinstance(n, str) for n in adapter_names):
            raise AdapterUsageError("adapter_names takes a list of adapter names, one per example of the batch"
                                    f" ({BASE_ADAPTER!r} for the base model), not {adapter_names!r}")
        if batch_size is None:
            raise AdapterUsageError("adapter_names was given, but no batched tensor input was found to tell the batch"
                                    " size")
        if len(adapter_names) != batch_size:
            raise AdapterUsageError(f"adapter_names has {len(adapter_names)} names for a batch of {batch_size}"
                                    " examples; give one name per example")
        if self.training:
            raise AdapterUsageError("mixed-adapter batches (adapter_names=) are for inference: call .eval() first;"
                                    " to train an adapter, set_adapter() it")
        for name in dict.fromkeys(adapter_names):
            self._known(name, base=True)
        layers = self.decomposed_layers()
        routed = [n for n, l in layers.items() if isinstance(l, DecomposedExperts)
                  or any(l.expert_of(k) is not None for k in l.parts)]
        if routed:
            raise AdapterUsageError(f"mixed-adapter batches do not work on mixture-of-experts layers ({routed[0]!r}):"
                                    " their tokens are routed away from their examples; run one adapter at a time")
        used = list(dict.fromkeys(adapter_names))
        device = next((p.device for p in self._live_slots().values()), torch.device("cpu"))
        index = torch.tensor([used.index(n) for n in adapter_names], dtype=torch.long, device=device)
        stacks: dict[int, dict[str, torch.Tensor]] = {}
        for part, attr, key in self._part_slots():
            live = getattr(part, attr)
            stacks.setdefault(id(part), {})[attr] = torch.stack([self._value(n, key, live) for n in used])
        strategy = self.mixed_batch_strategy
        if strategy not in ("auto", "factored", "dense"):
            raise AdapterUsageError(f"mixed_batch_strategy is {strategy!r}; use 'auto', 'factored' or 'dense'")
        if strategy == "auto":
            copies = sum(layer.dense_bytes() for layer in layers.values() if isinstance(layer, DecomposedLayer))
            strategy = "dense" if copies * len(used) <= self.mixed_dense_max_bytes else "factored"
        dense = self.__dict__["_mixed_dense"] if strategy == "dense" else None
        batch = MixedBatch(index, stacks, names=used, active=self.active_adapter, dense_cache=dense)
        plain = [layer for layer in layers.values() if isinstance(layer, DecomposedLayer)]
        try:
            for layer in plain:
                layer.mixed = batch
            with route_heads(self.model, self.modules_to_save, [self._head_values(n) for n in used], batch):
                yield
        finally:
            for layer in plain:
                layer.mixed = None

    def _call_model(self, args: tuple, kwargs: dict) -> Any:
        names = kwargs.pop("adapter_names", None)
        if names is None:
            return self.model(*args, **kwargs)
        with self._mixed_batch(names, _batch_size(args, kwargs)):
            return self.model(*args, **kwargs)

    def _generate(self, generate: Any) -> Any:
        """The wrapped model's ``generate``, taking ``adapter_names=`` (one per prompt; beam search and
        ``num_return_sequences`` repeat them with their prompts)."""

        def wrapped(*args: Any, adapter_names: Optional[Sequence[str]] = None, **kwargs: Any) -> Any:
            if adapter_names is None:
                return generate(*args, **kwargs)
            with self._mixed_batch(adapter_names, _batch_size(args, kwargs)):
                return generate(*args, **kwargs)

        wrapped.__doc__ = getattr(generate, "__doc__", None)
        return wrapped

    # ------------------------------------------------------------------------------------------ counting, hub
    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """transformers' name: the original model's parameters, or with ``only_trainable`` what trains (as
        :meth:`get_nb_trainable_parameters`); ``exclude_embeddings`` leaves out embedding tables."""
        trainable, total = self.get_nb_trainable_parameters()
        count = trainable if only_trainable else total
        if exclude_embeddings:
            count -= sum(m.weight.numel() for m in self.model.modules() if isinstance(m, nn.Embedding)
                         and (m.weight.requires_grad or not only_trainable))
        return count

    def push_to_hub(self, repo_id: str, *, commit_message: str = "Upload VectorFit adapter",
                    private: Optional[bool] = None, token: Optional[str] = None, revision: Optional[str] = None,
                    create_pr: bool = False, selected_adapters: Optional[Sequence[str]] = None) -> Any:
        """Upload the adapter folder (:meth:`save_pretrained`: configs and safetensors, never the base weights) to
        the Hugging Face hub repository ``repo_id`` (created if missing), through ``huggingface_hub``; returns its
        commit info."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, selected_adapters=selected_adapters, is_main_process=True)
            return api.upload_folder(repo_id=getattr(url, "repo_id", repo_id), folder_path=tmp, repo_type="model",
                                     commit_message=commit_message, revision=revision, create_pr=create_pr)

    def _save_adapters(self, directory: Union[str, os.PathLike], selected: Optional[Sequence[str]],
                       write: bool) -> None:
        from .saving import save_adapter

        names = self.adapters if selected is None else [self._known(n) for n in selected]
        for name in names:
            out = Path(directory) if name == DEFAULT_ADAPTER else Path(directory) / name
            if name == self.active_adapter:
                save_adapter(self, out, write=write, config=self.adapter_config(name))
            else:
                tensors = self._values_of(name)
                tensors.update({k: v for k, v in _pattern_tensors(self).items()})
                save_adapter(self, out, write=write, tensors=tensors, config=self.adapter_config(name))


def _pattern_tensors(vf: Any) -> dict[str, torch.Tensor]:
    return {f"pattern::{name}::{key}::{t}": tensor for name, layer in vf.decomposed_layers().items()
            for key, part in layer.parts.items() for t, tensor in part.structure_tensors().items()}
