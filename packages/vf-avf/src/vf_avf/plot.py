"""A heatmap of training strength per vector: layers across, role and kind down (the paper's Figure 3).

Paper: https://arxiv.org/abs/2503.19530 (Figure 3 shows which singular and bias vectors train the most).

:func:`plot_strengths` reads a :class:`~vf_avf.VectorFreezer` (its ``history``: ``S'`` at an AVF step, frozen
cells outlined), a saved freezer state (a dict or a ``vectorfit_avf_state.json`` path), a ``history`` list
with the ``vectors`` it refers to, or a trained :class:`~vf_core.VectorFitModel` / registry (the current
``S``). matplotlib (the ``plot`` extra) is imported on first call and only its Agg canvas is used, so the
global pyplot backend is left alone.

Example:
    >>> import torch
    >>> from vf_core import VectorFitConfig, get_vectorfit_model
    >>> from vf_avf.plot import plot_strengths
    >>> vf = get_vectorfit_model(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)),
    ...                          VectorFitConfig(target_modules=["0", "1"]))
    >>> fig = plot_strengths(vf)             # add path="strength.png" to save it
    >>> fig.axes[0].get_title()
    'Training strength S per vector'
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from vf_core.roles import KINDS, ROLES
from vf_core.vectors import TrainableVector, VectorRegistry

from .freezer import AVFRecord, VectorFreezer, registry_of
from .strength import strengths

__all__ = ["plot_strengths", "strength_grid", "StrengthGrid"]

_KIND_LABEL = {"sigma": "σ", "bias": "b", "m": "M"}


class StrengthGrid:
    """Values arranged for the heatmap: ``values[row][col]`` (NaN where no vector), row and column labels,
    the frozen cells, and the vector name of each cell."""

    def __init__(self, rows: list[str], cols: list[str], values: list[list[float]], names: list[list[Optional[str]]],
                 frozen: set[tuple[int, int]]) -> None:
        self.rows, self.cols, self.values, self.names, self.frozen = rows, cols, values, names, frozen


def _meta(vectors: Any) -> list[tuple[str, Optional[int], Optional[str], str]]:
    if isinstance(vectors, (list, tuple)) and vectors and isinstance(vectors[0], Mapping):
        return [(v["name"], v.get("layer"), v.get("role"), v["kind"]) for v in vectors]
    return [(v.name, v.layer, v.role, v.kind) for v in registry_of(vectors)]


def strength_grid(scores: Mapping[str, float], vectors: Any, frozen: Sequence[str] = ()) -> StrengthGrid:
    """Lay ``scores`` out by (kind, role) rows and layer columns; one row per vector if cells would collide."""
    meta = [m for m in _meta(vectors) if m[0] in scores]
    frozen_set = set(frozen)
    cells = {(kind, role, layer) for _, layer, role, kind in meta}
    if len(cells) < len(meta) or all(layer is None for _, layer, _, _ in meta):  # no grid structure: a column
        rows = [name for name, *_ in meta]
        values = [[float(scores[name])] for name in rows]
        names: list[list[Optional[str]]] = [[name] for name in rows]
        return StrengthGrid(rows, ["vector"], values, names,
                            {(i, 0) for i, name in enumerate(rows) if name in frozen_set})
    layers = sorted({layer for _, layer, _, _ in meta if layer is not None})
    col_keys: list[Optional[int]] = list(layers) + ([None] if any(m[1] is None for m in meta) else [])
    role_order = list(ROLES) + sorted({r for _, _, r, _ in meta if r is not None and r not in ROLES}) + [None]
    kind_order = list(KINDS) + sorted({k for *_, k in meta if k not in KINDS})
    row_keys = [(kind, role) for kind in kind_order for role in role_order
                if any(m[3] == kind and m[2] == role for m in meta)]
    values = [[math.nan] * len(col_keys) for _ in row_keys]
    names = [[None] * len(col_keys) for _ in row_keys]
    frozen_cells = set()
    for name, layer, role, kind in meta:
        r, c = row_keys.index((kind, role)), col_keys.index(layer)
        values[r][c], names[r][c] = float(scores[name]), name
        if name in frozen_set:
            frozen_cells.add((r, c))
    rows = [f"{role or 'other'} {_KIND_LABEL.get(kind, kind)}" for kind, role in row_keys]
    cols = [str(layer) if layer is not None else "other" for layer in col_keys]
    return StrengthGrid(rows, cols, values, names, frozen_cells)


def _pick(history: Sequence[Any], step: Optional[int]) -> Optional[AVFRecord]:
    records = [r if isinstance(r, AVFRecord) else AVFRecord.from_dict(r) for r in history]
    scored = [r for r in records if r.scores]
    if step is not None:
        matches = [r for r in scored if r.step == step]
        if not matches:
            raise ValueError(f"no recorded AVF step {step}; recorded: {[r.step for r in scored]}")
        return matches[-1]
    return scored[-1] if scored else None


def _source(source: Any, vectors: Any, step: Optional[int]) -> tuple[Mapping[str, float], Any, tuple, str, Any]:
    """``(scores, vectors, frozen, symbol, step)`` from any accepted source."""
    if isinstance(source, (str, os.PathLike)):
        source = json.loads(Path(source).read_text())
    if isinstance(source, VectorFreezer):
        record = _pick(source.history, step)
        symbol = "S'" if source.config.policy == "topk_ema" else "S"
        if record is None:
            return source.strengths(), source.vectors, tuple(source.frozen), "S", None
        return record.scores, source.vectors, record.frozen, symbol, record.step
    if isinstance(source, Mapping) and "history" in source and "vectors" in source:  # a saved freezer state
        record = _pick(source["history"], step)
        if record is None:
            raise ValueError("the saved freezer state has no recorded scores to plot")
        symbol = "S'" if source.get("policy") == "topk_ema" else "S"
        return record.scores, vectors or source["vectors"], record.frozen, symbol, record.step
    if isinstance(source, (AVFRecord, list, tuple)) and not (isinstance(source, (list, tuple)) and source
                                                            and isinstance(source[0], TrainableVector)):
        if vectors is None:
            raise ValueError("plotting a history needs vectors= (the VectorFitModel, its registry, or the 'vectors'"
                             " list of a saved freezer state)")
        record = _pick([source] if isinstance(source, AVFRecord) else source, step)
        if record is None:
            raise ValueError("the history has no recorded scores to plot")
        return record.scores, vectors, record.frozen, "score", record.step
    registry: VectorRegistry = registry_of(source)
    return strengths(registry), registry, (), "S", None


def plot_strengths(source: Any, vectors: Any = None, *, step: Optional[int] = None,
                   path: Union[str, os.PathLike, None] = None, title: Optional[str] = None, ax: Any = None,
                   cmap: str = "viridis", annotate: bool = False) -> Any:
    """Draw the training-strength heatmap and return the matplotlib ``Figure`` (saved as PNG if ``path``).

    Args:
        source: a :class:`~vf_avf.VectorFreezer`, a saved freezer state (dict or JSON path), a ``history``
            list (or one :class:`~vf_avf.AVFRecord`) with ``vectors``, or a VectorFitModel / registry.
        vectors: what the names in a ``history`` refer to (model, registry, or the state's ``vectors`` list).
        step: which recorded AVF step to show (default: the last one with scores).
        path: where to save the PNG. title: the axes title. ax: draw into these axes instead of a new figure.
        cmap: the colormap. annotate: write each value in its cell.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    scores, meta, frozen, symbol, shown_step = _source(source, vectors, step)
    grid = strength_grid(scores, meta, frozen)
    if ax is None:
        fig = Figure(figsize=(max(5.0, 2.0 + 0.45 * len(grid.cols)), max(2.5, 1.2 + 0.3 * len(grid.rows))),
                     layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    image = ax.imshow(grid.values, aspect="auto", cmap=cmap, interpolation="nearest")
    ax.set_xticks(range(len(grid.cols)), grid.cols)
    ax.set_yticks(range(len(grid.rows)), grid.rows)
    ax.set_xlabel("layer")
    default_title = f"Training strength {symbol} per vector" + ("" if shown_step is None else f", step {shown_step}")
    ax.set_title(title if title is not None else default_title, fontsize=10)
    for r, c in sorted(grid.frozen):
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
    if annotate:
        for r, row in enumerate(grid.values):
            for c, value in enumerate(row):
                if not math.isnan(value):
                    ax.text(c, r, f"{value:.2g}", ha="center", va="center", fontsize=6, color="white")
    fig.colorbar(image, ax=ax, label=symbol + ("  (red: frozen)" if grid.frozen else ""))
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig
