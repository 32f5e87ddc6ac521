"""`VectorFitModel` and `get_vectorfit_model`: the model API, PEFT's names where they fit.

Paper: https://arxiv.org/abs/2503.19530 (VectorFit). Each targeted ``W0 = U diag(s0) V^T`` is decomposed
once; only ``s`` and ``b`` train (or SVFit's ``s_r``, SVFT's ``M``), plus the ``modules_to_save``.

Example:
    >>> import torch
    >>> from vf_core import VectorFitConfig, get_vectorfit_model
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    >>> vf = get_vectorfit_model(net, VectorFitConfig(target_modules=["0", "2"]))
    >>> sorted(v.kind for v in vf.vectors)
    ['bias', 'bias', 'sigma', 'sigma']
    >>> vf(torch.ones(1, 8)).shape
    torch.Size([1, 2])
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any, Optional, Union

import torch
from torch import nn

from .adapters import _PEFT_ONLY, DEFAULT_ADAPTER, AdapterMixin
from .config import VectorFitConfig
from .families import Family
from .injection import Plan, inject, plan_injection, swap_in, undo
from .layers import DecomposedExperts, DecomposedLayer
from .saving import read_adapter, save_adapter
from .vectors import VectorRegistry, build_registry

__all__ = ["VectorFitModel", "get_vectorfit_model", "BIAS_LR_SCALE"]

#: the biases' learning rate as a share of the singular values' (the stall study, docs/method.md)
BIAS_LR_SCALE = 0.3

_KIND_WORDS = {"sigma": "singular values", "bias": "bias entries", "m": "sparse M entries"}


class VectorFitModel(AdapterMixin, nn.Module):
    """A model whose targeted layers are decomposed; ``forward`` is the wrapped model's.

    Create it with :func:`get_vectorfit_model` or :meth:`from_pretrained`. The wrapped model is ``model`` (and
    :meth:`get_base_model`, PEFT's name); attributes the wrapper does not have are looked up on the wrapped model,
    so the wrapper behaves like it: ``vf_model.config`` is the base model's config, and ``vf_model.base_model`` is
    the wrapped transformers model's own ``base_model`` (its backbone, which TRL's fused loss calls for hidden
    states), not the wrapped model.

    It holds one or several adapters on its decomposition (:mod:`vf_core.adapters`): PEFT's names
    (``load_adapter``, ``add_adapter``, ``set_adapter``, ``delete_adapter``, ``active_adapter``, ``adapters``,
    ``disable_adapter``, ``push_to_hub``...) are its own, never the wrapped transformers model's PEFT integration;
    ``model(..., adapter_names=[...])`` and ``generate(..., adapter_names=[...])`` give each example its adapter.
    """

    def __init__(self, model: nn.Module, config: VectorFitConfig, plan: Plan, layers: dict[str, DecomposedLayer],
                 original_requires_grad: dict[str, bool], original_num_params: int) -> None:
        super().__init__()
        self.model = model
        self.vectorfit_config = config
        self.family: Optional[Family] = plan.family
        self.modules_to_save: list[str] = list(plan.heads)
        self._fingerprints = dict(plan.fingerprints)
        self._original_requires_grad = original_requires_grad
        self._original_num_params = original_num_params
        layer_index = {t.name: t.layer for t in plan.targets}
        self._layer_index = layer_index
        self.vectors = build_registry(layers, layer_index)
        self.register_state_dict_post_hook(_keep_trained_entries)
        self.register_load_state_dict_pre_hook(_before_load)
        self.register_load_state_dict_post_hook(_forgive_frozen_entries)
        self._init_adapters()

    # ------------------------------------------------------------------------------------------ basics
    @property
    def vectors(self) -> VectorRegistry:
        """The :class:`~vf_core.VectorRegistry` of the trainable vectors.

        Each vector follows its module's current parameter: FSDP's ``fully_shard`` and
        ``load_state_dict(assign=True)`` put new parameters in place, and reading ``vectors`` afterwards rebinds
        every :class:`~vf_core.TrainableVector` to them (for a sharded ``DTensor`` parameter, its ``initial`` value
        is sharded alike, without communication).
        """
        registry = self.__dict__["_vectors"]
        homes = self.__dict__["_vector_homes"]
        for vec in registry:
            home = homes.get(vec.name)
            current = home[0]._parameters.get(home[1]) if home is not None else None
            if current is not None and current is not vec.parameter:
                _rebind(vec, current)
        return registry

    @vectors.setter
    def vectors(self, registry: VectorRegistry) -> None:
        owners = {id(p): (module, attr) for module in self.model.modules()
                  for attr, p in module._parameters.items() if p is not None}
        self.__dict__["_vectors"] = registry
        self.__dict__["_vector_homes"] = {v.name: owners[id(v.parameter)] for v in registry
                                          if id(v.parameter) in owners}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's forward; ``adapter_names=[...]`` (one per example, ``"__base__"`` for none) runs each
        example with its own adapter."""
        return self._call_model(args, kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            if name in _PEFT_ONLY:
                raise AttributeError(f"{type(self).__name__} has no {name!r}: it belongs to transformers' PEFT"
                                     " integration, which does not apply to VectorFit adapters (see load_adapter,"
                                     " set_adapter, disable_adapter)") from None
            found = getattr(self.model, name)
            return self._generate(found) if name == "generate" else found

    def get_base_model(self) -> nn.Module:
        """The wrapped model (PEFT's name), with its decomposed layers in place."""
        return self.model

    def decomposed_layers(self) -> dict[str, Union[DecomposedLayer, DecomposedExperts]]:
        """The decomposed layers by module name, in model order; a decomposed 3-D expert parameter
        (:class:`~vf_core.layers.DecomposedExperts`) by the parameter's full name."""
        return {(m.module_name if isinstance(m, DecomposedExperts) else n): m for n, m in self.model.named_modules()
                if isinstance(m, (DecomposedLayer, DecomposedExperts))}

    def head_parameters(self) -> dict[str, nn.Parameter]:
        out = {}
        for head in self.modules_to_save:
            for pname, p in self.model.get_submodule(head).named_parameters():
                out[f"{head}.{pname}"] = p
        return out

    def parameter_groups(self, lr: float, *, sigma_lr: Optional[float] = None, bias_lr: Optional[float] = None,
                         head_lr: Optional[float] = None, weight_decay: float = 0.0) -> list[dict]:
        """Optimizer parameter groups with a learning rate per kind of trainable vector: the spectral vectors
        (``s``, ``s_r``, ``M``) at ``sigma_lr`` (default ``lr``), the biases at ``bias_lr`` (default
        ``lr * BIAS_LR_SCALE``, 0.3 times it), the ``modules_to_save`` at ``head_lr`` (default ``lr``); no weight decay
        on biases. Only what trains now is included.

        Why the biases get less: under Adam every bias entry moves by about the learning rate per step, all
        of them in the direction that helps the new head's first guess; at the singular values' rate they swamp the
        input-dependent part of the features within a few steps and the run stalls at the majority class
        (docs/method.md, "Stalls"; benchmarks/quality/results/stall/).

            >>> import torch
            >>> from vf_core import VectorFitConfig, get_vectorfit_model
            >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4))
            >>> vf = get_vectorfit_model(net, VectorFitConfig(target_modules=["0"]))
            >>> [(g["name"], g["lr"]) for g in vf.parameter_groups(1e-2)]
            [('sigma', 0.01), ('bias', 0.003)]
            >>> optimizer = torch.optim.AdamW(vf.parameter_groups(1e-2))
        """
        rates = {"sigma": sigma_lr or lr, "bias": bias_lr or lr * BIAS_LR_SCALE, "head": head_lr or lr}
        groups: dict[str, list[nn.Parameter]] = {"sigma": [], "bias": [], "head": []}
        seen: set[int] = set()
        for vec in self.vectors:
            if vec.parameter.requires_grad and id(vec.parameter) not in seen:
                seen.add(id(vec.parameter))
                groups["bias" if vec.kind == "bias" else "sigma"].append(vec.parameter)
        for param in self.head_parameters().values():
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                groups["head"].append(param)
        return [{"params": params, "lr": rates[kind], "name": kind,
                 "weight_decay": 0.0 if kind == "bias" else weight_decay}
                for kind, params in groups.items() if params]

    # ------------------------------------------------------------------------------------------ counting
    def trainable_parameter_counts(self) -> dict[str, int]:
        """Trainable entries by kind (``sigma``, ``bias``, ``m``), ``head``, ``other`` and ``total``."""
        counts = {k: 0 for k in ("sigma", "bias", "m")}
        vector_ids = set()
        for v in self.vectors:
            if v.parameter.requires_grad:
                counts[v.kind] += v.numel
            vector_ids.add(id(v.parameter))
        head_ids = {id(p) for p in self.head_parameters().values()}
        counts["head"] = sum(p.numel() for p in self.head_parameters().values() if p.requires_grad)
        counts["other"] = sum(p.numel() for p in self.model.parameters()
                              if p.requires_grad and id(p) not in vector_ids | head_ids)
        counts["total"] = sum(counts.values())
        return counts

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """``(trainable, all)``; ``all`` counts the original model's parameters (before decomposition)."""
        return self.trainable_parameter_counts()["total"], self._original_num_params

    def print_trainable_parameters(self) -> str:
        """Print (and return) the trainable count, the model's size and the breakdown by kind."""
        counts = self.trainable_parameter_counts()
        trainable, total = self.get_nb_trainable_parameters()
        parts = [f"{counts[k]:,} {_KIND_WORDS[k]}" for k in ("sigma", "bias", "m") if counts[k]]
        if counts["head"]:
            parts.append(f"{counts['head']:,} head parameters")
        if counts["other"]:
            parts.append(f"{counts['other']:,} other parameters")
        line = (f"trainable params: {trainable:,} || all params: {total:,} || "
                f"trainable%: {100 * trainable / max(total, 1):.4f}\n  = " + " + ".join(parts or ["nothing"]))
        print(line)
        return line

    # ------------------------------------------------------------------------------------------ state dicts
    #: ``state_dict()`` holds only :meth:`trained_state_keys` (True, the default) or every tensor (False)
    state_dict_trained_only: bool = True

    def trained_state_keys(self) -> set[str]:
        """The ``state_dict`` keys of what trains: the vectors, the ``modules_to_save`` (their buffers too) and any
        other parameter with ``requires_grad``.

        Everything else is the frozen base, rebuilt exactly by ``get_vectorfit_model`` on the same pre-trained
        weights, so ``state_dict()`` leaves it out: an engine's checkpoint (``Trainer``, TRL, ``accelerate``'s
        ``save_state``, DeepSpeed, a plain ``torch.save(vf.state_dict())``) is about the adapter's size, and
        ``load_state_dict`` (strict or not) takes it back, reporting no frozen key as missing. The frozen base's own
        buffers (BatchNorm running statistics) are frozen too: keep its norm layers in eval mode, as the adapter
        does not hold them either. Set :attr:`state_dict_trained_only` to False for every tensor.

            >>> import torch
            >>> from vf_core import get_vectorfit_model
            >>> vf = get_vectorfit_model(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)),
            ...                          target_modules=["0"])
            >>> sorted(vf.state_dict())
            ['model.0.parts.main.bias', 'model.0.parts.main.sigma']
            >>> vf.load_state_dict(vf.state_dict())
            <All keys matched successfully>
        """
        ids = {id(v.parameter) for v in self.vectors} | {id(p) for p in self.head_parameters().values()}
        keys = {n for n, p in self.named_parameters(remove_duplicate=False) if p.requires_grad or id(p) in ids}
        for head in self.modules_to_save:
            keys.update(f"model.{head}.{b}" for b, _ in
                        self.model.get_submodule(head).named_buffers(remove_duplicate=False))
        return keys

    # ------------------------------------------------------------------------------------------ saving
    def save_pretrained(self, save_directory: Union[str, os.PathLike], *,
                        selected_adapters: Optional[list[str]] = None,
                        is_main_process: Optional[bool] = None) -> None:
        """Write ``adapter_config.json`` and ``adapter_model.safetensors`` (trained tensors, heads, fingerprints).

        With several adapters, PEFT's layout: ``default`` in ``save_directory``, each other adapter in
        ``save_directory/<name>``; ``selected_adapters`` (default: all) chooses which.
        Under ``torch.distributed`` only rank 0 writes (``is_main_process`` decides otherwise). Sharded (FSDP)
        vectors are gathered first, so with FSDP every rank must call it; with DDP rank 0 alone may.
        """
        write = _is_main_process() if is_main_process is None else is_main_process
        if selected_adapters is None and self.adapters == [DEFAULT_ADAPTER]:
            save_adapter(self, save_directory, write=write)
            return
        self._save_adapters(save_directory, selected_adapters, write)

    @classmethod
    def from_pretrained(cls, model: nn.Module, adapter_directory: Union[str, os.PathLike], *,
                        is_trainable: bool = False, adapter_name: str = DEFAULT_ADAPTER) -> "VectorFitModel":
        """Rebuild a saved adapter on ``model``, which must hold the exact base weights it was trained from; it is
        the model's adapter ``adapter_name`` (default ``default``). More adapters: :meth:`load_adapter`.

        Raises :class:`~vf_core.AdapterMismatchError` naming the first module whose weights differ, and
        :class:`~vf_core.AdapterFormatError` for a missing, corrupted or unknown adapter; ``model`` is left
        untouched in both cases. With ``is_trainable=False`` (the default, as in PEFT) nothing trains.
        """
        adapter = read_adapter(model, adapter_directory)  # every check; the model is not touched yet
        vf = attach(model, adapter.config, adapter.plan, adapter.layers)
        if adapter_name != DEFAULT_ADAPTER:
            name = vf._new_name(adapter_name)
            vf.__dict__["_active_adapter"] = name
            vf.__dict__["_adapter_configs"] = {name: adapter.config}
        with torch.no_grad():
            for param, value in adapter.staged:
                param.copy_(value)
        if not is_trainable:
            for p in vf.parameters():
                p.requires_grad_(False)
            vf.eval()
        return vf

    def save_as_lora(self, directory: Union[str, os.PathLike], rank: Optional[int] = None,
                     energy: Optional[float] = None, sample_inputs: Any = None, **options: Any) -> Any:
        """Write the active adapter as a PEFT LoRA adapter (``dW = U diag(s - s0) V^T`` as ``B A``; lossless, or
        truncated by ``rank`` or ``energy``) and return its fidelity report; see :func:`vf_core.export.save_as_lora`."""
        from .export import save_as_lora

        return save_as_lora(self, directory, rank=rank, energy=energy, sample_inputs=sample_inputs, **options)

    # ------------------------------------------------------------------------------------------ unloading
    @torch.no_grad()
    def unload(self) -> nn.Module:
        """Return the base model with plain layers holding the weights before training (``U diag(s0) V^T``)."""
        with self.disable_adapter():
            merged = {name: layer.merged() for name, layer in self.decomposed_layers().items()}
        return self._put_back(merged)

    def _put_back(self, plain: dict[str, nn.Module]) -> nn.Module:
        swap_in(self.model, plain)
        for pname, p in self.model.named_parameters():
            p.requires_grad_(self._original_requires_grad.get(pname, True))
        self.vectors = VectorRegistry()
        return self.model

    # ------------------------------------------------------------------------------------------ merging
    @torch.no_grad()
    def merge_and_unload(self, adapter_name: Optional[str] = None, **peft_options: Any) -> nn.Module:
        """Fold ``U diag(s) V^T`` and the trained biases of the active adapter (or of ``adapter_name``, made active
        first, heads included) back into plain layers and return the base model. PEFT's ``progressbar`` and
        ``safe_merge`` are accepted (the merge is exact and quick; a non-finite weight is refused when decomposing)."""
        unknown = set(peft_options) - {"progressbar", "safe_merge"}
        if unknown:
            raise TypeError(f"merge_and_unload() got unexpected options {sorted(unknown)}")
        if adapter_name is not None:
            self.set_adapter(adapter_name)
        self._disable(False)
        merged = {name: layer.merged() for name, layer in self.decomposed_layers().items()}
        return self._put_back(merged)


def _rebind(vec: Any, parameter: nn.Parameter) -> None:
    """Point ``vec`` at ``parameter``, which replaced its own; a sharded ``DTensor`` gets an ``initial`` value sharded
    alike (each rank keeps its own slice of the full copy: no communication)."""
    mesh, placements = getattr(parameter, "device_mesh", None), getattr(parameter, "placements", None)
    if mesh is not None and placements is not None and not hasattr(vec.initial, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        local = parameter.to_local()
        vec.initial = distribute_tensor(vec.initial.to(device=local.device, dtype=local.dtype), mesh, placements,
                                        src_data_rank=None)
    vec.parameter = parameter


def _is_main_process() -> bool:
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _keep_trained_entries(module: VectorFitModel, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """``state_dict`` hook: drop this model's frozen entries (see :meth:`VectorFitModel.trained_state_keys`)."""
    if not module.state_dict_trained_only:
        return
    keep = module.trained_state_keys()
    for key in [k for k in state_dict if k.startswith(prefix) and k[len(prefix):] not in keep]:
        del state_dict[key]


_LEGACY_PREFIX = "base_model."  # the wrapped model's attribute before vf_core 0.1 named it ``model``


def _before_load(module: VectorFitModel, state_dict: dict, prefix: str, *args: Any) -> None:
    """``load_state_dict`` pre-hook: note where this model sits (for the post-hook) and rename entries of
    checkpoints written when the wrapped model was ``base_model``."""
    old = prefix + _LEGACY_PREFIX
    for key in [k for k in state_dict if k.startswith(old)]:
        new = prefix + "model." + key[len(old):]
        if new not in state_dict:
            state_dict[new] = state_dict.pop(key)
    module.__dict__["_load_prefix"] = prefix


def _forgive_frozen_entries(module: VectorFitModel, incompatible_keys: Any) -> None:
    """``load_state_dict`` post-hook: frozen entries a state dict leaves out are not missing (they hold the
    pre-trained values already); trained ones still are."""
    prefix = module.__dict__.pop("_load_prefix", "")
    keep = module.trained_state_keys()
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if not k.startswith(prefix) or k[len(prefix):] in keep]


@functools.lru_cache(maxsize=None)
def _wrapper_class(base_cls: type) -> type:
    """A ``VectorFitModel`` subclass whose ``forward`` carries ``base_cls.forward``'s signature.

    The Trainer reads the signature (of the class and of the instance) to find label names and keep the right
    dataset columns; the name keeps the base's (``...ForQuestionAnswering``) for the same reason.
    """

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._call_model(args, kwargs)

    try:
        forward.__signature__ = inspect.signature(base_cls.forward)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return VectorFitModel
    name = f"VectorFitModelFor{base_cls.__name__}"
    cls = type(name, (VectorFitModel,), {"forward": forward, "__module__": __name__, "__qualname__": name})
    globals()[name] = cls  # so pickle finds it by name in this process
    return cls


def _freeze_except(model: nn.Module, vf: VectorFitModel) -> None:
    trainable = {id(v.parameter) for v in vf.vectors} | {id(p) for p in vf.head_parameters().values()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)


def get_vectorfit_model(model: nn.Module, config: Optional[Union[VectorFitConfig, dict]] = None,
                        **overrides: Any) -> VectorFitModel:
    """Decompose the targeted layers of ``model`` (in place) and return the wrapping :class:`VectorFitModel`.

    Everything but the method's vectors and ``modules_to_save`` is frozen. All or nothing: if this raises,
    ``model`` is exactly as it was.

    Args:
        model: any ``nn.Module``; its family is recognised by the installed backends, or give
            ``target_modules``.
        config: a :class:`VectorFitConfig`, a dict of its fields, or None for the defaults.
        **overrides: fields that replace the config's (``get_vectorfit_model(m, method="svfit", rank=8)``).
    """
    if config is None:
        config = VectorFitConfig(**overrides)
    elif isinstance(config, dict):
        config = VectorFitConfig(**{**config, **overrides})
    elif overrides:
        config = VectorFitConfig(**{**config.model_dump(), **overrides})
    plan = plan_injection(model, config)
    original_requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    original_num_params = sum(p.numel() for p in model.parameters())
    # one target at a time: decomposed, swapped in, its temporaries freed (undone entirely if anything fails)
    layers, replaced = inject(model, plan, config)
    try:
        return _wrap(model, config, plan, layers, original_requires_grad, original_num_params)
    except BaseException:
        _restore(model, replaced, original_requires_grad)
        raise


def attach(model: nn.Module, config: VectorFitConfig, plan: Plan,
           layers: dict[str, DecomposedLayer]) -> VectorFitModel:
    """Swap prepared layers into ``model`` and wrap it (the only step that modifies the model)."""
    original_requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    original_num_params = sum(p.numel() for p in model.parameters())
    replaced = swap_in(model, layers)
    try:
        return _wrap(model, config, plan, layers, original_requires_grad, original_num_params)
    except BaseException:
        _restore(model, replaced, original_requires_grad)
        raise


def _restore(model: nn.Module, replaced: dict[str, object], requires_grad: dict[str, bool]) -> None:
    """Undo the swaps and any freezing: ``model`` as it was before ``get_vectorfit_model``."""
    undo(model, replaced)
    for name, p in model.named_parameters():
        p.requires_grad_(requires_grad.get(name, p.requires_grad))


def _wrap(model: nn.Module, config: VectorFitConfig, plan: Plan, layers: dict[str, DecomposedLayer],
          original_requires_grad: dict[str, bool], original_num_params: int) -> VectorFitModel:
    vf = _wrapper_class(type(model))(model, config, plan, layers, original_requires_grad, original_num_params)
    _freeze_except(model, vf)
    return vf
