"""Helpers shared by the repository-wide tests."""

from __future__ import annotations

import random
from pathlib import Path

#: the repository's root (this file is tests/vectorfit_test_utils.py)
REPO = Path(__file__).resolve().parents[1]


def write_pixels(path: Path) -> Path:
    """60 8x8 grayscale 'images' in 3 classes told apart by brightness, in mnist_5k.csv's layout (64 pixels then
    the label per row), written to ``path``."""
    rng = random.Random(0)
    rows = []
    for i in range(60):
        label = i % 3
        rows.append(",".join(str(min(255, max(0, int(rng.gauss(60 + 70 * label, 25))))) for _ in range(64))
                    + f",{label}")
    path.write_text("\n".join(rows) + "\n")
    return path
