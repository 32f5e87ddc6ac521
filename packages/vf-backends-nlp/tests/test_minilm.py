"""The real all-MiniLM-L6-v2 (from its registry package): exact decomposition, counts, merge after training."""

from __future__ import annotations

import pytest
import torch

from vf_core import DecomposedLayer, VectorFitConfig, VectorFitModel, get_vectorfit_model

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def minilm():
    from vf_core.assets import AssetError
    from vf_backends_nlp.testing import minilm_with_batch

    try:
        return minilm_with_batch()
    except AssetError as exc:  # pragma: no cover - no registry reachable
        pytest.skip(f"all-MiniLM-L6-v2 could not be fetched: {exc}")


def _fresh(minilm):
    import copy

    model, batch = minilm
    return copy.deepcopy(model), batch


def test_exact_before_training_and_counts(minilm, capsys):
    model, batch = _fresh(minilm)
    with torch.no_grad():
        ref = model(**batch).logits
    vf = get_vectorfit_model(model, VectorFitConfig(modules_to_save=["classifier"]))
    assert vf.family.name == "bert"
    vf.eval()  # no dropout; with gradients enabled the layers run the factored (training) form
    out_train = vf(**batch).logits.detach()
    with torch.no_grad():
        out_eval = vf(**batch).logits
    assert (out_train - ref).abs().max().item() <= 1e-4
    assert (out_eval - ref).abs().max().item() <= 1e-4
    counts = vf.trainable_parameter_counts()
    assert (counts["sigma"], counts["bias"], counts["head"], counts["other"]) == (13_824, 20_736, 770, 0)
    line = vf.print_trainable_parameters()
    assert "13,824 singular values + 20,736 bias entries + 770 head parameters" in line
    assert len(vf.vectors) == 6 * 6 * 2
    assert {v.layer for v in vf.vectors} == set(range(6))


def test_merge_after_training_and_round_trip(minilm, tmp_path):
    import copy

    model, batch = _fresh(minilm)
    base = copy.deepcopy(model)
    vf = get_vectorfit_model(model, VectorFitConfig())
    vf.train()
    opt = torch.optim.AdamW([p for p in vf.parameters() if p.requires_grad], lr=1e-2)
    labels = torch.tensor([1, 0, 1])
    for _ in range(3):
        opt.zero_grad()
        vf(**batch, labels=labels).loss.backward()
        opt.step()
    assert all(v.strength() > 0 for v in vf.vectors)
    vf.eval()
    with torch.no_grad():
        trained = vf(**batch).logits
    vf.save_pretrained(tmp_path)
    loaded = VectorFitModel.from_pretrained(copy.deepcopy(base), tmp_path)
    with torch.no_grad():
        assert (loaded(**batch).logits - trained).abs().max().item() <= 1e-5
    merged = vf.merge_and_unload()
    assert not any(isinstance(m, DecomposedLayer) for m in merged.modules())
    with torch.no_grad():
        assert (merged(**batch).logits - trained).abs().max().item() <= 1e-4


def test_mixed_adapter_batch_equals_each_adapter_alone(minilm):
    """Three adapters trained on different labels (heads included) and the base, mixed in one batch of real text in
    any order: each example's logits are those of its adapter alone (float32, max abs difference <= 1e-5)."""
    model, batch = _fresh(minilm)
    vf = get_vectorfit_model(model, VectorFitConfig(modules_to_save=["classifier"]))
    for i, (name, labels) in enumerate({"default": [1, 0, 1], "flip": [0, 1, 0], "ones": [1, 1, 1]}.items()):
        if name != "default":
            vf.add_adapter(name)
            vf.set_adapter(name)
        vf.train()
        opt = torch.optim.AdamW([p for p in vf.parameters() if p.requires_grad], lr=1e-2)
        vf(**batch, labels=torch.tensor(labels)).loss.backward()
        opt.step()
    vf.set_adapter("default")
    vf.eval()
    names = ["ones", "__base__", "default", "flip", "default", "ones"]
    rows = [0, 1, 2, 0, 1, 2]
    mixed_batch = {k: v[rows] for k, v in batch.items()}
    with torch.no_grad():
        mixed = vf(**mixed_batch, adapter_names=names).logits
        alone = {}
        for name in ("default", "flip", "ones"):
            vf.set_adapter(name)
            alone[name] = vf(**batch).logits
        vf.set_adapter("default")
        with vf.disable_adapter():
            alone["__base__"] = vf(**batch).logits
    assert not torch.allclose(alone["flip"], alone["ones"], atol=1e-3)
    vf.mixed_batch_strategy = "dense"
    with torch.no_grad():
        dense = vf(**mixed_batch, adapter_names=names).logits
    for i, (name, row) in enumerate(zip(names, rows)):
        assert (mixed[i] - alone[name][row]).abs().max().item() <= 1e-5, (i, name)
        assert (dense[i] - alone[name][row]).abs().max().item() <= 1e-5, (i, name)
