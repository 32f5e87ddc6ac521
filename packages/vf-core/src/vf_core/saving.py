"""Saving and loading adapters: ``adapter_config.json`` + ``adapter_model.safetensors``.

The adapter holds only what trained (``s``, ``b``, SVFT's ``M`` values and pattern, the ``modules_to_save``)
and a SHA-256 fingerprint of every decomposed base weight, so it is applied only to the exact weights it was
trained from. Files are written to a temporary name and renamed, so an interrupted save never leaves a
half-written adapter where a good one was. Pickle files are refused, never unpickled.

Example:
    >>> import copy, tempfile, torch
    >>> from vf_core import VectorFitConfig, VectorFitModel, get_vectorfit_model
    >>> torch.manual_seed(0) and None
    >>> base = torch.nn.Sequential(torch.nn.Linear(4, 4))
    >>> pristine = copy.deepcopy(base)   # the adapter applies to the exact weights it was trained from
    >>> vf = get_vectorfit_model(base, VectorFitConfig(target_modules=["0"]))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     vf.save_pretrained(d)
    ...     again = VectorFitModel.from_pretrained(pristine, d)
    >>> len(again.vectors)
    2
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import torch

from . import __version__
from .config import VectorFitConfig
from .errors import AdapterFormatError, AdapterMismatchError, ConfigError
from .injection import Plan, build_layers, plan_injection
from .layers import DecomposedLayer
from .vectors import build_registry

if TYPE_CHECKING:  # pragma: no cover
    from .model import VectorFitModel

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "FORMAT_VERSION", "save_adapter", "read_adapter", "LoadedAdapter",
           "read_adapter_config", "read_adapter_values", "check_fingerprints"]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT_NAME = "vectorfit-adapter"
FORMAT_VERSION = 1
_PICKLE_NAMES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth", "pytorch_model.bin")


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def adapter_tensors(vf: "VectorFitModel") -> dict[str, torch.Tensor]:
    """The tensors an adapter holds, by key: ``vector::<name>``, ``module::<param>``, ``pattern::<...>``."""
    tensors = {f"vector::{v.name}": v.parameter.detach() for v in vf.vectors}
    tensors.update({f"module::{n}": p.detach() for n, p in vf.head_parameters().items()})
    for name, layer in vf.decomposed_layers().items():
        for key, part in layer.parts.items():
            for tensor_name, tensor in part.structure_tensors().items():  # SVFT's pattern: rows, cols
                tensors[f"pattern::{name}::{key}::{tensor_name}"] = tensor
    return {k: _whole(t).contiguous().cpu() for k, t in tensors.items()}


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded ``DTensor`` gathered (a collective: every rank calls it); any other tensor as it is."""
    full = getattr(tensor, "full_tensor", None)
    return full() if callable(full) else tensor


def save_adapter(vf: "VectorFitModel", directory: Union[str, os.PathLike], *, write: bool = True,
                 tensors: Optional[dict[str, torch.Tensor]] = None, config: Optional[VectorFitConfig] = None) -> None:
    """Write ``vf``'s adapter to ``directory``; with ``write=False`` only gather its tensors (the other ranks of a
    sharded model, which must take part in the gathering). ``tensors`` and ``config`` write another adapter of the
    model than the active one (its values by key, as :func:`adapter_tensors` names them)."""
    from safetensors.torch import save_file

    tensors = adapter_tensors(vf) if tensors is None else {k: t.detach().contiguous().cpu() for k, t in tensors.items()}
    if not write:
        return
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "vf_core_version": __version__,
        "config": (config or vf.vectorfit_config).model_dump(mode="json"),
        "family": vf.family.name if vf.family else None,
        "base_model_class": type(vf.get_base_model()).__name__,
        "fingerprints": vf._fingerprints,
        "modules_to_save": vf.modules_to_save,
        "vectors": [{"name": v.name, "layer": v.layer, "role": v.role, "kind": v.kind, "numel": v.numel,
                     **({} if v.expert is None else {"expert": v.expert})} for v in vf.vectors],
    }
    _atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT_NAME}))
    _atomic_write(out / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))


def read_adapter_config(directory: Union[str, os.PathLike]) -> dict:
    """The parsed ``adapter_config.json``, checked for format and version."""
    path = Path(directory)
    cfg = path / CONFIG_NAME
    if not path.is_dir():
        raise AdapterFormatError(f"adapter directory {str(path)!r} does not exist")
    if not cfg.is_file():
        raise AdapterFormatError(f"{str(cfg)!r} is missing: this is not a VectorFit adapter directory"
                                 " (save one with VectorFitModel.save_pretrained)")
    try:
        meta = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterFormatError(f"{str(cfg)!r} is not valid JSON ({exc}); the adapter is corrupted") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise AdapterFormatError(f"{str(cfg)!r} is not a VectorFit adapter config (format={meta.get('format')!r})"
                                 if isinstance(meta, dict) else f"{str(cfg)!r} is not a JSON object")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise AdapterFormatError(
            f"{str(cfg)!r} has format_version {version!r}, newer than this vf-core understands"
            f" ({FORMAT_VERSION}); upgrade vf-core to load it")
    return meta


def _read_tensors(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        pickles = [n for n in _PICKLE_NAMES if (directory / n).exists()]
        if pickles:
            raise AdapterFormatError(
                f"{str(directory)!r} holds {pickles[0]!r}, a pickle file: VectorFit refuses to unpickle it (pickles"
                f" can run arbitrary code). Only {WEIGHTS_NAME!r} is loaded")
        raise AdapterFormatError(f"{str(weights)!r} is missing; the adapter was not saved completely")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise AdapterFormatError(f"{str(weights)!r} is truncated or corrupted ({exc}); save the adapter again")


@dataclass
class LoadedAdapter:
    """A saved adapter checked against a base model and rebuilt, before anything of the model changes:
    ``layers`` to swap in (:func:`vf_core.model.attach`) and ``staged`` ``(parameter, saved value)`` pairs to copy
    once they are in place (:meth:`vf_core.VectorFitModel.from_pretrained` does both)."""

    config: VectorFitConfig
    plan: Plan
    layers: dict[str, DecomposedLayer]
    staged: list


def read_adapter(model: torch.nn.Module, directory: Union[str, os.PathLike]) -> LoadedAdapter:
    """Read the adapter in ``directory`` for ``model`` (left untouched): format, config, fingerprints of every
    decomposed weight, tensor names and shapes are all checked before any layer is swapped in."""
    directory = Path(directory)
    meta = read_adapter_config(directory)
    tensors = _read_tensors(directory)
    config = _saved_config(meta, directory)
    plan = plan_injection(model, config)
    check_fingerprints(meta, plan.fingerprints)
    layers = build_layers(plan, config)
    _restore_structure(layers, tensors)
    return LoadedAdapter(config, plan, layers, _stage_values(model, plan, layers, tensors))


def _saved_config(meta: dict, directory: Path) -> VectorFitConfig:
    saved_config = dict(meta.get("config", {}))
    if saved_config.get("method", "vectorfit") == "vectorfit":
        # adapters written before the option existed hold absolute singular values, whatever today's default
        saved_config.setdefault("sigma_parametrization", "absolute")
    try:
        return VectorFitConfig.model_validate(saved_config)
    except ConfigError as exc:
        raise AdapterFormatError(f"{str(directory / CONFIG_NAME)!r} holds an invalid config: {exc}") from None


def check_fingerprints(meta: dict, ours: dict[str, str]) -> None:
    """:class:`AdapterMismatchError` unless the adapter's fingerprints (``meta``) are exactly ``ours``."""
    saved = meta.get("fingerprints", {})
    for name, fp in saved.items():
        if name not in ours:
            raise AdapterMismatchError(f"the adapter decomposes module {name!r}, which this base model does not"
                                       f" have or does not target; it was trained on a {meta.get('base_model_class')}")
        if ours[name] != fp:
            raise AdapterMismatchError(
                f"module {name!r} of this base model has different weights from the one the adapter was trained"
                " on (fingerprint mismatch); load the exact base checkpoint the adapter was trained from")
    extra = [n for n in ours if n not in saved]
    if extra:
        raise AdapterMismatchError(f"this base model has module {extra[0]!r} that the adapter does not cover;"
                                   f" it was trained on a {meta.get('base_model_class')}")


def read_adapter_values(vf: "VectorFitModel", directory: Union[str, os.PathLike],
                        expected: dict[str, torch.Tensor]) -> tuple[VectorFitConfig, dict[str, torch.Tensor]]:
    """The config and the values of the adapter in ``directory``, to hold beside ``vf``'s own adapters (nothing of
    ``vf`` changes): the fingerprints must be ``vf``'s, SVFT's pattern the same, and every key of ``expected``
    (``vector::<name>``, ``module::<param>`` -> the live tensor) present with its shape."""
    directory = Path(directory)
    meta = read_adapter_config(directory)
    tensors = _read_tensors(directory)
    config = _saved_config(meta, directory)
    check_fingerprints(meta, vf._fingerprints)
    for name, layer in vf.decomposed_layers().items():
        for key, part in layer.parts.items():
            for tensor_name, tensor in part.structure_tensors().items():
                saved = tensors.get(f"pattern::{name}::{key}::{tensor_name}")
                if saved is None or not torch.equal(saved.to(tensor.device), tensor):
                    raise AdapterMismatchError(f"the adapter's {type(part).__name__} pattern of {name!r}[{key}] is not"
                                               " this model's; it needs a model of its own (from_pretrained)")
    values = {}
    for key, live in expected.items():
        if key not in tensors:
            raise AdapterFormatError(f"the adapter in {str(directory)!r} has no tensor {key!r}; it is incomplete or"
                                     " from another config")
        if tuple(tensors[key].shape) != tuple(live.shape):
            raise AdapterMismatchError(f"tensor {key!r} has shape {tuple(tensors[key].shape)} in the adapter but"
                                       f" {tuple(live.shape)} in this model")
        values[key] = tensors[key].to(device=live.device, dtype=live.dtype)
    return config, values


def _restore_structure(layers, tensors) -> None:
    """Give every part the fixed tensors saved with it (SVFT's pattern), before the trained values."""
    for name, layer in layers.items():
        for key, part in layer.parts.items():
            wanted = part.structure_tensors()
            if not wanted:
                continue
            found = {t: tensors.get(f"pattern::{name}::{key}::{t}") for t in wanted}
            missing = [t for t, value in found.items() if value is None]
            if missing:
                raise AdapterFormatError(f"the adapter lacks the {type(part).__name__} pattern of {name!r}[{key}]"
                                         f" ({', '.join(missing)})")
            part.restore_structure(found)


def _stage_values(model, plan, layers, tensors) -> list:
    """Pair every saved tensor with the parameter it fills; checks names and shapes before anything moves."""
    registry = build_registry(layers, {t.name: t.layer for t in plan.targets})
    staged = []
    expected = {f"vector::{v.name}": v.parameter for v in registry}
    for head in plan.heads:
        for pname, p in model.get_submodule(head).named_parameters():
            expected[f"module::{head}.{pname}"] = p
    for key, param in expected.items():
        if key not in tensors:
            raise AdapterFormatError(f"the adapter has no tensor {key!r}; it is incomplete or from another config")
        value = tensors[key]
        if tuple(value.shape) != tuple(param.shape):
            raise AdapterMismatchError(f"tensor {key!r} has shape {tuple(value.shape)} in the adapter but"
                                       f" {tuple(param.shape)} in this model")
        staged.append((param, value.to(param.dtype)))
    return staged
