"""Structures the coverage sweep (benchmarks/coverage, docs/coverage.md) found vf_core.inference missing, on plain
torch models: more spellings of q, k, v, o and of MLPs, projections that wrap their linear layer, an attention's
output gate, hybrid stacks (blocks without attention), MoE blocks with 3-D experts next to dense blocks, and fused
projections under normalised queries and keys. Tiny models of the real architectures are in
test_inference_models.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from vf_core import InferenceError, VectorFitConfig, get_vectorfit_model
from vf_core.inference import infer_family
from vf_core_test_utils import assert_inferred_exact_and_trainable

D, H = 8, 16


class _Attention(nn.Module):
    """q, k, v, o under the given names; a name with a dot is a module holding the linear (``q_proj.linear``);
    ``gate`` adds an output gate (``gate_proj``) inside the attention."""

    def __init__(self, names=("q", "k", "v", "o"), gate: str = "") -> None:
        super().__init__()
        self.names = names
        for name in names:
            owner = self
            *path, leaf = name.split(".")
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, nn.Module())
                owner = getattr(owner, part)
            owner.add_module(leaf, nn.Linear(D, D))
        self.gate = gate
        if gate:
            owner = self.get_submodule(gate.rsplit(".", 1)[0]) if "." in gate else self
            owner.add_module(gate.rsplit(".", 1)[-1], nn.Linear(D, D))

    def forward(self, x):
        q, k, v, o = (self.get_submodule(n) for n in self.names)
        att = torch.softmax(q(x) @ k(x).transpose(-1, -2) / 3.0, -1) @ v(x)
        if self.gate:
            att = att * torch.sigmoid(self.get_submodule(self.gate)(x))
        return o(att)


class _Mlp(nn.Module):
    def __init__(self, up="fc1", down="fc2") -> None:
        super().__init__()
        self.up, self.down = up, down
        for name, (i, o) in ((up, (D, H)), (down, (H, D))):
            owner = self
            *path, leaf = name.split(".")
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, nn.Module())
                owner = getattr(owner, part)
            owner.add_module(leaf, nn.Linear(i, o))

    def forward(self, x):
        return self.get_submodule(self.down)(torch.relu(self.get_submodule(self.up)(x)))


class _Block(nn.Module):
    def __init__(self, attention=None, mlp=None, mixer: bool = False) -> None:
        super().__init__()
        self.attn = attention
        self.mixer = nn.Conv1d(D, D, 3, padding=1, groups=D) if mixer else None  # no attention: a convolution
        self.mlp = mlp

    def forward(self, x):
        if self.attn is not None:
            x = x + self.attn(x)
        if self.mixer is not None:
            x = x + self.mixer(x.transpose(1, 2)).transpose(1, 2)
        if self.mlp is not None:
            x = x + self.mlp(x)
        return x


class _Net(nn.Module):
    def __init__(self, blocks) -> None:
        super().__init__()
        self.layers = nn.ModuleList(blocks)

    def forward(self, x):
        for block in self.layers:
            x = block(x)
        return x


def _exact_and_trainable(net, roles):
    torch.manual_seed(0)
    return assert_inferred_exact_and_trainable(net, torch.randn(2, 5, D), roles)


ALL = ("q", "k", "v", "o", "f1", "f2")


@pytest.mark.parametrize("names, mlp", [
    (("projection_query", "projection_key", "projection_value", "o"), ("fc1", "fc2")),  # CvT
    (("project_q", "project_k", "project_v", "attention_out"), ("w_in.w_0", "w_out")),  # CPM-Ant
    (("q_head", "k_head", "v_head", "post_proj"), ("dense1", "dense2")),  # Funnel; PVT's MLP
    (("to_q", "k", "v", "to_out"), ("intermediate", "output")),  # Granite Speech; ProphetNet's feed-forward
    (("q_proj.linear", "k_proj.linear", "v_proj.linear", "o_proj.linear"), ("fc1", "fc2")),  # Moshi, Inkling
    (("query.dense", "key.dense", "value.dense", "out.proj"), ("up_proj.linear", "down_proj.linear")),
    (("q", "k", "v", "o"), ("linear_fc1", "linear_fc2")),  # Megatron's names (ERNIE-Image)
    (("q", "k", "v", "o"), ("linear_in", "linear_out")),  # Flux 2's feed-forward
    (("q", "k", "v", "out_proj"), ("proj_up", "proj_down")),  # xLSTM's feed-forward
], ids=["projection_query", "project_q", "q_head", "to_out", "wrapped-linear", "wrapped-dense", "linear_fc1",
        "linear_in", "proj_up"])
def test_more_spellings_are_recognised(names, mlp):
    net = _Net([_Block(_Attention(names), _Mlp(*mlp)) for _ in range(2)])
    family = infer_family(net)
    assert family.roles["q"] == (f"attn.{names[0]}",) and family.roles["o"] == (f"attn.{names[3]}",)
    assert family.roles["f1"] == (f"mlp.{mlp[0]}",) and family.roles["f2"] == (f"mlp.{mlp[1]}",)
    _exact_and_trainable(net, ALL)


class _InProjAttention(nn.Module):
    """DeBERTa's fused ``in_proj``: q, k, v of an attention (its class says so), unlike Mamba's mixer ``in_proj``."""

    def __init__(self) -> None:
        super().__init__()
        self.in_proj, self.out_proj = nn.Linear(D, 3 * D), nn.Linear(D, D)

    def forward(self, x):
        q, k, v = self.in_proj(x).chunk(3, -1)
        return self.out_proj(torch.softmax(q @ k.transpose(-1, -2), -1) @ v)


class _InProjMixer(_InProjAttention):
    pass


def test_in_proj_is_fused_qkv_only_in_an_attention():
    net = _Net([_Block(_InProjAttention(), _Mlp()) for _ in range(2)])
    family = infer_family(net)
    assert family.fused["attn.in_proj"].roles == ("q", "k", "v") and family.roles["o"] == ("attn.out_proj",)
    mixer = infer_family(_Net([_Block(_InProjMixer(), _Mlp()) for _ in range(2)]))
    assert "attn.in_proj" not in mixer.fused and "o" not in mixer.roles  # an MLP-only family


def test_gated_up_projection_in_an_up_container():
    """CPM-Ant's w_in holds the gate and the up halves (w_in.w_0, w_in.w_1): both f1."""

    class _Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w_in = nn.Module()
            self.w_in.w_0, self.w_in.w_1 = nn.Linear(D, H), nn.Linear(D, H)
            self.w_out = nn.Linear(H, D)

        def forward(self, x):
            return self.w_out(torch.nn.functional.gelu(self.w_in.w_0(x)) * self.w_in.w_1(x))

    net = _Net([_Block(_Attention(), _Gated()) for _ in range(2)])
    assert infer_family(net).roles["f1"] == ("mlp.w_in.w_0", "mlp.w_in.w_1")
    _exact_and_trainable(net, ALL)


def test_adaptive_norm_modulation_is_not_an_mlp():
    """Mochi's norm1_context.linear_1 (an adaptive norm's modulation, up-spelled and alone) is no partial MLP."""

    class _AdaNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear_1 = nn.Linear(D, 2 * D)

        def forward(self, x):
            scale, shift = self.linear_1(x).chunk(2, -1)
            return x * (1 + scale) + shift

    class _NormBlock(_Block):
        def __init__(self) -> None:
            super().__init__(_Attention(), _Mlp())
            self.norm1_context = _AdaNorm()

        def forward(self, x):
            return super().forward(self.norm1_context(x))

    net = _Net([_NormBlock() for _ in range(2)])
    assert "norm1_context.linear_1" not in str(infer_family(net).roles)
    _exact_and_trainable(net, ALL)


def test_gated_pair_then_output_projection():
    """AuraFlow's feed-forward: silu(linear_1(x)) * linear_2(x), then out_projection: linear_1 and linear_2 are the
    gate and up halves (f1), out_projection the down projection (f2)."""

    class _Aura(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear_1, self.linear_2 = nn.Linear(D, H, bias=False), nn.Linear(D, H, bias=False)
            self.out_projection = nn.Linear(H, D, bias=False)

        def forward(self, x):
            return self.out_projection(torch.nn.functional.silu(self.linear_1(x)) * self.linear_2(x))

    net = _Net([_Block(_Attention(), _Aura()) for _ in range(2)])
    family = infer_family(net)
    assert family.roles["f1"] == ("mlp.linear_1", "mlp.linear_2") and family.roles["f2"] == ("mlp.out_projection",)
    _exact_and_trainable(net, ALL)


@pytest.mark.parametrize("out, gate", [("o", "gate_proj"), ("o.linear", "o.gate_proj"),
                                       ("output_projection.o_proj", "output_projection.gate_proj")],
                         ids=["in-attention", "in-output-projection", "next-to-nested-output-projection"])
def test_attention_output_gate_is_not_an_mlp(out, gate):
    """An attention's output gate (AFMoE's self_attn.gate_proj, Inkling's o_proj.gate_proj, Neomme's
    output_projection.gate_proj next to output_projection.o_proj) is neither an MLP nor a reason to doubt: the
    attention and the real MLP are recognised, the gate is left alone."""
    net = _Net([_Block(_Attention(("q", "k", "v", out), gate=gate), _Mlp()) for _ in range(2)])
    assert infer_family(net).roles["o"] == (f"attn.{out}",)
    vf = _exact_and_trainable(net, ALL)
    assert not any("gate_proj" in name for name in vf.decomposed_layers())


def test_sibling_output_projection():
    """BigBird-Pegasus and LED: the attention's q, k, v in ``self_attn.self`` (or ``longformer_self_attn``), its
    output projection a sibling ``self_attn.output``."""

    class _Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.self = _Attention(("query", "key", "value", "scale"))
            self.output = nn.Linear(D, D)

        def forward(self, x):
            return self.output(self.self(x))

    net = _Net([_Block(_Outer(), _Mlp()) for _ in range(2)])
    family = infer_family(net)
    assert family.roles["o"] == ("attn.output",)
    _exact_and_trainable(net, ALL)


def test_attention_without_output_projection():
    """Flux-style single-stream blocks (and timm's bottleneck attention): the attention has q, k, v and no output
    projection of its own; it is taken with those three, and the log line says so."""

    class _Bare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.to_q, self.to_k, self.to_v = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)

        def forward(self, x):
            return torch.softmax(self.to_q(x) @ self.to_k(x).transpose(-1, -2), -1) @ self.to_v(x)

    net = _Net([_Block(_Bare(), _Mlp()) for _ in range(2)])
    family = infer_family(net)
    assert "attention without an output projection in layers" in family.notes
    _exact_and_trainable(net, ("q", "k", "v", "f1", "f2"))


def test_hybrid_stack_blocks_without_attention():
    """Mamba, convolution or linear-attention layers next to attention layers (Jamba, LFM2, Qwen3-Next,
    Nemotron-H): a block may lack a whole attention, and the log line says in how many blocks it is."""
    net = _Net([_Block(None, _Mlp(), mixer=True), _Block(_Attention(), _Mlp()), _Block(None, _Mlp(), mixer=True)])
    family = infer_family(net)
    assert "hybrid layers: attention (q, k, v, o) in 1 of 3 blocks" in family.notes
    vf = _exact_and_trainable(net, ALL)
    assert {v.layer for v in vf.vectors if v.role == "q"} == {1}
    assert {v.layer for v in vf.vectors if v.role == "f1"} == {0, 1, 2}


def test_hybrid_stack_blocks_without_mlp():
    net = _Net([_Block(_Attention(), None), _Block(_Attention(), _Mlp())])
    assert "MLP (f1, f2) in 1 of 2 blocks" in infer_family(net).notes


def test_part_of_an_attention_missing_is_still_an_error():
    """Only a whole attention (or MLP) may be absent from a block: a block whose MLP lacks its down projection while
    the other has both is in doubt."""

    class _Up(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(D, H)

    net = _Net([_Block(_Attention(), _Mlp()), _Block(_Attention(), _Up())])
    with pytest.raises(InferenceError, match="partial"):
        get_vectorfit_model(net, VectorFitConfig())


class _Experts(nn.Module):
    """A mixture of experts held as 3-D parameters, as transformers 5 keeps them."""

    def __init__(self, n: int = 3) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.randn(n, 2 * H, D) * 0.1)
        self.down_proj = nn.Parameter(torch.randn(n, D, H) * 0.1)
        self.router = nn.Linear(D, n, bias=False)

    def forward(self, x):
        weights = torch.softmax(self.router(x), -1)
        out = 0
        for e in range(self.gate_up_proj.shape[0]):
            gate, up = (x @ self.gate_up_proj[e].T).chunk(2, -1)
            out = out + weights[..., e:e + 1] * ((torch.nn.functional.silu(gate) * up) @ self.down_proj[e].T)
        return out


def test_moe_blocks_next_to_dense_blocks():
    """DeepSeek-style: the first block has a dense MLP, the others experts held as 3-D parameters; those count as
    the block's f1 and f2."""
    net = _Net([_Block(_Attention(), _Mlp()), _Block(_Attention(), _Experts()), _Block(_Attention(), _Experts())])
    net.config = SimpleNamespace(num_experts=3)
    family = infer_family(net)
    assert "hybrid" not in family.notes and set(family.expert_roles.values()) == {"f1", "f2"}
    vf = _exact_and_trainable(net, ALL)
    assert {v.layer for v in vf.vectors if v.role == "f2"} == {0, 1, 2}


class _NormedFusedAttention(nn.Module):
    """A fused qkv (blocked) with layer-normalised queries and keys (Persimmon, Fuyu, OLMo's qk-norm)."""

    def __init__(self, heads: int = 2) -> None:
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(D, 3 * D)
        self.q_norm, self.k_norm = nn.LayerNorm(D // heads, eps=1e-2), nn.LayerNorm(D // heads, eps=1e-2)
        self.o_proj = nn.Linear(D, D)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (z.view(b, t, self.num_heads, -1).transpose(1, 2) for z in self.qkv(x).chunk(3, -1))
        att = torch.softmax(self.q_norm(q) @ self.k_norm(k).transpose(-1, -2), -1) @ v
        return self.o_proj(att.transpose(1, 2).reshape(b, t, D))


class _TokenNet(_Net):
    def __init__(self, blocks) -> None:
        super().__init__(blocks)
        self.config = SimpleNamespace(vocab_size=20, num_attention_heads=2)
        self.embed = nn.Embedding(20, D)

    def forward(self, input_ids):
        return super().forward(self.embed(input_ids))


def test_fused_projection_under_normalised_queries_and_keys():
    """Scaling q by 2 and k by 1/2 leaves normalised queries and keys unchanged only up to the norms' epsilon: the
    probe's copy zeroes it, so the layout is checked and split instead of decomposed whole."""
    torch.manual_seed(0)
    net = _TokenNet([_Block(_NormedFusedAttention(), _Mlp()) for _ in range(2)])
    fused = infer_family(net).fused["attn.qkv"]
    assert not fused.whole and "blocked" in fused.note and "checked numerically" in fused.note, fused.note
    assert net.layers[0].attn.q_norm.eps == 1e-2  # the model itself is untouched


class _KeyValueDims(nn.Module):
    """timm's EfficientFormer / LeViT / TinyViT attention: per head, keys (and queries) of ``key_dim`` rows and
    values of ``val_dim`` rows interleaved in one qkv; its ``train()`` returns None, as theirs does."""

    def __init__(self, heads: int = 2, key_dim: int = 4, val_dim: int = 8) -> None:
        super().__init__()
        self.num_heads, self.key_dim, self.val_dim = heads, key_dim, val_dim
        self.qkv = nn.Linear(D, heads * (2 * key_dim + val_dim))
        self.proj = nn.Linear(heads * val_dim, D)

    def train(self, mode: bool = True):  # noqa: D102 (returns None, unlike nn.Module.train)
        super().train(mode)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, self.num_heads, -1).split([self.key_dim, self.key_dim, self.val_dim], -1)
        att = torch.softmax(q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2), -1) @ v.transpose(1, 2)
        return self.proj(att.transpose(1, 2).reshape(b, t, -1))


def test_keys_narrower_than_values_per_head():
    torch.manual_seed(0)
    net = _TokenNet([_Block(_KeyValueDims(), _Mlp()) for _ in range(2)])
    fused = infer_family(net).fused["attn.qkv"]
    assert not fused.whole and "interleaved per head (2 groups of 4/4/8 rows)" in fused.note, fused.note
    assert "checked numerically" in fused.note
    ids = torch.randint(0, 20, (2, 5))
    weight = net.layers[0].attn.qkv.weight.detach().clone()
    with torch.no_grad():
        expected = net(ids)
    vf = get_vectorfit_model(net, VectorFitConfig())
    q = vf.decomposed_layers()["layers.0.attn.qkv"].parts["q"].dense_weight()
    rows = [h * 16 + i for h in range(2) for i in range(4)]  # per head: 4 q, 4 k, 8 v rows
    torch.testing.assert_close(q, weight[rows], atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(vf(ids), expected, atol=1e-5, rtol=1e-4)


def test_downsampling_layer_is_not_half_an_mlp():
    """Sequencer's stage transition: ``downsample.down`` (down-spelled and alone, between stages) is no partial MLP;
    a lone ``down`` elsewhere still is."""

    class _Down(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down = nn.Linear(D, D)

        def forward(self, x):
            return self.down(x)

    class _Stage(_Block):
        def __init__(self, name: str) -> None:
            super().__init__(_Attention(), _Mlp())
            self.where = name
            self.add_module(name, _Down())

        def forward(self, x):
            return super().forward(self.get_submodule(self.where)(x))

    net = _Net([_Stage("downsample") for _ in range(2)])
    assert "downsample.down" not in str(infer_family(net).roles)
    _exact_and_trainable(net, ALL)
    with pytest.raises(InferenceError, match="partial: MLP layers.0.token_mixer has down but no up"):
        get_vectorfit_model(_Net([_Stage("token_mixer") for _ in range(2)]), VectorFitConfig())


def test_gated_w0_w1_then_w2():
    """timm's GeGluMlp (ViTamin): gelu(w0(x)) * w1(x), then w2: w0 and w1 play f1, w2 f2."""

    class _GeGlu(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w0, self.w1, self.w2 = nn.Linear(D, H), nn.Linear(D, H), nn.Linear(H, D)

        def forward(self, x):
            return self.w2(torch.nn.functional.gelu(self.w0(x)) * self.w1(x))

    net = _Net([_Block(_Attention(), _GeGlu()) for _ in range(2)])
    family = infer_family(net)
    assert family.roles["f1"] == ("mlp.w0", "mlp.w1") and family.roles["f2"] == ("mlp.w2",)
    _exact_and_trainable(net, ALL)


class _ConvAct(nn.Module):
    """MIT EfficientViT's ConvNormAct: the convolution wrapped as ``.conv``."""

    def __init__(self, c_in: int, c_out: int, groups: int = 1, k: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups)

    def forward(self, x):
        return torch.relu(self.conv(x))


class _Main(nn.Module):
    """An inverted bottleneck (``inverted``, ``depth``, ``point``) or, without ``inverted``, a depthwise-separable
    convolution whose lone ``point_conv`` is no MLP."""

    def __init__(self, inverted: bool) -> None:
        super().__init__()
        wide = 2 * D if inverted else D
        if inverted:
            self.inverted_conv = _ConvAct(D, wide)
        self.depth_conv = _ConvAct(wide, wide, groups=wide, k=3)
        self.point_conv = _ConvAct(wide, D)

    def forward(self, x):
        y = self.inverted_conv(x) if hasattr(self, "inverted_conv") else x
        return x + self.point_conv(self.depth_conv(y))


class _MBBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.separable, self.main = _Main(inverted=False), _Main(inverted=True)

    def forward(self, x):
        return self.main(self.separable(x))


def test_inverted_bottleneck_is_an_mlp():
    net = nn.Sequential(nn.Conv2d(3, D, 1), nn.Sequential(_MBBlock(), _MBBlock()))
    family = infer_family(net)
    assert family.roles == {"f1": ("main.inverted_conv.conv",), "f2": ("main.point_conv.conv",)}
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        expected = net(x)
    vf = get_vectorfit_model(net, VectorFitConfig())
    assert {v.role for v in vf.vectors} == {"f1", "f2"}
    assert not any("separable" in v.module for v in vf.vectors)
    with torch.no_grad():
        torch.testing.assert_close(vf(x), expected, atol=1e-5, rtol=1e-4)
