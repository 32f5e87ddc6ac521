"""The training-strength heatmap (the paper's Figure 3) from a freezer, a saved state, a history or a model."""

from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("matplotlib")

from vf_core import VectorFitConfig, get_vectorfit_model  # noqa: E402
from vf_avf import AVFConfig, VectorFreezer  # noqa: E402
from vf_avf.plot import plot_strengths, strength_grid  # noqa: E402

from avf_helpers import loss_of, tiny_vf, trainable  # noqa: E402


@pytest.fixture(scope="module")
def trained():
    vf = tiny_vf()
    opt = torch.optim.AdamW(trainable(vf), lr=0.05)
    freezer = VectorFreezer(vf, AVFConfig(t_i=2, t_f=2, n_f=3, k=3))
    for step in range(8):
        loss_of(vf, step).backward()
        freezer.step(step)
        opt.step()
        opt.zero_grad()
    return vf, freezer


def test_grid_has_layers_across_and_role_kind_down(trained):
    vf, freezer = trained
    record = freezer.history[-1]
    grid = strength_grid(record.scores, vf, record.frozen)
    assert grid.cols == ["0", "1"]
    assert grid.rows == [f"{r} σ" for r in ("q", "k", "v", "o", "f1", "f2")] + \
        [f"{r} b" for r in ("q", "k", "v", "o", "f1", "f2")]
    assert grid.names[grid.rows.index("f1 σ")][1] == "blocks.1.up.sigma"
    assert grid.values[0][0] == record.scores["blocks.0.q.sigma"]
    assert {grid.names[r][c] for r, c in grid.frozen} == set(record.frozen)


def test_plot_from_freezer_state_file_history_and_model(trained, tmp_path):
    had_pyplot = "matplotlib.pyplot" in sys.modules
    vf, freezer = trained
    fig = plot_strengths(freezer, path=tmp_path / "avf.png")
    assert (tmp_path / "avf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "S' per vector, step 6" in fig.axes[0].get_title()
    assert len(fig.axes[0].patches) == 3  # the frozen cells, outlined

    freezer.save(tmp_path / "state.json")
    fig = plot_strengths(tmp_path / "state.json", step=2)
    assert "step 2" in fig.axes[0].get_title()
    fig = plot_strengths(freezer.history, vf, path=tmp_path / "history.png")
    assert (tmp_path / "history.png").exists()
    fig = plot_strengths(vf, title="trained", annotate=True)
    assert fig.axes[0].get_title() == "trained" and not fig.axes[0].patches
    with pytest.raises(ValueError, match="vectors="):
        plot_strengths(freezer.history)
    with pytest.raises(ValueError, match="no recorded AVF step 3"):
        plot_strengths(freezer, step=3)
    assert had_pyplot or "matplotlib.pyplot" not in sys.modules  # the global backend is left alone


def test_models_without_blocks_get_one_row_per_vector():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    vf = get_vectorfit_model(net, VectorFitConfig(target_modules=["0", "1"]))
    fig = plot_strengths(vf)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["0.sigma", "0.bias", "1.sigma", "1.bias"]
