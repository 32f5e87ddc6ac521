"""Tiny modules for tests that need no model library: a two-block transformer-like net and a GPT-2-style Conv1D.

Example:
    >>> import torch
    >>> from vf_core import VectorFitConfig, get_vectorfit_model
    >>> from vf_core.testing.tiny import TINY_ROLES, TinyNet
    >>> vf = get_vectorfit_model(TinyNet(), VectorFitConfig(target_modules=TINY_ROLES))
    >>> len(vf.vectors)
    24
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Conv1D", "Block", "TinyNet", "TINY_ROLES"]


class Conv1D(nn.Module):
    """The GPT-2 layer shape: weight stored (d_in, d_out), y = x W + b (same as transformers' Conv1D)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.2)
        self.bias = nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], self.nf)


class Block(nn.Module):
    """Attention projections ``q, k, v, o`` and an MLP ``up`` (f1) / ``down`` (f2)."""

    def __init__(self, d: int = 8, hidden: int = 12) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.up, self.down = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2) / 3.0, -1) @ self.v(x)
        x = x + self.o(att)
        return x + self.down(torch.relu(self.up(x)))


class TinyNet(nn.Module):
    """``n_blocks`` blocks and a ``head``; input ``(batch, tokens, d)``."""

    def __init__(self, d: int = 8, n_blocks: int = 2, n_out: int = 3) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(d) for _ in range(n_blocks))
        self.head = nn.Linear(d, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(-2))


#: ``target_modules`` giving TinyNet's modules their roles
TINY_ROLES = {"q": ["q"], "k": ["k"], "v": ["v"], "o": ["o"], "f1": ["up"], "f2": ["down"]}
