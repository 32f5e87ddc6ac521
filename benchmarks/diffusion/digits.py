"""The diffusion benchmark's images: MNIST-5k digits at 16x16, pixels in [-1, 1], on the command's fixed split.

The packaged pixel CSV (``vf_core.assets.fetch(ASSETS["mnist-5k"])``, 28x28, read by
``vf_backends_vision.data.read_pixel_csv``) is split exactly as ``vectorfit train --data mnist-5k`` splits it
(``train_eval_split(5000, eval_fraction=0.2, seed=0)``: 4,000 train, 1,000 eval), shrunk 28 -> 16 (bilinear,
antialiased) and scaled from [0, 1] to [-1, 1]. Labels are the digits themselves (0-9).

:func:`write_pixel_csv` writes all 5,000 digits at 16x16, in the packaged order (so the command's split of it is
the same split), as a pixel CSV that ``vectorfit train --data`` reads: the judge is trained on it.

Example::

    >>> from digits import mnist16                              # doctest: +SKIP
    >>> (x, y), (ex, ey) = mnist16(classes=range(9))            # doctest: +SKIP
    >>> x.shape, float(x.min()), float(x.max()), int(y.max())   # doctest: +SKIP
    (torch.Size([3597, 1, 16, 16]), -1.0, 1.0, 8)
"""

from __future__ import annotations

from collections.abc import Iterable

SIZE = 16


def shrink(pixels01, size: int = SIZE):
    """(N, 1, 28, 28) floats in [0, 1] -> (N, 1, size, size) in [-1, 1] (bilinear, antialiased)."""
    import torch.nn.functional as F

    x = F.interpolate(pixels01, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0.0, 1.0).mul(2.0).sub(1.0)


def mnist16(classes: Iterable[int] | None = None, size: int = SIZE):
    """``((train_x, train_y), (eval_x, eval_y))`` restricted to ``classes`` (all ten when None)."""
    import torch
    from vf_backends_vision.data import read_pixel_csv
    from vf_core.assets import ASSETS, fetch, train_eval_split

    labels, names, images = read_pixel_csv(fetch(ASSETS["mnist-5k"]))
    digits = [int(names[i]) for i in labels]
    keep = None if classes is None else {int(c) for c in classes}
    out = []
    for idx in train_eval_split(len(digits), eval_fraction=0.2, seed=0):
        idx = [i for i in idx if keep is None or digits[i] in keep]
        out.append((shrink(images(idx), size), torch.tensor([digits[i] for i in idx], dtype=torch.long)))
    return out[0], out[1]


def write_pixel_csv(path, size: int = SIZE):
    """All 5,000 MNIST-5k digits, shrunk to ``size`` (as :func:`shrink`), in the packaged order, as a gzipped pixel
    CSV (``size*size`` values in 0..255, then the digit); skipped when ``path`` exists. Returns ``path``."""
    import gzip
    from pathlib import Path

    from vf_backends_vision.data import read_pixel_csv
    from vf_core.assets import ASSETS, fetch

    path = Path(path)
    if path.is_file():
        return path
    labels, names, images = read_pixel_csv(fetch(ASSETS["mnist-5k"]))
    pixels = shrink(images(list(range(len(labels)))), size).add(1).mul(127.5).round().byte().flatten(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        for row, label in zip(pixels.tolist(), labels):
            fh.write(",".join(map(str, row)) + f",{names[label]}\n")
    tmp.replace(path)
    return path
