"""SVFT's sparsity patterns of ``M`` (https://arxiv.org/abs/2405.19597), as ``(rows, cols)`` index pairs.

- ``plain``: the diagonal (equivalent to training the singular values);
- ``banded``: the diagonal plus ``d`` off-diagonals on each side, ``k(2d+1) - d(d+1)`` entries;
- ``random``: as many entries as ``banded``, at seeded random positions;
- ``topk``: the positions of largest alignment ``|u_i . v_j|`` (square matrices only).

Example:
    >>> from vf_core.parts.patterns import sparsity_pattern
    >>> rows, cols = sparsity_pattern("banded", k=4, off_diagonals=1)
    >>> len(rows)
    10
"""

from __future__ import annotations

import zlib
from typing import Optional

import torch

from ..errors import ConfigError

__all__ = ["sparsity_pattern", "pattern_size"]


def pattern_size(k: int, off_diagonals: int) -> int:
    d = min(off_diagonals, k - 1)
    return k * (2 * d + 1) - d * (d + 1)


def _banded(k: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    i, j = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    keep = (i - j).abs() <= d
    return i[keep], j[keep]


def sparsity_pattern(pattern: str, *, k: int, off_diagonals: int = 0, seed: int = 0, name: str = "",
                     u: Optional[torch.Tensor] = None, v: Optional[torch.Tensor] = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of ``M``'s trainable entries, sorted row-major."""
    d = min(off_diagonals, k - 1)
    if pattern == "plain":
        idx = torch.arange(k)
        return idx, idx.clone()
    if pattern == "banded":
        return _banded(k, d)
    count = pattern_size(k, d)
    if pattern == "random":
        gen = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))
        flat = torch.randperm(k * k, generator=gen)[:count].sort().values
    elif pattern == "topk":
        if u is None or v is None or u.shape != v.shape:
            shape = None if u is None or v is None else (tuple(u.shape), tuple(v.shape))
            raise ConfigError(
                f"pattern='topk' needs a square weight (U and V of the same shape) but module {name!r} has"
                f" U, V shapes {shape}; use pattern='banded' or 'random' for it", fields=("pattern",))
        align = (u.mT.double() @ v.double()).abs().flatten()
        flat = torch.topk(align, count).indices.sort().values
    else:
        raise ConfigError(f"unknown SVFT pattern {pattern!r}; use plain, banded, random or topk", fields=("pattern",))
    return flat // k, flat % k
