"""The figures of a run directory (``DIR/plots/``), after the VectorFit paper (https://arxiv.org/abs/2503.19530).

* ``training_strength.png`` (Figure 3): the training strength ``S`` of every trainable vector at the end of
  training, layers across, role and kind down; vectors frozen by AVF at the end are outlined. Drawn by
  :func:`vf_avf.plot.plot_strengths` when vf-avf is installed, else by a plain heatmap here.
  With AVF, ``training_strength_avf.png`` shows the smoothed strength ``S'`` at the last AVF step.
* ``weight_change_spectra.png`` (Figure 9): per targeted module (one row per block, one column per role), the
  singular values of the weight change ``dW = W_trained - W0`` (for VectorFit ``U diag(s - s0) V^T``, whose
  singular values are ``|s - s0|``), against full fine-tuning's ``dW`` when a full run is given.
* ``leading_sv_change.png`` (Figure 10): the change of the leading singular values, ``s_i(W_trained) -
  s_i(W0)`` for the top ``i``, per role (one line per block), full fine-tuning dashed when available.

Weight matrices are read with :mod:`vf_core.layouts` (so Linear, GPT-2 Conv1D and 1x1 convolutions all work).
matplotlib is imported when a figure is drawn, and only its Agg canvas is used.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from vf_core.layers import DecomposedLayer
from vf_core.layouts import layout_for
from vf_core.roles import ROLES

__all__ = ["capture_matrices", "spectra", "plot_strength_heatmap", "plot_weight_change_spectra",
           "plot_leading_sv_change", "have_matplotlib"]

Target = tuple[str, Optional[str], Optional[int]]  # (module name, role, block index)
TOP_SINGULAR = 32


def have_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def capture_matrices(model, names: Sequence[str]) -> dict:
    """``{name: W}``: the current ``(d_out, d_in)`` weight of each named module, as float32 CPU copies.

    A decomposed module gives its dense ``U diag(s) V^T``; a PEFT LoRA module its merged weight.
    """
    out = {}
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in names:
            module = modules.get(name)
            if module is None:
                continue
            if isinstance(module, DecomposedLayer):
                w = module.dense_weight()
            elif hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
                w = _lora_merged(module, name)
            else:
                w = layout_for(module, name).matrix(module)
            out[name] = w.detach().float().cpu().clone()
    return out


def _lora_merged(module, name: str):
    """The merged weight of a PEFT LoRA layer, read through the base layer's layout."""
    base = module.base_layer
    weight = base.weight.detach().clone()
    for adapter in getattr(module, "active_adapters", []):
        if adapter in getattr(module, "lora_A", {}):
            weight = weight + module.get_delta_weight(adapter).detach().to(weight.dtype)
    shell = copy.copy(base)
    shell._parameters = dict(base._parameters)
    shell._parameters["weight"] = weight
    return layout_for(base, name).matrix(shell)


def spectra(w0: Mapping[str, Any], w1: Mapping[str, Any], top: int = TOP_SINGULAR) -> dict:
    """Per module: ``delta`` = singular values of ``w1 - w0``, ``lead`` = ``s(w1)[:top] - s(w0)[:top]``."""
    out = {}
    for name, a in w0.items():
        b = w1.get(name)
        if b is None or tuple(b.shape) != tuple(a.shape):
            continue
        a64, b64 = a.double(), b.double()
        delta = torch.linalg.svdvals(b64 - a64)
        s0, s1 = torch.linalg.svdvals(a64), torch.linalg.svdvals(b64)
        n = min(top, s0.numel())
        out[name] = {"delta": delta.tolist(), "lead": (s1[:n] - s0[:n]).tolist(), "s0": s0[:n].tolist()}
    return out


# ------------------------------------------------------------------------------------------------ heatmap
def plot_strength_heatmap(scores: Mapping[str, float], vectors: list[dict], path: Path, *,
                          frozen: Sequence[str] = (), title: str = "") -> None:
    """Figure 3: training strength per vector (vf-avf's heatmap when installed)."""
    try:
        from vf_avf.plot import plot_strengths
    except ImportError:
        plot_strengths = None
    if plot_strengths is not None:
        record = {"step": 0, "frozen": [n for n in frozen if n in scores], "scores": dict(scores)}
        # shaped like a saved freezer state, so the colour bar reads "S" (the plain strength)
        plot_strengths({"policy": "final-strength", "history": [record], "vectors": vectors}, path=path,
                       title=title or None)
        return
    rows = sorted({(v["kind"], v.get("role") or "") for v in vectors if v["name"] in scores},
                  key=lambda kr: (kr[0] != "sigma", kr[0], _role_order(kr[1])))
    layers = sorted({v.get("layer") for v in vectors if v["name"] in scores and v.get("layer") is not None})
    index = {(k, r): i for i, (k, r) in enumerate(rows)}
    col = {layer: j for j, layer in enumerate(layers)}
    grid = [[math.nan] * max(len(layers), 1) for _ in rows]
    for v in vectors:
        if v["name"] in scores and v.get("layer") in col:
            grid[index[(v["kind"], v.get("role") or "")]][col[v["layer"]]] = scores[v["name"]]
    fig = _figure(max(5.0, 2 + 0.45 * len(layers)), max(2.5, 1.2 + 0.3 * len(rows)))
    ax = fig.add_subplot()
    image = ax.imshow(grid, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(layers)), [str(x) for x in layers])
    ax.set_yticks(range(len(rows)), [f"{'σ' if k == 'sigma' else k} {r}" for k, r in rows])
    ax.set_xlabel("layer")
    ax.set_title(title or "Training strength per vector", fontsize=10)
    fig.colorbar(image, ax=ax, label="S")
    fig.savefig(path, dpi=150)


def _role_order(role: str) -> int:
    return ROLES.index(role) if role in ROLES else len(ROLES)


# ------------------------------------------------------------------------------------------------ spectra
def _grid_layout(targets: Sequence[Target], max_rows: int = 6):
    roles = sorted({r or "?" for _, r, _ in targets}, key=_role_order)
    layers = sorted({layer for _, _, layer in targets if layer is not None})
    if len(layers) > max_rows:  # evenly spaced blocks, first and last included
        step = (len(layers) - 1) / (max_rows - 1)
        layers = sorted({layers[round(i * step)] for i in range(max_rows)})
    cell = {(r or "?", layer): name for name, r, layer in targets}
    return roles, layers, cell


def plot_weight_change_spectra(targets: Sequence[Target], method: Mapping[str, dict], path: Path, *,
                               full: Optional[Mapping[str, dict]] = None, label: str = "method") -> None:
    """Figure 9: singular values of ``dW`` per module, the method's against full fine-tuning's."""
    roles, layers, cell = _grid_layout([t for t in targets if t[0] in method])
    if not roles or not layers:
        layers = [None]
    fig = _figure(2.1 * max(len(roles), 1) + 0.5, 1.7 * len(layers) + 0.8)
    axes = fig.subplots(len(layers), max(len(roles), 1), squeeze=False)
    for i, layer in enumerate(layers):
        for j, role in enumerate(roles):
            ax = axes[i][j]
            name = cell.get((role, layer))
            if name is None or name not in method:
                ax.set_axis_off()
                continue
            ys = [max(v, 1e-12) for v in method[name]["delta"]]
            ax.semilogy(range(1, len(ys) + 1), ys, color="tab:blue", lw=1.2, label=label)
            if full and name in full:
                yf = [max(v, 1e-12) for v in full[name]["delta"]]
                ax.semilogy(range(1, len(yf) + 1), yf, color="tab:orange", lw=1.2, ls="--", label="full FT")
            ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_title(role, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"layer {layer}", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels() if roles else ([], [])
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8)
    what = "vs full fine-tuning" if full else "(no full fine-tuning run to compare; pass --compare-full)"
    fig.suptitle(f"Singular values of the weight change dW = W - W0, {label} {what}", fontsize=10)
    fig.savefig(path, dpi=130)


def plot_leading_sv_change(targets: Sequence[Target], method: Mapping[str, dict], path: Path, *,
                           full: Optional[Mapping[str, dict]] = None, label: str = "method") -> None:
    """Figure 10: ``s_i(W) - s_i(W0)`` for the leading singular values, per role, one line per block."""
    import matplotlib

    roles, layers, cell = _grid_layout([t for t in targets if t[0] in method], max_rows=64)
    roles = roles or ["?"]
    fig = _figure(2.4 * len(roles) + 0.5, 3.0)
    axes = fig.subplots(1, len(roles), squeeze=False)[0]
    cmap = matplotlib.colormaps["viridis"]
    for j, role in enumerate(roles):
        ax = axes[j]
        for i, layer in enumerate(layers or [None]):
            name = cell.get((role, layer))
            if name is None or name not in method:
                continue
            color = cmap(i / max(len(layers) - 1, 1))
            lead = method[name]["lead"]
            ax.plot(range(1, len(lead) + 1), lead, color=color, lw=1.1, label=f"layer {layer}")
            if full and name in full:
                lf = full[name]["lead"]
                ax.plot(range(1, len(lf) + 1), lf, color=color, lw=0.9, ls="--")
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.set_title(role, fontsize=9)
        ax.set_xlabel("singular value index", fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0].set_ylabel("s_i(W) - s_i(W0)", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right center", fontsize=7)
    extra = "; dashed: full fine-tuning" if full else ""
    fig.suptitle(f"Change of the leading {TOP_SINGULAR} singular values, {label}{extra}", fontsize=10)
    fig.savefig(path, dpi=130)
