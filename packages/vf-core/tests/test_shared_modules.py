"""One module object registered under several names (a block reused across stages, as timm's CoaT does) is decomposed
once and stays one module everywhere: exact at start, one set of trainable vectors, merged, unloaded and reloaded
under every name. Two different modules tied to one weight still raise :class:`TiedWeightError` (test_bad_input)."""

from __future__ import annotations

import torch
from torch import nn

from vf_core import DecomposedLayer, VectorFitConfig, VectorFitModel, get_vectorfit_model


class Reused(nn.Module):
    """``mlp`` is registered under three names: its own and two stages that call it."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(8, 8)
        self.mlp = nn.Linear(8, 8)
        self.stage1 = nn.ModuleDict({"mlp": self.mlp})
        self.stage2 = nn.ModuleDict({"mlp": self.mlp})
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        h = h + torch.tanh(self.stage1["mlp"](h))
        h = h + torch.tanh(self.stage2["mlp"](h))
        return self.out(h)


def _net():
    torch.manual_seed(0)
    return Reused()


def test_a_module_under_several_names_is_decomposed_once_and_stays_shared():
    net, x = _net(), torch.randn(4, 8)
    with torch.no_grad():
        ref = net(x)
    vf = get_vectorfit_model(net, VectorFitConfig(target_modules=["inp", "mlp"]))
    base = vf.get_base_model()
    assert isinstance(base.mlp, DecomposedLayer)
    assert base.stage1["mlp"] is base.mlp and base.stage2["mlp"] is base.mlp
    with torch.no_grad():
        torch.testing.assert_close(vf(x), ref, atol=1e-5, rtol=1e-5)
    assert len([v for v in vf.vectors if "mlp" in v.name]) == 2  # one sigma and one bias vector, not three of each
    vf(x).sum().backward()
    grads = [p.grad for n, p in vf.named_parameters() if p.requires_grad and "mlp" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_merge_unload_and_reload_keep_the_module_shared(tmp_path):
    net, x = _net(), torch.randn(4, 8)
    vf = get_vectorfit_model(net, VectorFitConfig(target_modules=["inp", "mlp"]))
    with torch.no_grad():
        for p in vf.parameters():
            if p.requires_grad:
                p.mul_(1.1)
        trained = vf(x)
    vf.save_pretrained(tmp_path)
    reloaded = VectorFitModel.from_pretrained(_net(), tmp_path)
    assert reloaded.get_base_model().stage2["mlp"] is reloaded.get_base_model().mlp
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), trained, atol=1e-5, rtol=1e-5)
    merged = vf.merge_and_unload()
    assert type(merged.mlp) is nn.Linear and merged.stage1["mlp"] is merged.mlp and merged.stage2["mlp"] is merged.mlp
    with torch.no_grad():
        torch.testing.assert_close(merged(x), trained, atol=1e-5, rtol=1e-5)
    plain = _net()
    with torch.no_grad():
        before = plain(x)
    unloaded = get_vectorfit_model(plain, VectorFitConfig(target_modules=["mlp"])).unload()
    assert type(unloaded.mlp) is nn.Linear and unloaded.stage1["mlp"] is unloaded.mlp
    assert unloaded.stage2["mlp"] is unloaded.mlp
    with torch.no_grad():
        torch.testing.assert_close(unloaded(x), before, atol=1e-5, rtol=1e-5)
