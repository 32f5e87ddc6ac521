"""Roles inferred from structure (vf_core.inference) on plain-torch models: what is recognised, what is decomposed
whole, the clear errors for doubtful structures and for models without attention or MLP blocks, and slices taken
by row index. Tiny models of real architectures are in test_inference_models.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vf_core import DecomposedLayer, InferenceError, UnknownFamilyError, VectorFitConfig, get_vectorfit_model
from vf_core.inference import infer_family
from vf_core.layers import SliceSpec


class _Attention(nn.Module):
    def __init__(self, d: int, names=("q", "k", "v", "o"), fused: bool = False) -> None:
        super().__init__()
        self.fused = fused
        if fused:
            self.qkv = nn.Linear(d, 3 * d)
        self.names = names
        for name in names:
            setattr(self, name, nn.Linear(d, d))

    def forward(self, x):
        if self.fused:
            q, k, v = self.qkv(x).chunk(3, -1)
        else:
            q, k, v = (getattr(self, n)(x) for n in self.names[:3])
        att = torch.softmax(q @ k.transpose(-1, -2) / 3.0, -1) @ v
        return getattr(self, self.names[-1])(att)


class _Block(nn.Module):
    def __init__(self, d: int = 8, attention=None, mlp=("fc1", "fc2"), hidden: int = 16) -> None:
        super().__init__()
        self.attn = attention or _Attention(d)
        self.mlp = nn.Module()
        self.mlp_names = mlp
        if mlp:
            setattr(self.mlp, mlp[0], nn.Linear(d, hidden))
            if len(mlp) > 1:
                setattr(self.mlp, mlp[1], nn.Linear(hidden, d))

    def forward(self, x):
        x = x + self.attn(x)
        if len(self.mlp_names) == 2:
            x = x + getattr(self.mlp, self.mlp_names[1])(torch.relu(getattr(self.mlp, self.mlp_names[0])(x)))
        return x


class _Net(nn.Module):
    def __init__(self, blocks) -> None:
        super().__init__()
        self.layers = nn.ModuleList(blocks)
        self.classifier = nn.Linear(8, 2)

    def forward(self, x):
        for block in self.layers:
            x = block(x)
        return self.classifier(x.mean(1))


def test_plain_torch_model_is_recognised():
    net = _Net([_Block(), _Block()])
    family = infer_family(net)
    assert family.roles == {"q": ("attn.q",), "k": ("attn.k",), "v": ("attn.v",), "o": ("attn.o",),
                            "f1": ("mlp.fc1",), "f2": ("mlp.fc2",)}
    assert family.heads == ("classifier",) and family.block_pattern == r"(?:layers\.\d+)"
    assert infer_family(net) is family  # kept for the model object
    net.layers[1].mlp.fc2 = nn.Linear(16, 8, bias=False)  # same structure: same family
    assert infer_family(net) is family
    net.layers[1].mlp.fc2 = nn.Identity()
    with pytest.raises(InferenceError):  # structure changed: inferred again, and now partial
        infer_family(net)


class _Experts(nn.Module):
    """A mixture of experts held as separate nn.Linear modules, with a router (``gate``)."""

    def __init__(self, d: int = 8, hidden: int = 12, n: int = 3, names=("w1", "w3", "w2")) -> None:
        super().__init__()
        self.gate = nn.Linear(d, n, bias=False)
        self.names = names
        self.experts = nn.ModuleList()
        for _ in range(n):
            expert = nn.Module()
            for name, shape in zip(names, ((hidden, d), (hidden, d), (d, hidden))):
                setattr(expert, name, nn.Linear(shape[1], shape[0], bias=False))
            self.experts.append(expert)

    def forward(self, x):
        weights = torch.softmax(self.gate(x), -1)
        gate, up, down = self.names
        outs = [getattr(e, down)(torch.nn.functional.silu(getattr(e, gate)(x)) * getattr(e, up)(x))
                for e in self.experts]
        return sum(w.unsqueeze(-1) * o for w, o in zip(weights.unbind(-1), outs))


class _MoEBlock(_Block):
    def __init__(self, names) -> None:
        super().__init__(mlp=())
        self.moe = _Experts(names=names)

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.moe(x)


@pytest.mark.parametrize("names", [("w1", "w3", "w2"), ("gate_proj", "up_proj", "down_proj")])
def test_experts_as_linear_modules_are_mlps(names):
    torch.manual_seed(0)
    net = _Net([_MoEBlock(names), _MoEBlock(names)])
    x = torch.randn(2, 5, 8)
    expected = net(x)
    vf = get_vectorfit_model(net, VectorFitConfig())
    sigma = {v.name: (v.role, v.layer) for v in vf.vectors.select(kind="sigma")}
    gate, up, down = names
    assert sigma[f"layers.1.moe.experts.2.{gate}.sigma"] == ("f1", 1)
    assert sigma[f"layers.1.moe.experts.2.{up}.sigma"] == ("f1", 1)
    assert sigma[f"layers.0.moe.experts.1.{down}.sigma"] == ("f2", 0)
    assert not any(".moe.gate." in name for name in sigma)  # the router is untouched
    assert len(sigma) == 2 * (4 + 3 * 3)
    torch.testing.assert_close(vf(x), expected, atol=1e-5, rtol=1e-4)


class _MaskedAttention(_Attention):
    """An attention that needs a boolean mask besides the sequence: it cannot be called on random sequences alone."""

    def forward(self, x, mask):
        q, k, v = self.qkv(x).chunk(3, -1)
        scores = (q @ k.transpose(-1, -2) / 3.0).masked_fill(~mask, float("-inf"))
        return self.proj(torch.softmax(scores, -1) @ v)


class _MaskedBlock(_Block):
    def forward(self, x, mask):
        x = x + self.attn(x, mask)
        return x + self.mlp.fc2(torch.relu(self.mlp.fc1(x)))


class _MaskedNet(_Net):
    """Its blocks need the mask it makes: no module around the attention runs on a random sequence either."""

    def forward(self, x):
        mask = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()
        for block in self.layers:
            x = block(x, mask)
        return self.classifier(x.mean(1))


def test_fused_layout_checked_on_a_direct_call():
    """No probe input can be built for this model (its forward takes a bare tensor of tokens), but its attention
    runs on a random sequence alone: the layout is checked there."""
    net = _Net([_Block(attention=_Attention(8, names=("proj",), fused=True)) for _ in range(2)])
    fused = infer_family(net).fused["attn.qkv"]
    assert not fused.whole and "blocked (8/8/8 rows), checked numerically" in fused.note


def test_fused_layout_not_checkable_is_decomposed_whole():
    """No probe input can be built for this model, and its attention (and its blocks) need a mask besides the
    sequence: the fused qkv is one matrix, and the note says why."""
    net = _MaskedNet([_MaskedBlock(attention=_MaskedAttention(8, names=("proj",), fused=True)) for _ in range(2)])
    family = infer_family(net)
    assert family.fused["attn.qkv"].whole and "layout not checked" in family.fused["attn.qkv"].note
    x = torch.randn(2, 5, 8)
    expected = net(x)
    vf = get_vectorfit_model(net, VectorFitConfig())
    torch.testing.assert_close(vf(x), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("blocks, words", [
    ([_Block(attention=_Attention(8, names=("q", "k", "o")))] * 2, ["partial", "no v projection"]),
    ([_Block(attention=_Attention(8, names=("q", "query", "k", "v", "o")))] * 2, ["ambiguous", "q, query"]),
    ([_Block(attention=_Attention(8, fused=True))] * 2, ["ambiguous", "qkv"]),
    ([_Block(mlp=("fc1",))] * 2, ["partial", "MLP", "down (f2)"]),
], ids=["attention-without-v", "two-queries", "fused-and-separate", "mlp-without-down"])
def test_doubtful_structures_raise_a_clear_error(blocks, words):
    net = _Net([copy.deepcopy(b) for b in blocks])
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(InferenceError) as info:
        get_vectorfit_model(net, VectorFitConfig())
    message = str(info.value)
    for word in words:
        assert word in message, message
    assert "target_modules" in message
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # untouched
    assert not any(isinstance(m, DecomposedLayer) for m in net.modules())


def test_widths_may_vary_from_block_to_block():
    """A hierarchical model widens by stage, some vary the MLP ratio per block: each block's units are checked on
    their own, and the log line says where widths vary."""
    torch.manual_seed(0)
    net = _Net([_Block(), _Block(hidden=16), _Block(hidden=24)])
    family = infer_family(net)
    assert family.roles["f1"] == ("mlp.fc1",) and "widths vary across the blocks of layers (mlp.fc1, mlp.fc2)" in (
        family.notes)
    x = torch.randn(2, 5, 8)
    expected = net(x)
    vf = get_vectorfit_model(net, VectorFitConfig())
    torch.testing.assert_close(vf(x), expected, atol=1e-5, rtol=1e-4)


class _ConvBlock(nn.Module):
    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(x)))


def test_cnn_gets_a_clear_error():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(_ConvBlock(), _ConvBlock()), nn.Flatten())
    with pytest.raises(UnknownFamilyError) as info:
        get_vectorfit_model(net, VectorFitConfig())
    message = str(info.value)
    assert "no attention" in message and "CNN" in message and "conv1, conv2" in message
    assert "target_modules" in message and "Known families" in message
    vf = get_vectorfit_model(net, VectorFitConfig(target_modules=["conv1", "conv2"]))  # the way out
    assert len(vf.vectors.select(kind="sigma")) == 4


# ---------------------------------------------------------------------------------------------- row indices
def test_slices_by_row_index_are_exact_and_merge():
    torch.manual_seed(0)
    lin = nn.Linear(6, 12)
    order = torch.randperm(12).tolist()
    slices = [SliceSpec("q", 4, index=tuple(order[:4])), SliceSpec("k", 4, targeted=False, index=tuple(order[4:8])),
              SliceSpec("v", 4, index=tuple(order[8:]))]
    layer = DecomposedLayer.build(lin, "qkv", slices, options=VectorFitConfig())
    x = torch.randn(3, 6)
    torch.testing.assert_close(layer(x), lin(x), atol=1e-5, rtol=1e-4)  # factored (grad enabled)
    with torch.no_grad():
        torch.testing.assert_close(layer.eval()(x), lin(x), atol=1e-5, rtol=1e-4)  # dense
    torch.testing.assert_close(layer.parts["q"].dense_weight(), lin.weight[order[:4]], atol=1e-5, rtol=1e-4)
    merged = layer.merged()
    torch.testing.assert_close(merged.weight, lin.weight, atol=1e-5, rtol=1e-4)
    assert torch.equal(merged.bias, lin.bias)
    assert "row_inverse" not in layer.state_dict()
    with pytest.raises(ValueError, match="exactly once"):
        DecomposedLayer.build(lin, "qkv", [SliceSpec("q", 6, index=tuple(range(6))),
                                           SliceSpec("k", 6, index=tuple(range(6)))])
    with pytest.raises(ValueError, match="every slice or for none"):
        DecomposedLayer.build(lin, "qkv", [SliceSpec("q", 6, index=tuple(range(6))), SliceSpec("k", 6)])
