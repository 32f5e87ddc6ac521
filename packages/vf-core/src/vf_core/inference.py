"""Roles recognised from a model's structure when no backend declares its family.

:func:`infer_family` reads only module names, weight shapes and the config's sizes (no model library):

- **Attention**: a module whose children include projections under the usual spellings of q, k and v
  (``q_proj/k_proj/v_proj``, ``query/key/value``, T5's ``q/k/v``, DistilBERT's ``q_lin``, ``Wq``, ``wq``, diffusers'
  ``to_q``, CvT's ``projection_query``, CPM-Ant's ``project_q``, Funnel's ``q_head``...) or one fused projection
  (``qkv``, ``qkv_proj``, ``query_key_value``, ``Wqkv``, ``c_attn``, ``W_pack``, DeBERTa's ``in_proj`` in a module
  whose class says attention; ``q`` plus a fused ``kv``/``c_attn`` for cross-attention), and an output projection
  (``o_proj``, ``o``, ``out_proj``, ``dense``, ``c_proj``, ``proj``, ``to_out.0``, ``to_out``, ``Wo``,
  ``attention_out``, ``post_proj``..., or a sibling ``output.dense`` (BERT) or ``output`` (BigBird-Pegasus, LED), or
  the only one a level down (Neomme's ``output_projection.o_proj``)). A projection module that wraps its linear layer
  (Moshi's ``q_proj.linear``, ``qkv_proj.convolution``) counts as the projection. Self-, cross- (``encoder_attn``,
  ``crossattention``, ``EncDecAttention``) and decoder attention alike; diffusers' joint attention adds a second
  stream (``add_q_proj``..., ``to_add_out``). Other modules of an attention (an output gate's ``gate_proj``) are left
  alone; an attention without an output projection of its own (Flux-style single-stream blocks) is taken with q, k and
  v, and the log line says so.
- **Multi-head latent attention** (DeepSeek-V2/V3, MiniCPM3, GLM-4 MoE Lite, Mistral 4...): ``q_proj`` or
  ``q_a_proj`` + ``q_b_proj`` (q), ``kv_b_proj`` split per head into its keys' and values' rows (checked
  numerically against the queries' rows without rotary position), ``kv_a_proj_with_mqa`` (the latent keys and
  values share, and the rotary key) decomposed whole, ``o_proj`` (o).
- **Fused projections** are split per role with sizes read from the attention module and the config (heads,
  key-value heads, head dimension); the layout of their rows (blocked, interleaved per head, grouped per key-value
  head) is checked numerically on the attention module (:mod:`vf_core.fused_layouts`). Interleaved rows are taken
  by index (:class:`~vf_core.layers.SliceSpec`); a projection whose layout cannot be checked is decomposed whole,
  as one matrix without a role, and the log line says so.
- **MLPs**: ``f1`` = up (and gate), ``f2`` = down, as the declared families do: ``fc1/fc2``, ``c_fc/c_proj``,
  ``intermediate.dense`` + ``output.dense``, ``dense_h_to_4h/dense_4h_to_h``, ``lin1/lin2``, ``wi/wo``,
  ``fc_in/fc_out``, ``mlp.0/mlp.2``, ``up_proj/down_proj``, ``up/down``; gated ``gate_proj`` + ``up_proj`` (f1),
  ``wi_0/wi_1``, ``w1`` + ``w3`` (f1, ``w2`` f2, told apart by shapes, else by one call of the MLP), timm's SwiGLU
  ``fc1_g/fc1_x``, the halves
  of an up container (CPM-Ant's ``w_in.w_0/w_1``), PVT's ``dense1/dense2``, Megatron's
  ``linear_fc1/linear_fc2``, Flux 2's ``linear_in/linear_out`` (as a pair), ProphetNet's linear ``intermediate`` and
  ``output``, a gated pair followed by an output projection (AuraFlow's ``linear_1``, ``linear_2``,
  ``out_projection``). A fused
  ``gate_up_proj`` is one f1 matrix (like diffusers' GEGLU ``proj``). Experts held as ``nn.Linear`` modules
  (``experts.N.w1``) are MLPs like any other, their index in the module name.
- **Blocks**: the numbered children (``layers.N``, ``layer.N``, ``h.N``, ``blocks.N``, ``block.N``,
  ``transformer_blocks.N``...) that hold those modules, at the outermost level whose members repeat (so a Swin stage
  is not a block but its ``blocks.N`` are, and an MoE layer is one block, not one per expert); where no level repeats
  (a stage of one block, a model of one layer), the level named like those chosen elsewhere, else the outermost level
  whose members agree on shapes. Encoder and decoder stacks are separate.

The result is verified, not trusted: within a stack every block must have every role, an attention or MLP must be
complete and its shapes chained (an MLP's up projections feed its down projection), and no module may fit two roles;
widths may change from block to block (a hierarchical model's stages, an MLP ratio per block), which the log line
says. An MLP is also known by its class (timm's ``RepVitMlp``, SHViT's ``FFN``: two matrices under any names, one
mapping the other's output back), and so is an attention (CPUBone's ``ConvAttention``: a fused q, k, v, then its
output projection); an inverted bottleneck's ``inverted_conv`` and ``point_conv`` are f1 and f2. A block may lack a
whole attention or a whole MLP that others have (a hybrid stack: Mamba, convolution or linear-attention layers next
to attention layers), which the log line says ("attention (q, k, v, o) in 1 of 4 blocks"); roles held by a block's
3-D expert parameters count as present (MoE blocks next to dense ones). Otherwise
:class:`~vf_core.errors.InferenceError` says what was found and which ``target_modules`` to pass; a model with no
attention or MLP blocks at all (a plain CNN, a state-space model) gets :class:`~vf_core.errors.UnknownFamilyError`,
which says so.

Example:
    >>> from vf_core.inference import infer_family
    >>> from vf_core.testing.tiny import TinyNet
    >>> family = infer_family(TinyNet())
    >>> family.origin, family.role_of("q"), family.role_of("up"), family.heads
    ('inferred', 'q', 'f1', ('head',))
"""

from __future__ import annotations

import dataclasses
import re
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from .errors import InferenceError, UnknownFamilyError, UnsupportedLayerError
from .experts import find_expert_params
from .families import Family, FusedModule
from .fused_layouts import (
    AttentionProbe,
    FusedLayout,
    _config_sources,
    _grouped,
    _ints,
    candidate_layouts,
    check_layout,
    fallback_layouts,
    head_sizes,
    key_value_dims,
    permuted_layouts,
)
from .probe_calls import capture_calls, direct_call, enclosing_call, rotary_call, two_stream_call
from .layouts import layout_for
from .plugins import list_families
from .roles import ROLES

__all__ = ["infer_family", "describe_family"]

# ---------------------------------------------------------------------------------------------- spellings
# names are compared in lower case, as the module's name within its parent ("to_out.0" for a Sequential's entry)
_Q = {"q_proj", "q", "query", "q_lin", "wq", "to_q", "query_proj", "q_linear", "linear_q", "q_attn", "qproj",
      "projection_query", "project_q", "q_head"}
_K = {"k_proj", "k", "key", "k_lin", "wk", "to_k", "key_proj", "k_linear", "linear_k", "kproj", "projection_key",
      "project_k", "k_head"}
_V = {"v_proj", "v", "value", "v_lin", "wv", "to_v", "value_proj", "v_linear", "linear_v", "vproj",
      "projection_value", "project_v", "v_head", "v_gate"}  # v_gate: values and their output gate (iFormer)
_O = {"o_proj", "o", "out_proj", "out_lin", "wo", "dense", "c_proj", "proj", "to_out.0", "out", "linear_out",
      "output_proj", "o_linear", "proj_out", "attn_out", "to_out", "attention_out", "post_proj"}
_QKV = {"qkv_proj", "query_key_value", "wqkv", "c_attn", "qkv", "w_pack", "qkv_linear", "to_qkv", "qkv_lin"}
_KV = {"kv", "kv_proj", "key_value", "to_kv", "wkv", "kv_linear", "c_attn"}
# diffusers' joint attention: the text stream's projections, next to the image stream's to_q/to_k/to_v/to_out.0
_ADDED = {"q": {"add_q_proj"}, "k": {"add_k_proj"}, "v": {"add_v_proj"}, "o": {"to_add_out"}}  # to_added_qkv fused

_UP = {"fc1", "c_fc", "dense_h_to_4h", "lin1", "wi", "wi_0", "wi_1", "fc_in", "gate_proj", "up_proj", "gate_up_proj",
       "fc1_g", "fc1_x", "w12", "up", "linear1", "linear_1", "fc11", "fc12", "ffn", "w_in", "dense1", "linear_fc1",
       "proj_up", "proj_up_gate"}
_DOWN = {"fc2", "c_proj", "dense_4h_to_h", "lin2", "wo", "fc_out", "down_proj", "down", "linear2", "linear_2",
         "ffn_output", "w_out", "dense2", "linear_fc2", "proj_down"}
_MLP_OUT = {"out_projection", "out_proj", "proj_out", "output_proj", "out"}  # after a gated pair (AuraFlow)
_UP_HALVES = {"w_0", "w_1", "w0", "gate", "linear", "dense", "proj"}  # inside an up container (w_in.w_0)
_SEQUENTIAL_MLP = {"mlp", "ffn", "ff", "feed_forward", "feedforward", "fc", "net", "mlp_layer", "ffn_layer"}
_SPELLINGS = _Q | _K | _V | _O | _QKV | _KV | _UP | _DOWN
# the linear layer inside a projection module named like one (q_proj.linear, qkv_proj.convolution)
_WRAPPED = {"linear", "dense", "proj", "fc", "lin", "layer", "convolution", "conv", "c"}  # timm's ConvNorm: .c
# a module whose class says it is an MLP (timm's RepVitMlp, SHViT's FFN): its two matrices are f1 and f2 whatever
# their names, where one maps the other's output back
_MLP_CLASS = re.compile(r"mlp|ffn|feedforward|feed_forward", re.IGNORECASE)
_HEAD_NAMES = ("classifier", "score", "qa_outputs", "classification_head", "head", "head_dist", "pre_classifier")


# ---------------------------------------------------------------------------------------------- records
@dataclass
class _Leaf:
    name: str
    module: nn.Module
    d_out: int
    d_in: int
    conv: bool
    group: str  # the module it belongs to ("" at the top)
    local: str  # its name there, lower case ("q_proj", "to_out.0")


@dataclass
class _Found:
    """A module with a role (``role``) or several stacked (``fused``), and the attention or MLP it belongs to."""

    leaf: _Leaf
    role: Optional[str]
    unit: str
    fused: tuple[str, ...] = ()
    block: str = ""
    stack: str = ""
    rel: str = ""
    mla: str = ""  # multi-head latent attention: "latent" (kv_a_proj_with_mqa) or "heads" (kv_b_proj)

    @property
    def tag(self) -> str:
        return self.role if self.role else "+".join(self.fused)

    @property
    def roles(self) -> tuple[str, ...]:
        return (self.role,) if self.role else self.fused


@dataclass
class _Result:
    found: list[_Found] = field(default_factory=list)
    claimed: set = field(default_factory=set)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (module path, what is wrong)
    without_output: list[str] = field(default_factory=list)  # attentions with no output projection

    def problem(self, path: str, message: str) -> None:
        self.problems.append((path, message))


def _leaves(model: nn.Module) -> list[_Leaf]:
    """Every module without children that vf-core can decompose (1x1 convolutions only among Conv2d)."""
    out = []
    matrices = []
    for name, module in model.named_modules():
        if not name or next(module.children(), None) is not None:
            continue
        if isinstance(module, nn.Conv2d) and tuple(module.weight.shape[2:]) != (1, 1):
            continue
        try:
            layout = layout_for(module, name)
            d_out, d_in = layout.matrix(module).shape
        except (UnsupportedLayerError, AttributeError, RuntimeError, ValueError):
            continue
        matrices.append((name, module, d_out, d_in))
    # a wrapper holds its linear layer (q_proj.linear, and o_proj.gate_proj next to it); TNT's attn_out holds qk, v
    # and proj: an attention, not a wrapper
    children: dict[str, set] = defaultdict(set)
    for name, *_ in matrices:
        parent, _, local = name.rpartition(".")
        children[parent].add(local.lower())
    for name, module, d_out, d_in in matrices:
        parts = name.split(".")
        if len(parts) >= 2 and parts[-1].isdigit():  # a Sequential's entry: to_out.0, mlp.0
            group, local = ".".join(parts[:-2]), ".".join(parts[-2:])
        elif (len(parts) >= 2 and parts[-1].lower() in _WRAPPED and parts[-2].lower() in _SPELLINGS
              and not children[".".join(parts[:-1])] & (_Q | _K | _V | _QKV | _KV | _QK)):
            group, local = ".".join(parts[:-2]), parts[-2]  # a projection wrapping its linear: q_proj.linear
        else:
            group, local = ".".join(parts[:-1]), parts[-1]
        out.append(_Leaf(name, module, int(d_out), int(d_in), isinstance(module, nn.Conv2d), group, local.lower()))
    return out


# ---------------------------------------------------------------------------------------------- attention
def _pick(members: dict[str, _Leaf], names: set, what: str, group: str, result: _Result) -> Optional[_Leaf]:
    hits = [leaf for local, leaf in members.items() if local in names]
    if len(hits) > 1:
        result.problem(group, f"ambiguous: {group or 'the model'} has {len(hits)} modules that could be the {what}"
                              f" ({', '.join(h.local for h in hits)})")
        return None
    return hits[0] if hits else None


def _attention(groups: dict[str, dict[str, _Leaf]], by_name: dict[str, _Leaf], modules: dict[str, nn.Module],
               result: _Result) -> None:
    for group, members in groups.items():
        if (_latent_attention(group, members, result) or _query_key_attention(group, members, result)
                or _stream_attention(group, members, result)):
            continue
        q, k, v = (_pick(members, names, role, group, result) for role, names in (("q", _Q), ("k", _K), ("v", _V)))
        # ``in_proj`` is q, k and v fused only in a module that says it is an attention (DeBERTa's
        # DisentangledSelfAttention), not in Mamba's mixer
        qkv_names = _QKV | ({"in_proj"} if "attention" in type(modules.get(group)).__name__.lower() else set())
        fused_hits = [leaf for local, leaf in members.items() if local in qkv_names | _KV]
        # diffusers' Attention keeps to_q/to_k/to_v next to the to_qkv (to_kv) that fuse_projections() adds, and
        # says which it calls
        flag = getattr(modules.get(group), "fused_projections", None)
        if isinstance(flag, bool) and fused_hits and (k or v):
            if flag:
                k = v = None
                q = q if fused_hits[0].local in _KV - _QKV else None
            else:
                fused_hits = []
        if q is None and ((k and v) or any(leaf.local in _KV - _QKV for leaf in fused_hits)):
            q = _one_matrix_child(group, _Q, by_name, modules)  # LeViT's q.ln.linear, EfficientFormerV2's q.proj.conv
        separate = [x for x in (q, k, v) if x is not None]
        if not fused_hits and len(separate) < 2:
            continue  # not an attention module
        where = group or "the model"
        if len(fused_hits) > 1 or (fused_hits and (k or v or (q and fused_hits[0].local not in _KV))):
            names = sorted({leaf.local for leaf in fused_hits + separate})
            result.problem(group, f"ambiguous: attention {where} has several projections for the same roles"
                                  f" ({', '.join(names)})")
            continue
        fused: Optional[_Found] = None
        if fused_hits:
            leaf = fused_hits[0]
            roles = ("k", "v") if q is not None else ("q", "k", "v")
            if roles == ("q", "k", "v") and leaf.local not in qkv_names:
                result.problem(group, f"partial: attention {where} has {leaf.local} (keys and values) but no query")
                continue
            fused = _Found(leaf, None, group, fused=roles)
        elif len(separate) < 3:
            missing = [r for r, x in zip("qkv", (q, k, v)) if x is None]
            result.problem(group, f"partial: attention {where} has {', '.join(x.local for x in separate)} but no"
                                  f" {', '.join(missing)} projection")
            continue
        o = _pick(members, _O, "output projection", group, result)
        if o is None:  # BERT's attention.self + attention.output.dense; BigBird-Pegasus' self_attn.self + .output
            parent = group.rsplit(".", 1)[0] + "." if "." in group else ""
            o = by_name.get(parent + "output.dense") or by_name.get(parent + "output")
        if o is None:  # one level down: Neomme's self_attn.output_projection.o_proj (next to its gate_proj)
            nested = [leaf for leaf in by_name.values() if leaf.local in _O and leaf.group.rsplit(".", 1)[0] == group
                      and leaf.group != group and leaf.name not in result.claimed]
            o = nested[0] if len(nested) == 1 else None
        if o is None:  # in a container with its activation and norm: LeViT's proj.ln.linear
            o = _one_matrix_child(group, _O, by_name, modules)
        if o is None:
            # no output projection of its own (Flux-style single-stream blocks, whose block-level projection also
            # takes the MLP's output; timm's bottleneck attention, where the next convolution follows): q, k, v only
            result.without_output.append(group)
        found = [fused] if fused else []
        found += [_Found(x, r, group) for r, x in (("q", q), ("k", k), ("v", v)) if x is not None]
        found += [_Found(o, "o", group)] if o is not None else []
        added = {r: _pick(members, names, f"joint-attention {r}", group, result) for r, names in _ADDED.items()}
        added_fused = members.get("to_added_qkv")
        if added_fused is not None and (flag is True or not any(added[r] for r in "qkv")):
            found.append(_Found(added_fused, None, group, fused=("q", "k", "v")))
            found += [_Found(added["o"], "o", group)] if added["o"] is not None else []
        elif any(added[r] for r in "qkv"):
            # the text stream of joint attention (add_q_proj...), or only added keys and values (AttnAddedKVProcessor)
            if not (added["k"] and added["v"]):
                have = ", ".join(x.local for x in added.values() if x)
                result.problem(group, f"partial: attention {where} has {have} but not both add_k_proj and add_v_proj")
                continue
            found += [_Found(x, r, group) for r, x in added.items() if x is not None]
        result.found += found
        result.claimed |= {f.leaf.name for f in found}


def _one_matrix_child(group: str, names: set, by_name: dict[str, _Leaf],
                      modules: dict[str, nn.Module]) -> Optional[_Leaf]:
    """The projection held in a child module of the attention ``group`` spelled like one (``names``) that holds
    exactly one matrix, around it only activations, norms, subsampling, pooling or depthwise convolutions: LeViT's
    ``q = Sequential(Subsample, LinearNorm)`` and ``proj = Sequential(Hardswish, LinearNorm)``, EfficientFormerV2's
    pooled ``LocalGlobalQuery``."""
    prefix = f"{group}." if group else ""
    for name in sorted(names):
        path = prefix + name
        if path not in modules or path in by_name:
            continue
        inside = [leaf for leaf in by_name.values() if leaf.name.startswith(path + ".")]
        if len(inside) == 1:
            return inside[0]
    return None


# a module whose class says attention (CPUBone's ConvAttention, with its fused ``pwise`` and its output projection
# folded into ``upsampling.0``)
_ATTENTION_CLASS = re.compile(r"attention|attn", re.IGNORECASE)


def _attention_by_class(modules: dict[str, nn.Module], leaves: list[_Leaf], result: _Result) -> None:
    """Attentions named by their class and not by their projections: a module whose class name says attention,
    holding exactly two matrices that no spelling took, first a fused q, k, v (three times as many rows as the
    other's inputs), then an output projection mapping those back to the fused projection's input width. The fused
    rows are split like any fused projection's, checked numerically (decomposed whole where no layout passes)."""
    taken = set(result.claimed)
    for path, module in modules.items():
        if not path or not _ATTENTION_CLASS.search(type(module).__name__):
            continue
        inside = [leaf for leaf in leaves if leaf.name.startswith(path + ".")]
        if len(inside) != 2 or any(leaf.name in taken for leaf in inside):
            continue
        fused, out = inside  # the fused projection reads the input first (not a channel gate's reduction)
        if fused.d_out == 3 * out.d_in and out.d_out == fused.d_in:
            found = [_Found(fused, None, path, fused=("q", "k", "v")), _Found(out, "o", path)]
            result.found += found
            result.claimed |= {f.leaf.name for f in found}
            taken |= {f.leaf.name for f in found}


_QK = {"qk", "qk_proj", "to_qk", "query_key"}


def _query_key_attention(group: str, members: dict[str, _Leaf], result: _Result) -> bool:
    """Queries and keys fused in one projection next to a separate value projection (TNT's ``qk`` + ``v``): q/k
    split like a fused projection (checked numerically with the values' rows), ``v`` (v) and the output projection
    (o). Whether ``group`` is one (and then recorded)."""
    fused = [leaf for local, leaf in members.items() if local in _QK]
    v = [leaf for local, leaf in members.items() if local in _V]
    if len(fused) != 1 or len(v) != 1 or any(local in _Q | _K | _QKV | _KV for local in members):
        return False
    o = [leaf for local, leaf in members.items() if local in _O]
    found = [_Found(fused[0], None, group, fused=("q", "k")), _Found(v[0], "v", group)]
    found += [_Found(o[0], "o", group)] if len(o) == 1 else []
    if len(o) != 1:
        result.without_output.append(group)
    result.found += found
    result.claimed |= {f.leaf.name for f in found}
    return True


# joint attention whose streams prefix their projections: JoyImage's img_attn_qkv, txt_attn_proj; PRX's txt_kv_proj
_STREAM = re.compile(r"^(img|image|txt|text|context|ctx|visual|vis|audio|video)_(?:attn_)?(.+)$")


def _stream_attention(group: str, members: dict[str, _Leaf], result: _Result) -> bool:
    """Joint attention whose streams prefix their projections (JoyImage's ``img_attn_qkv``, ``img_attn_proj``,
    ``txt_attn_qkv``, ``txt_attn_proj``; PRX's ``img_qkv_proj``, ``txt_kv_proj`` and a shared ``to_out.0``): each
    stream's q, k and v (separate or fused) and output projection, the unprefixed ones as one more stream; a stream
    may bring keys and values only, as long as one brings queries. Whether ``group`` is one (and then recorded: its
    modules, or the problem found)."""
    streams: dict[str, dict[str, _Leaf]] = defaultdict(dict)
    for local, leaf in members.items():
        match = _STREAM.match(local)
        stream, name = (match.group(1), match.group(2)) if match else ("", local)
        if name in _SPELLINGS:
            streams[stream][name] = leaf
    if not any(s and ({"k", "v"} <= set(_stream_roles(own)) or set(own) & (_QKV | _KV)) for s, own in streams.items()):
        return False
    where = group or "the model"
    found: list[_Found] = []
    for stream, own in streams.items():
        label = f"the {stream} stream" if stream else "its unprefixed projections"
        separate = {role: _pick(own, names, f"{role} of {label}", group, result)
                    for role, names in (("q", _Q), ("k", _K), ("v", _V), ("o", _O))}
        fused = [(name, leaf) for name, leaf in own.items() if name in _QKV | _KV]
        if len(fused) > 1 or (fused and (separate["k"] or separate["v"])):
            result.problem(group, f"ambiguous: attention {where} has several projections for the keys and values of"
                                  f" {label} ({', '.join(leaf.local for leaf in own.values())})")
            return True
        if fused:
            name, leaf = fused[0]
            roles = ("q", "k", "v") if name in _QKV and separate["q"] is None else ("k", "v")
            found.append(_Found(leaf, None, group, fused=roles))
        elif bool(separate["k"]) != bool(separate["v"]) or (separate["q"] and not separate["k"]):
            have = ", ".join(x.local for x in separate.values() if x)
            result.problem(group, f"partial: attention {where} has {have} for {label} but not both keys and values")
            return True
        found += [_Found(x, role, group) for role, x in separate.items() if x is not None]
    if not any(f.role == "q" or "q" in f.fused for f in found):
        result.problem(group, f"partial: attention {where} has keys and values for each stream but no query")
        return True
    if not any(f.role == "o" for f in found):
        result.without_output.append(group)
    result.found += found
    result.claimed |= {f.leaf.name for f in found}
    return True


def _stream_roles(own: dict[str, _Leaf]) -> list[str]:
    """The roles a stream's separate projections spell (q, k, v)."""
    return [role for role, names in (("q", _Q), ("k", _K), ("v", _V)) if set(own) & names]


def _latent_attention(group: str, members: dict[str, _Leaf], result: _Result) -> bool:
    """Multi-head latent attention (DeepSeek-V2/V3, MiniCPM3, GLM-4 MoE Lite...): the query from ``q_proj`` or
    ``q_a_proj`` + ``q_b_proj`` (q), the keys' and values' shared latent (and rotary key) from
    ``kv_a_proj_with_mqa`` (k and v, one matrix), each head's keys and values from ``kv_b_proj`` (k/v, split per
    head when the numerical check confirms it), ``o_proj`` (o). Whether ``group`` is one (and then recorded)."""
    latent = members.get("kv_a_proj_with_mqa") or members.get("kv_a_proj")
    heads = members.get("kv_b_proj")
    queries = [members[n] for n in ("q_proj", "q_a_proj", "q_b_proj") if n in members]
    out = members.get("o_proj")
    if latent is None or heads is None or not queries or out is None:
        return False
    found = [_Found(q, "q", group) for q in queries]
    found += [_Found(latent, None, group, fused=("k", "v"), mla="latent"),
              _Found(heads, None, group, fused=("k", "v"), mla="heads"), _Found(out, "o", group)]
    result.found += found
    result.claimed |= {f.leaf.name for f in found}
    return True


# ---------------------------------------------------------------------------------------------- MLPs
def _mlp_candidates(leaves: list[_Leaf], by_name: dict[str, _Leaf], claimed: set) -> dict[str, list[_Found]]:
    """MLP units (a module path) -> their f1/f2 modules, before verification."""
    units: dict[str, list[_Found]] = defaultdict(list)
    free = [leaf for leaf in leaves if leaf.name not in claimed]
    containers: dict[str, list[_Leaf]] = defaultdict(list)
    for leaf in free:
        if "." in leaf.local and leaf.local.split(".")[0] in _SEQUENTIAL_MLP:
            containers[leaf.name.rsplit(".", 1)[0]].append(leaf)
    w_groups: dict[str, dict[str, _Leaf]] = defaultdict(dict)
    for leaf in free:
        name = leaf.name
        prefix = name.rsplit(".", 2)[0] if name.count(".") >= 2 else ""
        if name == "intermediate.dense" or name.endswith(".intermediate.dense"):
            units[prefix].append(_Found(leaf, "f1", prefix))
        elif name == "output.dense" or name.endswith(".output.dense"):
            if (prefix + "." if prefix else "") + "intermediate.dense" in by_name:
                units[prefix].append(_Found(leaf, "f2", prefix))
        elif name == "net.0.proj" or name.endswith(".net.0.proj"):  # diffusers' FeedForward: net.0 (GELU).proj
            unit = name[: -len(".net.0.proj")]
            units[unit].append(_Found(leaf, "f1", unit))
        elif (name == "net.2" or name.endswith(".net.2")) and name[: -len("net.2")] + "net.0.proj" in by_name:
            unit = name[: -len(".net.2")]
            units[unit].append(_Found(leaf, "f2", unit))
        elif leaf.name.rsplit(".", 1)[0] in containers:
            entries = containers[leaf.name.rsplit(".", 1)[0]]
            if len(entries) == 2:
                first = min(entries, key=lambda x: int(x.name.rsplit(".", 1)[1]))
                unit = leaf.name.rsplit(".", 1)[0]
                units[unit].append(_Found(leaf, "f1" if leaf is first else "f2", unit))
        elif leaf.local in ("w1", "w2", "w3") or (leaf.local == "w0" and _sibling(leaf, "w1", by_name)
                                                  and _sibling(leaf, "w2", by_name)):
            w_groups[leaf.group][leaf.local] = leaf  # w0 with w1 and w2: timm's GeGluMlp (gate, up, down)
        elif leaf.group.rsplit(".", 1)[-1] in _UP - _SEQUENTIAL_MLP and leaf.local in _UP_HALVES:
            # the halves of a gated up projection held in an up container: CPM-Ant's w_in.w_0 and w_in.w_1
            unit = leaf.group.rsplit(".", 1)[0]
            units[unit].append(_Found(leaf, "f1", unit))
        elif leaf.local == "intermediate" or (leaf.local == "output" and _sibling(leaf, "intermediate", by_name)):
            # ProphetNet's feed_forward.intermediate and feed_forward.output (linear layers themselves)
            units[leaf.group].append(_Found(leaf, "f1" if leaf.local == "intermediate" else "f2", leaf.group))
        elif leaf.local in ("linear_in", "linear_out") and _sibling(
                leaf, "linear_out" if leaf.local == "linear_in" else "linear_in", by_name):
            # Flux 2's feed-forward, as a pair only (a lone linear_out is RecurrentGemma's recurrent block's)
            units[leaf.group].append(_Found(leaf, "f1" if leaf.local == "linear_in" else "f2", leaf.group))
        elif leaf.local in _UP:
            units[leaf.group].append(_Found(leaf, "f1", leaf.group))
        elif leaf.local in _DOWN:
            units[leaf.group].append(_Found(leaf, "f2", leaf.group))
    for group, ws in w_groups.items():
        # Mixtral-style w1 (gate), w3 (up), w2 (down); xformers-style w1, w2 (in) and w3 (out): the down projection
        # is the one whose output width is the others' input width
        downs = [w for w in ws.values() if all(o is w or (o.d_in == w.d_out and o.d_out == w.d_in)
                                               for o in ws.values())]
        if set(ws) == {"w1", "w2"}:
            downs = [ws["w2"]]
        for leaf in ws.values():
            role = "?" if len(ws) < 2 or len(downs) != 1 else "f2" if leaf is downs[0] else "f1"
            units[group].append(_Found(leaf, role, group))
    for unit, fs in units.items():
        # a gated pair spelled like up and down, then an output projection (AuraFlow's linear_1, linear_2 and
        # out_projection): the pair has one shape, and the output projection maps its width back
        if len(fs) == 2 and {f.role for f in fs} == {"f1", "f2"} and fs[0].leaf.d_out != fs[0].leaf.d_in and (
                (fs[0].leaf.d_out, fs[0].leaf.d_in) == (fs[1].leaf.d_out, fs[1].leaf.d_in)):
            outs = [leaf for leaf in free if leaf.group == unit and leaf.local in _MLP_OUT
                    and (leaf.d_out, leaf.d_in) == (fs[0].leaf.d_in, fs[0].leaf.d_out)]
            if len(outs) == 1:
                fs[:] = [_Found(fs[0].leaf, "f1", unit), _Found(fs[1].leaf, "f1", unit), _Found(outs[0], "f2", unit)]
    return units


def _mlp_by_class(modules: dict[str, nn.Module], leaves: list[_Leaf], units: dict[str, list[_Found]],
                  claimed: set) -> None:
    """MLPs named by their class (timm's ``RepVitMlp`` with ``conv1.c``/``conv2.c``, SHViT's ``FFN`` with
    ``pw1.c``/``pw2.c``): a module whose class name says MLP or feed-forward, holding exactly two matrices that no
    spelling took, the second mapping the first's output back to its input width. ``f1`` is the one that widens
    (the first registered where both are square)."""
    taken = claimed | {f.leaf.name for fs in units.values() for f in fs}
    for path, module in modules.items():
        if not path or not _MLP_CLASS.search(type(module).__name__) or path in units:
            continue
        inside = [leaf for leaf in leaves if leaf.name.startswith(path + ".")]
        if len(inside) != 2 or any(leaf.name in taken for leaf in inside):
            continue
        pair = _up_and_down(*inside)
        if pair is None:
            continue
        up, down = pair
        units[path] = [_Found(up, "f1", path), _Found(down, "f2", path)]
        taken |= {up.name, down.name}


def _up_and_down(a: _Leaf, b: _Leaf) -> Optional[tuple[_Leaf, _Leaf]]:
    """``(up, down)`` of two matrices where one maps the other's output back to its input width (``up`` the one that
    widens, the first where both are square), or reads half of it: a gated MLP whose up and gate are fused in one
    matrix whose output is chunked in two (StableAudio 3's ``proj_in``, like ``gate_up_proj``); else None."""
    if (a.d_out, a.d_in) == (b.d_in, b.d_out):
        return (b, a) if b.d_out > b.d_in else (a, b)
    for up, down in ((a, b), (b, a)):
        if up.d_out == 2 * down.d_in and up.d_in == down.d_out:
            return up, down
    return None


def _mlp_by_call(modules: dict[str, nn.Module], units: dict[str, list[_Found]]) -> None:
    """MLPs whose shapes do not tell the down projection (``w1``, ``w2``, ``w3`` all square: Ideogram 4's SwiGLU),
    told apart by calling the MLP once on a random sequence: the up (and gate) projections read the same input, the
    down projection, called last, reads what they made. Left ambiguous where the call fails or shows otherwise."""
    for unit, found in units.items():
        if not any(f.role == "?" for f in found) or unit not in modules or any(f.leaf.conv for f in found):
            continue
        inputs: dict[str, torch.Tensor] = {}
        order: list[str] = []

        def keep(name: str):
            def hook(module, args):
                if args and isinstance(args[0], torch.Tensor) and name not in inputs:
                    inputs[name] = args[0].detach()
                    order.append(name)
            return hook

        mlp = modules[unit]
        handles = [f.leaf.module.register_forward_pre_hook(keep(f.leaf.name)) for f in found]
        weight = found[0].leaf.module.weight
        x = torch.randn(1, 4, found[0].leaf.d_in, generator=torch.Generator().manual_seed(0))
        modes = [(m, m.training) for m in mlp.modules()]
        try:
            mlp.eval()
            with torch.no_grad():
                mlp(x.to(weight.device, weight.dtype))
        except Exception:  # the MLP does not run on its own: left ambiguous
            continue
        finally:
            for handle in handles:
                handle.remove()
            for module, mode in modes:
                module.training = mode
        if len(order) != len(found):
            continue
        last, ups = order[-1], order[:-1]
        if all(torch.equal(inputs[n], inputs[ups[0]]) for n in ups) and not (
                inputs[last].shape == inputs[ups[0]].shape and torch.equal(inputs[last], inputs[ups[0]])):
            found[:] = [dataclasses.replace(f, role="f2" if f.leaf.name == last else "f1") for f in found]


# an inverted bottleneck's 1x1 expansion and projection around its depthwise convolution (MIT's EfficientViT and
# LowFormer: inverted_conv, depth_conv, point_conv; diffusers' GLUMBConv: conv_inverted, conv_depth, conv_point)
_INVERTED = {"inverted_conv", "conv_inverted"}
_POINT = {"point_conv", "conv_point"}


def _inverted_bottlenecks(leaves: list[_Leaf], units: dict[str, list[_Found]], claimed: set) -> None:
    """Inverted bottlenecks spelled ``inverted_conv`` + ``point_conv`` (a projection module wrapping its
    convolution, ``inverted_conv.conv``, counts as the projection): the expansion plays f1 and the projection f2, as
    EfficientNet's ``conv_pw`` and ``conv_pwl`` do in the declared family; as a pair only (a depthwise-separable
    convolution's lone ``point_conv`` is no MLP)."""
    taken = claimed | {f.leaf.name for fs in units.values() for f in fs}
    pairs: dict[str, dict[str, list[_Leaf]]] = defaultdict(lambda: defaultdict(list))
    for leaf in leaves:
        parts = leaf.name.lower().split(".")
        wrapped = len(parts) >= 2 and parts[-1] in _WRAPPED and parts[-2] in _INVERTED | _POINT
        spelled = parts[-2] if wrapped else parts[-1]
        if leaf.name in taken or spelled not in _INVERTED | _POINT:
            continue
        unit = ".".join(leaf.name.split(".")[: -2 if wrapped else -1])
        pairs[unit]["f1" if spelled in _INVERTED else "f2"].append(leaf)
    for unit, by_role in pairs.items():
        if unit in units or len(by_role["f1"]) != 1 or len(by_role["f2"]) != 1:
            continue
        units[unit] = [_Found(by_role["f1"][0], "f1", unit), _Found(by_role["f2"][0], "f2", unit)]


def _sibling(leaf: _Leaf, local: str, by_name: dict[str, _Leaf]) -> bool:
    return (f"{leaf.group}.{local}" if leaf.group else local) in by_name


def _mlp(units: dict[str, list[_Found]], result: _Result) -> list[tuple[str, list[_Found], str]]:
    """Accepted MLP units; returns the rejected ones ``(unit, found, problem)`` (reported only inside blocks)."""
    rejected = []
    for unit, found in units.items():
        f1 = [f for f in found if f.role == "f1"]
        f2 = [f for f in found if f.role == "f2"]
        where = unit or "the model"
        if any(f.role == "?" for f in found):
            rejected.append((unit, found, f"ambiguous: MLP {where} has {', '.join(sorted(f.leaf.local for f in found))}"
                                          " whose shapes do not tell which is the down projection"))
        elif re.search(r"norm", unit.rsplit(".", 1)[-1], re.IGNORECASE):
            continue  # an adaptive norm's modulation (Mochi's norm1_context.linear_1), not an MLP
        elif f1 and all(f.leaf.d_out < f.leaf.d_in for f in f1) and (
                all(f.leaf.conv for f in found) or re.search(r"(^|[._])(se|squeeze|excit)", unit.rsplit(".", 1)[-1])):
            continue  # a squeeze-excitation (channels reduced, then restored), not an MLP
        elif _resampler(unit, found):
            continue  # a stage's downsampling layer (Sequencer's downsample.down), not half an MLP
        elif not f1 or not f2:
            have = ", ".join(f.leaf.local for f in found)
            rejected.append((unit, found, f"partial: MLP {where} has {have} but no"
                                          f" {'up (f1)' if not f1 else 'down (f2)'} projection"))
        elif len(f2) > 1:
            rejected.append((unit, found, f"ambiguous: MLP {where} has {len(f2)} modules that could be the down"
                                          f" projection ({', '.join(f.leaf.local for f in f2)})"))
        elif any(f.leaf.d_out not in (f2[0].leaf.d_in, 2 * f2[0].leaf.d_in) for f in f1):
            rejected.append((unit, found, f"inconsistent: in MLP {where} the up projections' outputs"
                                          f" ({', '.join(str(f.leaf.d_out) for f in f1)}) do not feed the down"
                                          f" projection's {f2[0].leaf.d_in} inputs"))
        else:
            result.found += found
    return rejected


_RESAMPLER = re.compile(r"(down|up)sampl|transition|merg", re.IGNORECASE)


def _resampler(unit: str, found: list[_Found]) -> bool:
    """Whether ``unit`` is a lone layer between stages, named like a resampler or transition (``downsample``,
    ``upsample``, ``transition``, ``patch_merging``) that only a spelling took for half an MLP (``down``)."""
    return len(found) == 1 and bool(_RESAMPLER.search(unit.rsplit(".", 1)[-1]))


# ---------------------------------------------------------------------------------------------- blocks
def _ancestors(name: str) -> list[tuple[str, str]]:
    """``(container, block)`` for every numbered proper ancestor of ``name``, outermost first."""
    parts = name.split(".")
    return [(".".join(parts[:i]), ".".join(parts[:i + 1])) for i in range(len(parts) - 1) if parts[i].isdigit()]


def _repeats(members: list[set], transition: bool) -> bool:
    """Whether a container's members hold the same modules (paths, roles, shapes); with ``transition``, the first
    may differ in shapes only (a stage's first block that changes the width, as in CoAtNet)."""
    if transition:
        structure = [{(rel, tag) for rel, tag, *_ in m} for m in members]
        return len(members) >= 3 and all(m == members[1] for m in members[2:]) and structure[0] == structure[1]
    return len(members) >= 2 and all(m == members[0] for m in members[1:])


def _consistent(members: list[set]) -> bool:
    """Whether the members of a container give each module path they share one shape (trivially, a single member);
    members that share no path at all (iFormer's stages, whose attention sits in other blocks from stage to stage)
    do not count as agreeing."""
    shapes: dict[str, set] = defaultdict(set)
    holders: dict[str, int] = defaultdict(int)
    for member in members:
        for rel, _, d_out, d_in in member:
            shapes[rel].add((d_out, d_in))
        for rel in {rel for rel, *_ in member}:
            holders[rel] += 1
    shared = len(members) <= 1 or any(n > 1 for n in holders.values())
    return shared and all(len(seen) == 1 for seen in shapes.values())


def _assign_blocks(found: list[_Found]) -> None:
    """Each module's block: the outermost numbered ancestor whose container's members repeat (:func:`_repeats`), or
    repeat after a transition block. Where none does (a stage of one block, a model of one layer): the ancestor in a
    container named like those chosen elsewhere (MaxViT's ``blocks``, a UNet's ``attentions``); else the outermost
    whose container's members agree on shapes (:func:`_consistent`); else the outermost."""
    signature: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for f in found:
        for container, block in _ancestors(f.leaf.name):
            signature[container][block].add((f.leaf.name[len(block) + 1:], f.tag, f.leaf.d_out, f.leaf.d_in))
    undecided = []
    for f in found:
        chain = _ancestors(f.leaf.name)
        members = {c: list(signature[c].values()) for c, _ in chain}
        link = next((link for transition in (False, True) for link in chain
                     if _repeats(members[link[0]], transition)), None)
        if link is not None:
            f.stack, f.block = link
        elif chain:
            undecided.append((f, chain, members))
    kinds = {f.stack.rsplit(".", 1)[-1] for f in found if f.block}
    for f, chain, members in undecided:
        f.stack, f.block = next((link for link in chain if link[0].rsplit(".", 1)[-1] in kinds),
                                next((link for link in chain if _consistent(members[link[0]])), chain[0]))
    for f in found:
        if f.block:
            f.rel = f.leaf.name[len(f.block) + 1:]


_UNITS = (("attention", ("q", "k", "v", "o")), ("MLP", ("f1", "f2")))


def _verify(found: list[_Found], problems: list[str], expert_roles: Optional[dict[str, set]] = None) -> list[str]:
    """Within each stack: every block has every role, each module path has one shape; a path has one role.

    A block may lack a whole attention or a whole MLP that other blocks of its stack have (a hybrid stack: Mamba,
    linear-attention or MLP-only layers next to attention layers); those are returned as notes for the log line.
    Roles held by a block's 3-D expert parameters (``expert_roles``, by block) count as present."""
    expert_roles = expert_roles or {}
    notes: list[str] = []
    stacks: dict[str, dict[str, list[_Found]]] = defaultdict(lambda: defaultdict(list))
    for f in found:
        stacks[f.stack][f.block].append(f)
    for stack, blocks in stacks.items():
        held = {block: {r for f in fs for r in f.roles} | expert_roles.get(block, set())
                for block, fs in blocks.items()}
        roles = set().union(*held.values())
        lacking: dict[str, list[str]] = defaultdict(list)
        for block, fs in blocks.items():
            missing = roles - held[block]
            unit = next((name for name, unit_roles in _UNITS if missing == roles & set(unit_roles)), None)
            if missing and unit is not None and held[block]:
                lacking[unit].append(block)
            elif missing:
                have = ", ".join(sorted({f.rel for f in fs}))
                problems.append(f"partial: block {block} lacks role(s) {', '.join(r for r in ROLES if r in missing)}"
                                f" that other blocks of {stack or 'the model'} have (it holds {have})")
        for unit, without in lacking.items():
            unit_roles = ", ".join(r for r in dict(_UNITS)[unit] if r in roles)
            notes.append(f"hybrid {stack or 'stack'}: {unit} ({unit_roles}) in {len(blocks) - len(without)} of"
                         f" {len(blocks)} blocks")
        # widths may change from block to block (a hierarchical model's stages, an MLP ratio per block): each
        # block's units are checked on their own (an MLP's up projections feed its down projection), and the log
        # line says where widths vary
        shapes: dict[str, set] = defaultdict(set)
        for fs in blocks.values():
            for f in fs:
                shapes[f.rel].add((f.leaf.d_out, f.leaf.d_in))
        varying = sorted(rel for rel, seen in shapes.items() if len(seen) > 1)
        if varying:
            notes.append(f"widths vary across the blocks of {stack or 'the model'} ({', '.join(varying[:3])}"
                         + (f" and {len(varying) - 3} more" if len(varying) > 3 else "") + ")")
    tags: dict[str, set] = defaultdict(set)
    for f in found:
        tags[f.rel].add(f.tag)
    for rel, seen in tags.items():
        if len(seen) > 1:
            problems.append(f"ambiguous: {rel} plays different roles in different stacks ({', '.join(sorted(seen))})")
    return notes


# ---------------------------------------------------------------------------------------------- fused layouts
def _decide_layouts(model: nn.Module, found: list[_Found]) -> dict[str, FusedModule]:
    """The FusedModule of every fused path, its layout checked on the first block that has each shape."""
    firsts: dict[tuple[str, int], _Found] = {}
    for f in found:
        if f.fused:
            firsts.setdefault((f.rel, f.leaf.d_out), f)
    if not firsts:
        return {}
    attention = {key: model.get_submodule(f.unit) if f.unit else model for key, f in firsts.items()}
    calls, reason = capture_calls(model, list({id(m): m for m in attention.values()}.values()))
    decisions: dict[str, dict[int, tuple[Optional[FusedLayout], str]]] = defaultdict(dict)
    for key, f in firsts.items():
        module = attention[key]
        if f.mla == "latent":
            decisions[f.rel][f.leaf.d_out] = (None, "the latent that keys and values share, and the rotary key, of"
                                                    " multi-head latent attention")
            continue
        call = calls.get(id(module)) or _call_alone(model, f, found)
        if call is None:
            decisions[f.rel][f.leaf.d_out] = (None, f"layout not checked: {reason}")
            continue
        heads, kv_heads, head_dims = head_sizes(module, model)
        own = f.leaf.name[len(f.unit) + 1:] if f.unit else f.leaf.name
        q_sep = next((g for g in found if g.unit == f.unit and g.block == f.block and g.role == "q"), None)
        q_rows = torch.arange(q_sep.leaf.d_out) if q_sep is not None else None
        if f.mla == "heads":
            layouts, q_sep, q_rows = _latent_heads_layout(module, model, f, found)
        else:
            layouts = candidate_layouts(f.fused, f.leaf.d_out, f.leaf.d_in, heads, kv_heads, head_dims,
                                        key_value_dims(module))
        verdict: tuple[Optional[FusedLayout], str] = (None, "no candidate layout passed the numerical check")
        failures: list[str] = []
        probe: Optional[AttentionProbe] = None
        tried = 0
        fallback = lambda: fallback_layouts(f.fused, f.leaf.d_out, module, heads, layouts)  # noqa: E731
        for layout in _then_permuted(layouts, fallback):
            tried += 1
            members = {r: [(own, rows)] for r, rows in layout.rows().items()}
            if q_sep is not None:
                q_rel = q_sep.leaf.name[len(f.unit) + 1:] if f.unit else q_sep.leaf.name
                members["q"] = [(q_rel, q_rows)]
            if "v" not in f.fused:  # TNT's qk: the values' rows are a separate projection's
                members.update(_separate_values(f, found))
            try:
                probe = probe or _probe(module, call, f, found)
                ok, how = check_layout(probe, members, out_dim=1 if f.leaf.conv else -1,
                                       kv_only=f.fused == ("k", "v") and q_sep is not None)
            except Exception as exc:  # the copy of the attention could not run: say so, decompose whole
                ok, how = False, f"the check failed to run ({type(exc).__name__}: {str(exc)[:120]})"
            if ok:
                verdict = (layout, f"{layout.description}, {how}")
                break
            if tried <= len(layouts):  # the reasons of the names' order
                failures.append(how)
        if verdict[0] is None:
            verdict = _sole_layout(layouts, failures) or verdict
        if verdict[0] is None and f.fused == ("q", "k", "v") and q_sep is None and f.mla == "":
            verdict = _keys_values_only(module, call, f, own, (heads, kv_heads, head_dims), probe) or verdict
        if verdict[0] is None and failures:
            others = len(failures) - 1
            verdict = (None, f"layout not recognised: {failures[0]}"
                       + (f", and {others} other candidate layout{'s' if others > 1 else ''} failed" if others else ""))
        decisions[f.rel][f.leaf.d_out] = verdict
    out = {}
    for rel, by_rows in decisions.items():
        roles = next(f.fused for f in firsts.values() if f.rel == rel)
        held = {layout.roles for layout, _ in by_rows.values() if layout is not None}
        if len(held) > 1:  # keys and values only at one width, q, k, v at another: not one split
            by_rows = {rows: (None, "q/k/v at some widths, k/v at others") for rows in by_rows}
        roles = held.pop() if len(held) == 1 else roles
        if any(layout is None for layout, _ in by_rows.values()):
            why = next(how for layout, how in by_rows.values() if layout is None)
            out[rel] = FusedModule(roles, whole=True, note=f"{'/'.join(roles)} decomposed whole ({why})")
            continue
        table = {rows: layout for rows, (layout, _) in by_rows.items()}
        notes = "; ".join(dict.fromkeys(how for _, how in by_rows.values()))
        kinds = {layout.kind for layout in table.values()}
        if len(table) > 1 and len(kinds) == 1:
            how = next(iter(by_rows.values()))[1].split(", ", 1)[-1]
            notes = f"{'/'.join(roles)} {kinds.pop()} at {len(table)} widths, {how}"
        interleaved = any(layout.order is not None for layout in table.values())
        out[rel] = FusedModule(roles, split=_Sizes(table),
                               order=_Order(table) if interleaved else None, note=notes)
    return out


def _separate_values(f: _Found, found: list[_Found]) -> dict[str, list[tuple[str, torch.Tensor]]]:
    """The rows of the value projection next to ``f`` (a fused q/k), relative to their attention."""
    v = next((g for g in found if g.unit == f.unit and g.block == f.block and g.role == "v"), None)
    if v is None:
        return {}
    return {"v": [(v.leaf.name[len(f.unit) + 1:] if f.unit else v.leaf.name, torch.arange(v.leaf.d_out))]}


def _probe(module: nn.Module, call: tuple, f: _Found, found: list[_Found]) -> AttentionProbe:
    """The probe of ``f``'s attention, told which of its children holds the output projection (whose input is
    compared where the attention's output starts at zero)."""
    probe = AttentionProbe(module, call)
    out = next((g for g in found if g.unit == f.unit and g.block == f.block and g.role == "o"), None)
    if out is not None and f.unit and out.leaf.name.startswith(f.unit + "."):
        probe.before_output = out.leaf.name[len(f.unit) + 1:].split(".")[0]
    return probe


def _sole_layout(layouts: list[FusedLayout], failures: list[str]) -> Optional[tuple[FusedLayout, str]]:
    """The layout of a projection whose rows do not move the output at the probe input (its input is zero at
    initialisation: CSATv2's attention over a one-channel map, behind a norm of width 1), where its sizes allow only
    one layout: taken in the names' order, unchecked, and the note says so."""
    if len(layouts) != 1 or failures != ["the output does not depend on the v rows"]:
        return None
    return layouts[0], (f"{layouts[0].description}, not checked (the output does not depend on its rows at the probe"
                        " input; the only layout its sizes allow, in the names' order)")


def _keys_values_only(module: nn.Module, call: tuple, f: _Found, own: str, sizes: tuple,
                      probe: Optional[AttentionProbe]) -> Optional[tuple[FusedLayout, str]]:
    """The layout of a ``qkv``-named projection that holds only keys and values, its attention taking the queries
    from outside (GCViT's global attention: a query made once per stage, passed in), where no q, k, v layout passed:
    halves of k and v rows, checked like a fused ``kv``."""
    heads, kv_heads, head_dims = sizes
    for layout in candidate_layouts(("k", "v"), f.leaf.d_out, f.leaf.d_in, heads, kv_heads, head_dims):
        members = {r: [(own, rows)] for r, rows in layout.rows().items()}
        try:
            probe = probe or _probe(module, call, f, [])
            ok, how = check_layout(probe, members, out_dim=1 if f.leaf.conv else -1)
        except Exception:  # the copy of the attention could not run
            return None
        if ok:
            return layout, f"{layout.description}, {how}; keys and values only (the queries come from outside it)"
    return None


def _call_alone(model: nn.Module, f: _Found, found: list[_Found]) -> Optional[tuple[tuple, dict]]:
    """Arguments for the attention of ``f`` where the model's probe pass did not reach it: the attention called on
    one random sequence, else on one with an identity rotation where it requires a rotary position, else on two (a
    cross-attention's context, joint attention's text stream: widths among its projections' inputs), else the
    arguments it gets when the nearest module around it runs on a random sequence."""
    module = model.get_submodule(f.unit) if f.unit else model
    call = direct_call(module, f.leaf.d_in, f.leaf.conv)
    if call is None and not f.leaf.conv:
        call = rotary_call(module, model, f.leaf.d_in)  # one that requires a rotary position: an identity one
    if call is None and not f.leaf.conv:
        widths = [g.leaf.d_in for g in found if g.unit == f.unit and g.block == f.block and g.role != "o"]
        call = two_stream_call(module, f.leaf.d_in, widths)
    if call is None and f.unit and not f.leaf.conv:
        call = enclosing_call(model, f.unit)
    return call


def _then_permuted(layouts: list[FusedLayout], fallback=None):
    """The candidate layouts, then (made only if none passed) the same with the roles' row blocks reordered, then
    those ``fallback()`` makes (:func:`~vf_core.fused_layouts.fallback_layouts`)."""
    yield from layouts
    yield from permuted_layouts(layouts)
    if fallback is not None:
        yield from fallback()


def _latent_heads_layout(attention: nn.Module, model: nn.Module, f: _Found,
                         found: list[_Found]) -> tuple[list[FusedLayout], Optional[_Found], Optional[torch.Tensor]]:
    """The layout of multi-head latent attention's ``kv_b_proj`` (per head: the keys' rows without rotary
    position, then the values' rows), and the query projection with the rows it multiplies them with (per head, the
    first ``qk_nope_head_dim`` of ``qk_nope_head_dim + qk_rope_head_dim``), from the sizes of the attention module
    and the config; no layout when they do not fit."""
    sources = [attention, *_config_sources(attention), *_config_sources(model)]
    heads = _ints(sources, ("num_heads", "num_attention_heads"))
    nope, rope = _ints(sources, ("qk_nope_head_dim",)), _ints(sources, ("qk_rope_head_dim",))
    v_dim = _ints(sources, ("v_head_dim",))
    if not (heads and nope and rope and v_dim):
        return [], None, None
    h, n, r, v = heads[0], nope[0], rope[0], v_dim[0]
    query = next((g for g in found if g.unit == f.unit and g.block == f.block and g.role == "q"
                  and g.leaf.d_out == h * (n + r)), None)
    if f.leaf.d_out != h * (n + v) or query is None:
        return [], None, None
    sizes = (h * n, h * v)
    layout = FusedLayout(("k", "v"), sizes, _grouped(("k", "v"), sizes, h), "interleaved per head",
                         f"k/v interleaved per head ({h} groups of {n}/{v} rows)")
    q_rows = torch.tensor([head * (n + r) + i for head in range(h) for i in range(n)], dtype=torch.long)
    return [layout], query, q_rows


class _Sizes:
    """``FusedModule.split`` of an inferred fused path: the sizes of its checked layout, by its number of rows."""

    def __init__(self, table: dict[int, FusedLayout]) -> None:
        self.table = table

    def __call__(self, module: nn.Module) -> list[int]:
        return list(self.table[_rows(module)].sizes)


class _Order(_Sizes):
    def __call__(self, module: nn.Module) -> list[int]:
        layout = self.table[_rows(module)]
        return list(layout.order) if layout.order is not None else list(range(sum(layout.sizes)))


def _rows(module: nn.Module) -> int:
    return int(layout_for(module, type(module).__name__).matrix(module).shape[0])


# ---------------------------------------------------------------------------------------------- messages
def _what(model: nn.Module) -> str:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return f"model_type {model_type!r}" if model_type else f"{type(model).__name__}"


def _suggestion(found: list[_Found]) -> str:
    """A ``target_modules`` (and ``fused_modules``) built from what was found, or a generic one."""
    roles: dict[str, list[str]] = defaultdict(list)
    fused: dict[str, list[str]] = {}
    for f in found:
        if f.role and f.leaf.local not in roles[f.role]:
            roles[f.role].append(f.leaf.local)
        elif f.fused:
            fused[f.leaf.local] = list(f.fused)
            for r in f.fused:
                roles[r] += [f.leaf.local] if f.leaf.local not in roles[r] else []
    if not roles:
        return ("VectorFitConfig(target_modules={'q': ['q_proj'], 'k': ['k_proj'], 'v': ['v_proj'], 'o': ['o_proj'],"
                " 'f1': ['up_proj'], 'f2': ['down_proj']}) with your model's names (a list matches names or"
                " '.'-suffixes), or target_modules=r'.*\\.(q_proj|v_proj)' (a regex over full names)")
    spec = ", ".join(f"{r!r}: {sorted(set(roles[r]))!r}" for r in ROLES if r in roles)
    extra = f", fused_modules={fused!r}" if fused else ""
    return f"VectorFitConfig(target_modules={{{spec}}}{extra}), corrected to the modules you mean"


def _no_blocks(model: nn.Module) -> UnknownFamilyError:
    known = sorted(list_families())
    listed = ", ".join(known) if known else "none installed"
    in_blocks = list(dict.fromkeys(name[len(_ancestors(name)[-1][1]) + 1:] for name, m in model.named_modules()
                                   if _ancestors(name) and next(m.children(), None) is None
                                   and getattr(getattr(m, "weight", None), "dim", lambda: 0)() >= 2))[:8]
    seen = (f"; the layers with weight matrices inside its numbered blocks are {', '.join(in_blocks)}" if in_blocks
            else "; it has no layers with weight matrices inside numbered blocks")
    return UnknownFamilyError(
        f"no installed backend declares {type(model).__name__}"
        + (f" ({_what(model)})" if _what(model) != type(model).__name__ else "")
        + ", and its structure shows no attention (q, k, v projections such as q_proj, query, Wq, to_q, c_attn, qkv)"
        f" or MLP (fc1/fc2, up_proj/down_proj, dense_h_to_4h...) in repeated blocks{seen}. This looks like a model"
        " without transformer blocks (a plain CNN, or a state-space model such as Mamba), where the roles q, k, v, o,"
        " f1, f2 do not apply. Name the modules to decompose yourself, e.g."
        " VectorFitConfig(target_modules=r'.*\\.(in_proj|out_proj)') (a regex over full module names) or"
        f" target_modules=['conv1', 'conv2'] (names or '.'-suffixes). Known families: {listed}")


# ---------------------------------------------------------------------------------------------- summary
def describe_family(family: Family, blocks: int, stacks: list[str], model_desc: str) -> str:
    """The one line logged at injection: what was inferred, from which modules."""
    def short(rel: str) -> str:
        parts = rel.split(".")
        return ".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]

    shorts: dict[str, set] = defaultdict(set)
    for role, paths in family.roles.items():
        for rel in paths:
            shorts[short(rel)].add(role)
    roles, sources, whole = [], [], []
    for role in ROLES:
        fused = [rel for rel, fm in family.fused.items() if role in fm.roles]
        names = [short(rel) if len(shorts[short(rel)]) == 1 else rel for rel in family.roles.get(role, ())]
        if any(not family.fused[rel].whole for rel in fused) or names:
            roles.append(role)
        for rel in fused:
            text = f"{short(rel)} ({family.fused[rel].note})"
            if family.fused[rel].whole and "+".join(family.fused[rel].roles) not in whole:
                whole.append("+".join(family.fused[rel].roles))
            if text not in sources:
                sources.append(text)
        if names:
            sources.append("+".join(dict.fromkeys(names)))
    where = (f" in {', '.join(stacks)}" if 1 < len(stacks) <= 4 else f" in {len(stacks)} stacks" if len(stacks) > 4
             else "")
    listed = ", ".join(roles) + "".join(f" and {w} as one matrix" for w in whole)
    return (f"family inferred for {model_desc}: {blocks} block{'s' if blocks != 1 else ''}{where}, roles {listed} from"
            f" {', '.join(sources)}")


# ---------------------------------------------------------------------------------------------- entry point
_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, Family]]" = weakref.WeakKeyDictionary()


def _signature(leaves: list[_Leaf]) -> tuple:
    return tuple((leaf.name, type(leaf.module).__name__, leaf.d_out, leaf.d_in) for leaf in leaves)


def infer_family(model: nn.Module) -> Family:
    """The :class:`~vf_core.families.Family` of ``model`` recognised from its structure (``origin="inferred"``).

    Raises :class:`~vf_core.errors.UnknownFamilyError` when the model has no attention or MLP blocks, and
    :class:`~vf_core.errors.InferenceError` when what it has is ambiguous, partial or inconsistent. The result is
    kept for the model object until its modules change.
    """
    leaves = _leaves(model)
    signature = _signature(leaves)
    cached = _CACHE.get(model)
    if cached is not None and cached[0] == signature:
        return cached[1]
    family = _infer(model, leaves)
    _CACHE[model] = (signature, family)
    return family


def _infer(model: nn.Module, leaves: list[_Leaf]) -> Family:
    by_name = {leaf.name: leaf for leaf in leaves}
    groups: dict[str, dict[str, _Leaf]] = defaultdict(dict)
    for leaf in leaves:
        groups[leaf.group].setdefault(leaf.local, leaf)
    result = _Result()
    _attention(groups, by_name, dict(model.named_modules()), result)
    named = dict(model.named_modules())
    _attention_by_class(named, leaves, result)
    candidates = _mlp_candidates(leaves, by_name, result.claimed)
    _mlp_by_class(named, leaves, candidates, result.claimed)
    _mlp_by_call(named, candidates)
    _inverted_bottlenecks(leaves, candidates, result.claimed)
    rejected = _mlp(candidates, result)
    # what looks like part of an MLP inside an attention (an output gate's gate_proj) is no MLP, and no problem
    attention = {f.unit for f in result.found}
    rejected = [r for r in rejected if not any(r[0] == a or r[0].startswith(a + ".") for a in attention if a)]
    _assign_blocks(result.found)
    in_blocks = [f for f in result.found if f.block]
    # what is wrong counts only inside numbered blocks (a lone fc1 in a head, an attention pool, are not targeted)
    problems = [message for path, message in result.problems + [(u, m) for u, _, m in rejected]
                if _ancestors(path + ".x")]
    if not in_blocks:
        if problems:
            raise InferenceError(f"cannot infer the roles of {_what(model)}: {'; '.join(problems[:4])}. Name the"
                                 f" modules yourself, e.g. {_suggestion(result.found)}")
        raise _no_blocks(model)
    blocks = sorted({f.block for f in in_blocks}, key=len, reverse=True)
    expert_roles: dict[str, set] = defaultdict(set)
    for full, role in find_expert_params(model).items():
        block = next((b for b in blocks if full.startswith(b + ".")), None)
        if block is not None and role:
            expert_roles[block].add(role)
    hybrid = _verify(in_blocks, problems, expert_roles)
    bare = {f.stack for f in in_blocks if f.unit in set(result.without_output)}
    hybrid += [f"attention without an output projection in {stack or 'the model'}" for stack in sorted(bare)]
    if problems:
        found = "; ".join(sorted({f"{f.rel} ({f.tag})" for f in in_blocks}))[:600]
        raise InferenceError(
            f"cannot infer the roles of {_what(model)} without doubt: {'; '.join(problems[:4])}"
            + (f" (and {len(problems) - 4} more)" if len(problems) > 4 else "")
            + f". Found in its blocks: {found}. Name the modules yourself, e.g. {_suggestion(in_blocks)}")
    return _build(model, in_blocks, hybrid)


def _build(model: nn.Module, found: list[_Found], hybrid: Optional[list[str]] = None) -> Family:
    fused = _decide_layouts(model, found)
    roles: dict[str, list[str]] = defaultdict(list)
    for f in found:
        if f.role and f.rel not in roles[f.role]:
            roles[f.role].append(f.rel)
    stacks = list(dict.fromkeys(f.stack for f in found))
    alternatives = sorted({_stack_pattern(model, s, found) for s in stacks}, key=lambda a: (-len(a), a))
    blocks = list(dict.fromkeys(f.block for f in found))
    heads = [n for n, m in model.named_modules()
             if n and n.rsplit(".", 1)[-1] in _HEAD_NAMES and next(m.parameters(), None) is not None
             and not _ancestors(n + ".x")]
    heads = [h for h in heads if not any(h.startswith(o + ".") for o in heads)]
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    family = Family(
        name=f"inferred:{model_type or type(model).__name__}",
        backend="vf-core",
        block_pattern="(?:" + "|".join(alternatives) + ")",
        roles={r: tuple(roles[r]) for r in ROLES if roles.get(r)},
        fused=fused,
        heads=tuple(heads),
        origin="inferred",
    )
    experts = _expert_params(model, family.block_pattern)
    if experts:
        family = dataclasses.replace(family, expert_params=experts)
    notes = describe_family(family, len(blocks), stacks, _what(model))
    if hybrid:
        notes += "; " + "; ".join(hybrid)
    if experts:
        notes += "; experts (one matrix per expert) " + ", ".join(f"{p} ({r})" for p, r in experts.items())
    return dataclasses.replace(family, notes=notes)


def _stack_pattern(model: nn.Module, stack: str, found: list[_Found]) -> str:
    """The block pattern of ``stack``: any of its numbered members, or only those where roles were found when
    another member holds a module at one of their paths (iFormer's convolution blocks hold a depthwise
    ``mixer.module.0.c`` where its FFN blocks hold their up projection)."""
    prefix = re.escape(stack) + r"\." if stack else ""
    held = {f.block for f in found if f.stack == stack}
    rels = {f.rel for f in found if f.stack == stack}
    container = model.get_submodule(stack) if stack else model
    others = [n for n, _ in container.named_children() if n.isdigit() and (f"{stack}.{n}" if stack else n) not in held]
    modules = dict(container.named_modules())
    if not any(f"{n}.{rel}" in modules for n in others for rel in rels):
        return prefix + r"\d+"
    numbers = sorted((b.rsplit(".", 1)[-1] for b in held), key=int)
    return prefix + "(?:" + "|".join(numbers) + r")(?![0-9])"


def _expert_params(model: nn.Module, block_pattern: str) -> dict[str, str]:
    """The 3-D expert parameters inside the blocks (transformers 5 keeps Mixtral's, Qwen-MoE's... experts in one
    ``(experts, out, in)`` tensor), relative to their block, with the role their name gives (``gate_up_proj``:
    f1, ``down_proj``: f2); :mod:`vf_core.experts` decomposes each expert's matrix on its own."""
    pattern = re.compile(block_pattern)
    found: dict[str, str] = {}
    for full, role in find_expert_params(model).items():
        match = pattern.match(full)
        if role and match and full.startswith(match.group(0) + "."):
            found.setdefault(full[len(match.group(0)) + 1:], role)
    return found
