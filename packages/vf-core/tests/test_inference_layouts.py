"""More structures the coverage sweep (benchmarks/coverage, docs/coverage.md) found vf_core.inference missing, on
plain torch models: fused projections whose roles are held in another order than their name says (CodeGen's q, v,
k per group; DaViT's channel attention), attention across channels that is not local in positions (XCiT), fused
layouts checked by calling the attention on its own or on an image of another size than the model states (timm
models built at a small ``img_size``), MLPs known by their class (timm's ``RepVitMlp`` with ConvNorm-wrapped 1x1
convolutions), widths that change from block to block (Hiera's stages), fused keys and values checked on two
sequences (a perceiver's cross-attention) or through the module around the attention (a Conformer's, whose scores
also depend on the queries alone), joint attention whose streams prefix their projections (PRX), square
SwiGLU projections told apart by a call (Ideogram 4), an attention requiring rotary angles and a feed-forward with
up and gate fused (StableAudio 3), and differential attention's fused q1, q2, k1, k2, v left whole.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vf_core import VectorFitConfig, get_vectorfit_model
from vf_core.inference import infer_family
from vf_core_test_utils import assert_inferred_exact_and_trainable

D = 8


def _exact_and_trainable(net, x, roles=("q", "k", "v", "o", "f1", "f2")):
    return assert_inferred_exact_and_trainable(net, x, roles)


class _Mlp(nn.Module):
    def __init__(self, d: int = D, hidden: int = 16) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, attention: nn.Module, mlp: nn.Module) -> None:
        super().__init__()
        self.attn, self.mlp = attention, mlp

    def forward(self, x, *extra):
        x = x + self.attn(x, *extra)
        return x + self.mlp(x)


class _Net(nn.Module):
    def __init__(self, blocks) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


# ---------------------------------------------------------------------------------------------- role order
class _GroupedQVK(nn.Module):
    """CodeGen's ``qkv_proj``: per group of heads, the rows of q, then v, then k."""

    num_heads, head_dim = 2, 4

    def __init__(self) -> None:
        super().__init__()
        self.qkv_proj, self.out_proj = nn.Linear(D, 3 * D), nn.Linear(D, D)

    def forward(self, x):
        b, n, _ = x.shape
        y = self.qkv_proj(x).view(b, n, self.num_heads, 3, self.head_dim)
        q, v, k = (y[..., i, :].transpose(1, 2) for i in range(3))  # (b, heads, n, head_dim)
        att = torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1) @ v
        return self.out_proj(att.transpose(1, 2).reshape(b, n, D))


def test_roles_held_in_another_order_follow_the_check():
    net = _Net([_Block(_GroupedQVK(), _Mlp()) for _ in range(2)])
    fused = infer_family(net).fused["attn.qkv_proj"]
    assert not fused.whole and "held in the order q, v, k, checked numerically" in fused.note, fused.note
    module = net.blocks[0].attn.qkv_proj
    order, sizes = list(fused.order(module)), list(fused.split(module))
    assert sizes == [8, 8, 8]
    # q: rows 0-3 of each group of 12; k: rows 8-11; v: rows 4-7
    assert order[:8] == [0, 1, 2, 3, 12, 13, 14, 15]
    assert order[8:16] == [8, 9, 10, 11, 20, 21, 22, 23] and order[16:] == [4, 5, 6, 7, 16, 17, 18, 19]
    _exact_and_trainable(net, torch.randn(2, 5, D))


class _ChannelAttention(nn.Module):
    """XCiT's cross-covariance attention: the scores compare channels over all positions (q and k normalised along
    the positions), so a query's noise spreads to every position like a key's."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        q, k = F.normalize(q.transpose(1, 2), dim=-1), F.normalize(k.transpose(1, 2), dim=-1)  # (b, D, n)
        att = torch.softmax(q @ k.transpose(-1, -2) * 2.0, -1)  # (b, D, D)
        return self.proj((att @ v.transpose(1, 2)).transpose(1, 2))


def test_attention_across_channels_passes_with_q_before_k():
    net = _Net([_Block(_ChannelAttention(), _Mlp()) for _ in range(2)])
    fused = infer_family(net).fused["attn.qkv"]
    assert not fused.whole and "not local in positions" in fused.note and "blocked (8/8/8 rows)" in fused.note
    _exact_and_trainable(net, torch.randn(2, 5, D))


# ---------------------------------------------------------------------------------------------- probing
class _PositionalAttention(nn.Module):
    """A fused qkv attention that needs the model's position table besides the sequence (it cannot be called on a
    random sequence alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.num_heads = 2
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)

    def forward(self, x, pos):
        q, k, v = self.qkv(x + pos).chunk(3, -1)
        return self.proj(torch.softmax(q @ k.transpose(-1, -2) / 3.0, -1) @ v)


class _SmallImageNet(nn.Module):
    """Built for 32x32 images while it states the 224 of its pretrained configuration, as timm keeps it."""

    pretrained_cfg = {"input_size": (3, 224, 224)}

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, D, 8, stride=8)
        self.pos = nn.Parameter(torch.randn(1, 16, D) * 0.1)
        self.blocks = nn.ModuleList([_Block(_PositionalAttention(), _Mlp()) for _ in range(2)])

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = block(x, self.pos)  # a size mismatch unless the image is 32x32
        return x.mean(1)


def test_probe_tries_other_image_sizes():
    net = _SmallImageNet()
    fused = infer_family(net).fused["attn.qkv"]
    assert not fused.whole and "checked numerically" in fused.note, fused.note
    _exact_and_trainable(net, torch.randn(2, 3, 32, 32))


# ---------------------------------------------------------------------------------------------- MLPs by class
class _ConvNorm(nn.Module):
    """timm's ConvNorm: a 1x1 convolution ``c`` and its batch norm."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.c, self.bn = nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)

    def forward(self, x):
        return self.bn(self.c(x))


class ChannelMlp(nn.Module):
    """RepViT's channel mixer: an MLP by its class, its matrices spelled conv1 and conv2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = _ConvNorm(D, 2 * D), _ConvNorm(2 * D, D)

    def forward(self, x):
        return self.conv2(F.gelu(self.conv1(x)))


class _ConvBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.token_mixer = nn.Conv2d(D, D, 3, padding=1, groups=D)
        self.channel_mixer = ChannelMlp()

    def forward(self, x):
        x = x + self.token_mixer(x)
        return x + self.channel_mixer(x)


def test_mlp_known_by_its_class():
    net = nn.Sequential(nn.Conv2d(3, D, 1), nn.Sequential(_ConvBlock(), _ConvBlock()))
    family = infer_family(net)
    assert family.roles == {"f1": ("channel_mixer.conv1.c",), "f2": ("channel_mixer.conv2.c",)}
    _exact_and_trainable(net, torch.randn(2, 3, 4, 4), roles=("f1", "f2"))


# ---------------------------------------------------------------------------------------------- widths
class _Attention(nn.Module):
    def __init__(self, d_in: int, d: int) -> None:
        super().__init__()
        self.num_heads = 2
        self.qkv, self.proj = nn.Linear(d_in, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        return self.proj(torch.softmax(q @ k.transpose(-1, -2) / 3.0, -1) @ v)


class _StageBlock(nn.Module):
    """Hiera's block: the first of a stage widens the stream (its qkv reads the narrower width)."""

    def __init__(self, d_in: int, d: int) -> None:
        super().__init__()
        self.widen = nn.Identity() if d_in == d else nn.Linear(d_in, d, bias=False)
        self.attn, self.mlp = _Attention(d_in, d), _Mlp(d, 2 * d)

    def forward(self, x):
        x = self.widen(x) + self.attn(x)
        return x + self.mlp(x)


def test_widths_change_by_stage():
    net = _Net([_StageBlock(8, 8), _StageBlock(8, 8), _StageBlock(8, 16), _StageBlock(16, 16)])
    family = infer_family(net)
    assert "widths vary across the blocks of blocks" in family.notes
    assert not family.fused["attn.qkv"].whole and "blocked at 2 widths" in family.fused["attn.qkv"].note
    _exact_and_trainable(net, torch.randn(2, 5, 8))


class _ActivatedQKV(nn.Module):
    """MiniMax's lightning attention: an activation on the fused projection's output, so the output is linear in
    no rows: no layout passes, and the projection is decomposed whole."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv_proj, self.out_proj = nn.Linear(D, 3 * D), nn.Linear(D, D)

    def forward(self, x):
        q, k, v = F.silu(self.qkv_proj(x)).chunk(3, -1)
        return self.out_proj(torch.softmax(q @ k.transpose(-1, -2) / 3.0, -1) @ v)


def test_unrecognised_layout_is_decomposed_whole():
    net = _Net([_Block(_ActivatedQKV(), _Mlp()) for _ in range(2)])
    family = infer_family(net)
    fused = family.fused["attn.qkv_proj"]
    assert fused.whole and "layout not recognised: the output is not linear in the v rows" in fused.note
    assert "q+k+v as one matrix" in family.notes
    _exact_and_trainable(net, torch.randn(2, 5, D), roles=(None, "o", "f1", "f2"))


class _OneChannelAttention(nn.Module):
    """CSATv2's spatial attention: one head over a single channel, normalised by a LayerNorm of width 1 (whose
    output is its bias: zero at initialisation), so the fused projection's three rows cannot move the output."""

    def __init__(self) -> None:
        super().__init__()
        self.norm, self.qkv = nn.LayerNorm(1), nn.Linear(1, 3, bias=False)
        self.mlp = _Mlp(1, 4)

    def forward(self, x):  # (b, n, 1)
        q, k, v = self.qkv(self.norm(x)).unbind(-1)
        x = x + (torch.softmax(q[..., :, None] * k[..., None, :], -1) @ v[..., None])
        return x + self.mlp(x)


def test_projection_the_output_ignores_takes_its_sole_layout():
    net = _Net([_OneChannelAttention() for _ in range(2)])
    family = infer_family(net)  # zeroed norm epsilons made the probe 0/0: they are kept instead
    fused = family.fused["qkv"]
    assert not fused.whole and "blocked (1/1/1 rows), not checked" in fused.note, fused.note
    assert fused.split(net.blocks[0].qkv) == [1, 1, 1]
    x = torch.randn(2, 5, 1)
    with torch.no_grad():
        expected = net(x)
    vf = get_vectorfit_model(net, VectorFitConfig())
    assert {v.role for v in vf.vectors} == {"q", "k", "v", "f1", "f2"}
    with torch.no_grad():
        torch.testing.assert_close(vf(x), expected, atol=1e-5, rtol=1e-4)


class _GlobalQueryAttention(nn.Module):
    """GCViT's global attention: its ``qkv`` holds keys and values only (2 x D rows, per head k then v blocks), the
    queries coming from outside (a global query passed in)."""

    num_heads = 2

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(D, 2 * D), nn.Linear(D, D)

    def forward(self, x, q_global):
        b, n, _ = x.shape
        k, v = self.qkv(x).view(b, n, 2, self.num_heads, D // 2).permute(2, 0, 3, 1, 4)
        q = q_global.view(b, n, self.num_heads, D // 2).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1) @ v
        return self.proj(att.transpose(1, 2).reshape(b, n, D))


class _GlobalNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, D, 4, stride=4)
        self.query = nn.Parameter(torch.randn(1, 4, D))
        self.blocks = nn.ModuleList([_Block(_GlobalQueryAttention(), _Mlp()) for _ in range(2)])
        self.img_size = 8

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = block(x, self.query.expand(x.shape[0], -1, -1))
        return x


def test_qkv_holding_keys_and_values_only():
    net = _GlobalNet()
    fused = infer_family(net).fused["attn.qkv"]
    assert fused.roles == ("k", "v") and not fused.whole, fused
    assert "k/v blocked (8/8 rows)" in fused.note and "keys and values only" in fused.note, fused.note
    assert fused.split(net.blocks[0].attn.qkv) == [8, 8]
    _exact_and_trainable(net, torch.randn(2, 3, 8, 8), roles=("k", "v", "o", "f1", "f2"))


# ---------------------------------------------------------------------------------------------- LeViT
class _LinearNorm(nn.Module):
    """LeViT's LinearNorm: a linear layer without bias and a batch norm (weight 0 where it ends a residual branch)."""

    def __init__(self, d_in: int, d_out: int, weight: float = 1.0) -> None:
        super().__init__()
        self.linear, self.bn = nn.Linear(d_in, d_out, bias=False), nn.BatchNorm1d(d_out)
        nn.init.constant_(self.bn.weight, weight)

    def forward(self, x):
        y = self.linear(x)
        return self.bn(y.flatten(0, 1)).reshape_as(y)


class _Subsample(nn.Module):
    def forward(self, x):
        return x[:, ::2]


class _KeyValueAttention(nn.Module):
    """LeViT's attention: the query in a container (``q = Sequential(Subsample, LinearNorm)``, subsampled where the
    attention downsamples), keys and values fused in ``kv`` per head with keys narrower than values, and the output
    projection after an activation (``proj = Sequential(Hardswish, LinearNorm)``), its norm's weight 0 on a
    residual branch (the attention's output starts at zero)."""

    num_heads, key_dim, val_dim = 2, 4, 8

    def __init__(self, downsample: bool) -> None:
        super().__init__()
        h, k, v = self.num_heads, self.key_dim, self.val_dim
        self.downsample = downsample
        self.kv = _LinearNorm(D, h * (k + v))
        self.q = nn.Sequential(_Subsample() if downsample else nn.Identity(), _LinearNorm(D, h * k))
        self.proj = nn.Sequential(nn.Hardswish(), _LinearNorm(h * v, D, 1.0 if downsample else 0.0))

    def forward(self, x):
        b, n, _ = x.shape
        h = self.num_heads
        k, v = self.kv(x).view(b, n, h, -1).split([self.key_dim, self.val_dim], -1)
        q = self.q(x).view(b, -1, h, self.key_dim)
        att = torch.softmax(q.transpose(1, 2) @ k.permute(0, 2, 3, 1) / 2.0, -1) @ v.transpose(1, 2)
        return self.proj(att.transpose(1, 2).reshape(b, -1, h * self.val_dim))


class _LevitBlock(nn.Module):
    def __init__(self, downsample: bool) -> None:
        super().__init__()
        self.attn, self.mlp = _KeyValueAttention(downsample), _Mlp()

    def forward(self, x):
        x = self.attn(x) if self.attn.downsample else x + self.attn(x)  # LeViT's Residual wraps the attention
        return x + self.mlp(x)


@pytest.mark.parametrize("downsample", [True, False], ids=["downsampling", "residual-zero-init"])
def test_query_and_output_in_containers_keys_values_per_head(downsample):
    net = _Net([_LevitBlock(downsample) for _ in range(2)])
    family = infer_family(net)
    assert family.roles["q"] == ("attn.q.1.linear",) and family.roles["o"] == ("attn.proj.1.linear",), family.roles
    fused = family.fused["attn.kv.linear"]
    assert not fused.whole and "k/v interleaved per head (2 groups of 4/8 rows)" in fused.note, fused.note
    x = torch.randn(2, 8, D)
    if downsample:  # the activation before the output projection: compared on its input
        _exact_and_trainable(net, x)
    else:  # the attention's output starts at zero: compared on the output projection's input
        with torch.no_grad():
            expected = net(x)
            torch.testing.assert_close(get_vectorfit_model(net, VectorFitConfig())(x), expected)


# ---------------------------------------------------------------------------------------------- TNT
class _QueryKeyAttention(nn.Module):
    """TNT's attention: queries and keys fused in ``qk`` (blocked), values in ``v``, output ``proj``."""

    num_heads = 2

    def __init__(self) -> None:
        super().__init__()
        self.qk, self.v, self.proj = nn.Linear(D, 2 * D), nn.Linear(D, D), nn.Linear(D, D)

    def forward(self, x):
        b, n, _ = x.shape
        q, k = self.qk(x).view(b, n, 2, self.num_heads, D // 2).permute(2, 0, 3, 1, 4)
        v = self.v(x).view(b, n, self.num_heads, D // 2).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1) @ v
        return self.proj(att.transpose(1, 2).reshape(b, n, D))


class _InnerOuterBlock(nn.Module):
    """TNT's block: an inner and an outer attention (``attn_in``, ``attn_out``: the latter spelled like an output
    projection, yet holding three projections, so not a wrapper of ``proj``) and an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.attn_in, self.attn_out, self.mlp = _QueryKeyAttention(), _QueryKeyAttention(), _Mlp()

    def forward(self, x):
        x = x + self.attn_in(x)
        x = x + self.attn_out(x)
        return x + self.mlp(x)


def test_query_key_fused_next_to_values():
    net = _Net([_InnerOuterBlock() for _ in range(2)])
    family = infer_family(net)
    assert family.roles["o"] == ("attn_in.proj", "attn_out.proj") and family.roles["v"] == ("attn_in.v", "attn_out.v")
    fused = family.fused["attn_out.qk"]
    assert fused.roles == ("q", "k") and "q/k blocked (8/8 rows), checked numerically" in fused.note, fused.note
    _exact_and_trainable(net, torch.randn(2, 5, D))


# ---------------------------------------------------------------------------------------------- iFormer
class _GatedValueAttention(nn.Module):
    """iFormer's single-head modulation attention on a feature map: q, k, and ``v_gate`` (the values and their
    output gate, through a sigmoid), output ``proj``."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k = _ConvNorm(D, D // 2), _ConvNorm(D, D // 2)
        self.v_gate, self.proj = _ConvNorm(D, 2 * D), _ConvNorm(D, D)

    def forward(self, x):
        b, c, h, w = x.shape
        v, gate = torch.sigmoid(self.v_gate(x)).chunk(2, 1)
        q, k = self.q(x).flatten(2), self.k(x).flatten(2)
        att = torch.softmax(q.transpose(1, 2) @ k / 2.0, -1)  # (b, hw, hw)
        out = (v.flatten(2) @ att.transpose(1, 2)).view(b, c, h, w)
        return self.proj(out * gate)


class _Mixer(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x):
        return x + self.module(x)


class FFN(nn.Module):
    """iFormer's FFN block: ``mixer.module`` = 1x1 up, GELU, 1x1 down (an MLP by its class)."""

    def __init__(self) -> None:
        super().__init__()
        self.mixer = _Mixer(nn.Sequential(_ConvNorm(D, 2 * D), nn.GELU(), _ConvNorm(2 * D, D)))

    def forward(self, x):
        return self.mixer(x)


class _DepthwiseBlock(nn.Module):
    """iFormer's convolution block: a depthwise ``mixer.module.0.c``, where an FFN block has its up projection."""

    def __init__(self) -> None:
        super().__init__()
        dw = nn.Conv2d(D, D, 3, padding=1, groups=D, bias=False)
        self.mixer = _Mixer(nn.Sequential(nn.Module(), _ConvNorm(D, D)))
        self.mixer.module[0].c = dw

    def forward(self, x):
        return self.mixer.module[1](self.mixer.module[0].c(x)) + x


class _AttentionBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mixer = _Mixer(_GatedValueAttention())

    def forward(self, x):
        return self.mixer(x)


class _Stage(nn.Module):
    def __init__(self, blocks) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.blocks(x)


class _Stages(nn.Module):
    def __init__(self, stages) -> None:
        super().__init__()
        self.stem, self.stages = nn.Conv2d(3, D, 1), nn.Sequential(*stages)

    def forward(self, x):
        return self.stages(self.stem(x))


def test_gated_values_and_blocks_where_roles_were_found():
    stages = [_Stage([_DepthwiseBlock(), _AttentionBlock(), FFN(), _AttentionBlock(), FFN()]),
              _Stage([_AttentionBlock(), FFN(), _AttentionBlock(), FFN(), _DepthwiseBlock()])]  # the attention in other blocks per stage
    net = _Stages(stages)
    family = infer_family(net)
    assert family.roles["v"] == ("mixer.module.v_gate.c",) and family.roles["f1"] == ("mixer.module.0.c",)
    assert "stages\\.1\\.blocks\\.(?:0|1|2|3)(?![0-9])" in family.block_pattern, family.block_pattern  # not 4
    _exact_and_trainable(net, torch.randn(2, 3, 4, 4))


# ---------------------------------------------------------------------------------------------- calls, streams
class _CrossKV(nn.Module):
    """A perceiver's cross-attention: queries from the sequence, keys and values fused in ``to_kv`` from a context
    of another width; it needs both, so it cannot be called on one random sequence."""

    def __init__(self, d_ctx: int = 6) -> None:
        super().__init__()
        self.to_q, self.to_kv, self.to_out = nn.Linear(D, D), nn.Linear(d_ctx, 2 * D), nn.Linear(D, D)

    def forward(self, x, context):
        k, v = self.to_kv(context).chunk(2, -1)
        return self.to_out(torch.softmax(self.to_q(x) @ k.transpose(-1, -2) / 3.0, -1) @ v)


class _CrossBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn, self.mlp = _CrossKV(), _Mlp()

    def forward(self, x, context):
        x = x + self.attn(x, context)
        return x + self.mlp(x)


class _CrossNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(D, 6)
        self.blocks = nn.ModuleList([_CrossBlock(), _CrossBlock()])

    def forward(self, x):
        context = self.embed(x)[:, :3]
        for block in self.blocks:
            x = block(x, context)
        return x


def test_fused_keys_values_checked_on_two_sequences():
    net = _CrossNet()
    fused = infer_family(net).fused["attn.to_kv"]
    assert not fused.whole and "k/v blocked (8/8 rows), checked numerically" in fused.note, fused.note
    vf = _exact_and_trainable(net, torch.randn(2, 5, D))
    assert {"blocks.0.attn.to_kv.k.sigma", "blocks.0.attn.to_kv.v.sigma"} <= {v.name for v in vf.vectors}


class _ShawAttention(nn.Module):
    """A Conformer's attention (Granite Speech): a relative-position term computed from the queries alone (so scaling
    q by 2 and k by 1/2 moves the scores), over distances its encoder computes and passes in."""

    def __init__(self) -> None:
        super().__init__()
        self.to_q, self.to_kv, self.to_out = nn.Linear(D, D), nn.Linear(D, 2 * D), nn.Linear(D, D)
        self.rel_pos = nn.Embedding(9, D)

    def forward(self, x, dists):
        q = self.to_q(x)
        k, v = self.to_kv(x).chunk(2, -1)
        scores = q @ k.transpose(-1, -2) + torch.einsum("bid,ijd->bij", q, self.rel_pos(dists))
        return self.to_out(torch.softmax(scores / 3.0, -1) @ v)


class _ShawBlock(_CrossBlock):
    def __init__(self) -> None:
        super().__init__()
        self.attn = _ShawAttention()


class _ShawEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_ShawBlock(), _ShawBlock()])

    def forward(self, x):
        pos = torch.arange(x.shape[1])
        dists = (pos[:, None] - pos[None, :]).clamp(-4, 4) + 4
        for block in self.blocks:
            x = block(x, dists)
        return x


class _TokenModel(nn.Module):
    """Its forward takes token ids (no probe input is built for it), its encoder a sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.encoder = nn.Embedding(11, D), _ShawEncoder()

    def forward(self, ids):
        return self.encoder(self.embed(ids))


def test_fused_keys_values_checked_through_the_enclosing_module():
    net = _TokenModel()
    fused = infer_family(net).fused["attn.to_kv"]
    assert not fused.whole and "linear in the v rows, not in the k rows" in fused.note, fused.note
    _exact_and_trainable(net, torch.randint(0, 11, (2, 5)))


class _StreamAttention(nn.Module):
    """Joint attention whose streams prefix their projections (PRX): the image stream's ``img_qkv_proj``, the text
    stream's keys and values only (``txt_kv_proj``), one output projection ``to_out.0``; queries and keys normalised
    (as PRX's are), so the check's scaling of one stream's q and k rows leaves the scores unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.img_qkv_proj, self.txt_kv_proj = nn.Linear(D, 3 * D), nn.Linear(6, 2 * D)
        self.to_out = nn.ModuleList([nn.Linear(D, D)])

    def forward(self, x, text):
        q, k, v = self.img_qkv_proj(x).chunk(3, -1)
        tk, tv = self.txt_kv_proj(text).chunk(2, -1)
        q, k, v = F.normalize(q, dim=-1), F.normalize(torch.cat([tk, k], 1), dim=-1), torch.cat([tv, v], 1)
        return self.to_out[0](torch.softmax(q @ k.transpose(-1, -2) * 2.0, -1) @ v)


class _StreamBlock(_CrossBlock):
    def __init__(self) -> None:
        super().__init__()
        self.attn = _StreamAttention()


def test_stream_prefixed_projections_of_joint_attention():
    net = _CrossNet()
    net.blocks = nn.ModuleList([_StreamBlock(), _StreamBlock()])
    family = infer_family(net)
    assert family.roles["o"] == ("attn.to_out.0",)
    assert family.fused["attn.img_qkv_proj"].roles == ("q", "k", "v")
    assert family.fused["attn.txt_kv_proj"].roles == ("k", "v")
    assert not any(fm.whole for fm in family.fused.values()), family.notes
    _exact_and_trainable(net, torch.randn(2, 5, D))


class _SquareSwiGLU(nn.Module):
    """Ideogram 4's feed-forward: ``w1``, ``w2`` and ``w3`` all square, so only a call tells the down projection."""

    def __init__(self) -> None:
        super().__init__()
        self.w1, self.w2, self.w3 = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def test_mlp_down_projection_told_by_a_call():
    net = _Net([_Block(_Attention(D, D), _SquareSwiGLU()) for _ in range(2)])
    family = infer_family(net)
    assert family.roles["f1"] == ("mlp.w1", "mlp.w3") and family.roles["f2"] == ("mlp.w2",)
    _exact_and_trainable(net, torch.randn(2, 5, D))


# ---------------------------------------------------------------------------------------------- fallback layouts
class _NarrowKeyAttention(nn.Module):
    """SHViT's single-head attention: ``qkv`` holds q and k of width ``qk_dim``, then the values (wider), blocked;
    no heads stated."""

    def __init__(self, qk_dim: int = 2) -> None:
        super().__init__()
        self.qk_dim = qk_dim
        self.qkv, self.proj = nn.Linear(D, 2 * qk_dim + D), nn.Linear(D, D)

    def forward(self, x):
        q, k, v = self.qkv(x).split([self.qk_dim, self.qk_dim, D], -1)
        return self.proj(torch.softmax(q @ k.transpose(-1, -2), -1) @ v)


def test_queries_and_keys_narrower_than_values_by_attribute():
    net = _Net([_Block(_NarrowKeyAttention(), _Mlp()) for _ in range(2)])
    fused = infer_family(net).fused["attn.qkv"]
    assert not fused.whole and "q/k/v blocked (2/2/8 rows), checked numerically" == fused.note, fused.note
    assert list(fused.split(net.blocks[0].attn.qkv)) == [2, 2, 8] and fused.order is None
    _exact_and_trainable(net, torch.randn(2, 5, D))


class _HeadWidthOnlyAttention(nn.Module):
    """EfficientViT's (MIT) attention: q, k, v of each head together in ``qkv``, only the head width ``dim`` stated
    (an attribute no size reader knows), no number of heads."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.dim = dim
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, -1, 3 * self.dim).transpose(1, 2).chunk(3, -1)  # (b, heads, n, dim)
        att = torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1) @ v
        return self.proj(att.transpose(1, 2).reshape(b, n, D))


def test_interleaved_per_head_of_an_unstated_head_width():
    net = _Net([_Block(_HeadWidthOnlyAttention(), _Mlp()) for _ in range(2)])
    fused = infer_family(net).fused["attn.qkv"]
    assert not fused.whole and "interleaved per head (2 groups of 4/4/4 rows)" in fused.note, fused.note
    order = list(fused.order(net.blocks[0].attn.qkv))
    assert order[:8] == [0, 1, 2, 3, 12, 13, 14, 15]  # q: rows 0-3 of each group of 12
    assert order[8:16] == [4, 5, 6, 7, 16, 17, 18, 19] and order[16:] == [8, 9, 10, 11, 20, 21, 22, 23]
    _exact_and_trainable(net, torch.randn(2, 5, D))


# ---------------------------------------------------------------------------------------------- attention by class
class ConvAttention(nn.Module):
    """CPUBone's attention, known by its class only: ``pwise`` holds q, k, v per head (``num_heads``), the output
    projection is folded into ``upsampling.0``."""

    num_heads, head_dim = 2, 4

    def __init__(self) -> None:
        super().__init__()
        self.pwise = nn.Conv2d(D, 3 * D, 1, bias=False)
        self.upsampling = nn.Sequential(nn.Conv2d(D, D, 1), nn.Identity())

    def forward(self, x):
        b, _, h, w = x.shape
        qkv = self.pwise(x).reshape(b, self.num_heads, 3 * self.head_dim, h * w).transpose(-1, -2)
        q, k, v = qkv.chunk(3, -1)
        out = torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1) @ v  # (b, heads, hw, head_dim)
        return self.upsampling(out.transpose(-1, -2).reshape(b, D, h, w))


class _ConvAttentionBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn, self.channel_mixer = ConvAttention(), ChannelMlp()

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.channel_mixer(x)


def test_attention_known_by_its_class():
    net = nn.Sequential(nn.Conv2d(3, D, 1), nn.Sequential(_ConvAttentionBlock(), _ConvAttentionBlock()))
    family = infer_family(net)
    assert family.roles["o"] == ("attn.upsampling.0",)
    fused = family.fused["attn.pwise"]
    assert not fused.whole and "interleaved per head (2 groups of 4/4/4 rows)" in fused.note, fused.note
    _exact_and_trainable(net, torch.randn(2, 3, 4, 4))


# ---------------------------------------------------------------------------------------------- rotary, gated
def _rotate(t, angles):
    """A partial rotary position: the first ``angles.shape[-1]`` channels of each head turned, the rest left."""
    r = angles.shape[-1]
    head, rest = t[..., :r], t[..., r:]
    a, b = head.chunk(2, -1)
    turned = head * angles.cos() + torch.cat([-b, a], -1) * angles.sin()
    return torch.cat([turned, rest], -1)


class _RotaryAttention(nn.Module):
    """StableAudio 3's self-attention: ``forward(x, rope)`` with the rotary angles required (its model computes
    them), a fused ``to_qkv`` (``n_proj`` = 5: differential attention's q1, q2, k1, k2, v), normalised q and k."""

    heads, dim_heads = 2, 4

    def __init__(self, n_proj: int = 3) -> None:
        super().__init__()
        self.n_proj = n_proj
        self.to_qkv, self.to_out = nn.Linear(D, n_proj * D, bias=False), nn.Linear(D, D)

    def attend(self, q, k, v, rope):
        q, k = (_rotate(F.normalize(t, dim=-1), rope[-t.shape[-3]:, None]) for t in (q, k))
        scores = torch.einsum("bihd,bjhd->bhij", q, k) * 2.0
        return torch.einsum("bhij,bjhd->bihd", torch.softmax(scores, -1), v)

    def forward(self, x, rope):
        parts = [t.unflatten(-1, (self.heads, self.dim_heads)) for t in self.to_qkv(x).chunk(self.n_proj, -1)]
        if self.n_proj == 3:
            out = self.attend(*parts, rope)
        else:
            q1, q2, k1, k2, v = parts
            out = self.attend(q1, k1, v, rope) - self.attend(q2, k2, v, rope)
        return self.to_out(out.flatten(-2))


class _GatedFeedForward(nn.Module):
    """StableAudio 3's feed-forward: up and gate fused in ``proj_in``, its output chunked in two, then ``proj_out``."""

    def __init__(self, hidden: int = 12) -> None:
        super().__init__()
        self.proj_in, self.proj_out = nn.Linear(D, 2 * hidden), nn.Linear(hidden, D)

    def forward(self, x):
        up, gate = self.proj_in(x).chunk(2, -1)
        return self.proj_out(up * F.silu(gate))


class _RotaryBlock(nn.Module):
    def __init__(self, n_proj: int) -> None:
        super().__init__()
        self.self_attn, self.ff = _RotaryAttention(n_proj), _GatedFeedForward()

    def forward(self, x, rope):
        x = x + self.self_attn(x, rope)
        return x + self.ff(x)


class _RotaryNet(nn.Module):
    """Its forward computes the angles every block needs: neither the model (no probe input) nor a block (no
    angles) can be called on a random sequence."""

    def __init__(self, n_proj: int = 3) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_RotaryBlock(n_proj), _RotaryBlock(n_proj)])
        self.register_buffer("inv_freq", 1.0 / 100 ** torch.arange(0, 1, 0.5))

    def forward(self, x):
        angles = torch.outer(torch.arange(x.shape[1], dtype=x.dtype), self.inv_freq)
        rope = torch.cat([angles, angles], -1)  # (length, 4): the whole head of 4 channels turned
        for block in self.blocks:
            x = block(x, rope)
        return x


def test_attention_requiring_rotary_angles_called_with_an_identity_rotation():
    net = _RotaryNet()
    family = infer_family(net)
    fused = family.fused["self_attn.to_qkv"]
    assert not fused.whole and "q/k/v blocked (8/8/8 rows), checked numerically" in fused.note, fused.note
    assert family.roles["f1"] == ("ff.proj_in",) and family.roles["f2"] == ("ff.proj_out",)
    vf = _exact_and_trainable(net, torch.randn(2, 5, D))
    assert {"blocks.0.self_attn.to_qkv.q.sigma", "blocks.1.ff.proj_in.sigma"} <= {v.name for v in vf.vectors}


def test_differential_attention_is_not_split_as_q_k_v():
    """q1, q2, k1, k2, v fused: normalised keys make the scalings blind (q1 as q, q2 and k1 as k, k2 and v as v
    pass them), noise added to the v rows is not: decomposed whole, still exact and trainable."""
    net = _RotaryNet(n_proj=5)
    fused = infer_family(net).fused["self_attn.to_qkv"]
    assert fused.whole and "not linear in the v rows" in fused.note, fused.note
    _exact_and_trainable(net, torch.randn(2, 5, D), roles=(None, "o", "f1", "f2"))


class _NormalisedValues(nn.Module):
    """MViTv2's attention: queries, keys and values each under a norm of its own (``norm_v``), so zeroing the v rows
    is 0/0 and doubling them changes nothing: the values' rows cannot be checked, the other checks still run."""

    def __init__(self) -> None:
        super().__init__()
        self.num_heads = 2
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.norm_v = nn.LayerNorm(D)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        q, k, v = F.normalize(q, dim=-1), F.normalize(k, dim=-1), self.norm_v(v)
        return self.proj(torch.softmax(q @ k.transpose(-1, -2) * 2.0, -1) @ v)


def test_normalised_values_pass_on_the_other_checks_and_say_so():
    net = _Net([_Block(_NormalisedValues(), _Mlp()) for _ in range(2)])
    fused = infer_family(net).fused["attn.qkv"]
    assert not fused.whole and "the values are normalised: their rows not checked" in fused.note, fused.note
    _exact_and_trainable(net, torch.randn(2, 5, D))
