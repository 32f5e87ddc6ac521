"""How the rows of a fused attention projection are laid out, found by trying candidates on the attention itself.

A fused projection (``qkv``, ``query_key_value``, ``Wqkv``, ``c_attn``...) stacks the q, k and v rows in one weight,
but in different orders: all q rows, then k, then v ("blocked": GPT-2, timm's ViT, Phi-3, MPT); q, k, v of each head
in turn ("interleaved per head": GPT-NeoX, Bloom, MaxViT); or the q heads of each key-value group followed by that
group's k and v (Falcon's new decoder architecture). Names do not tell which (GPT-BigCode's ``c_attn`` is blocked
with multi-query attention and interleaved without), so :func:`infer_family <vf_core.inference.infer_family>`
proposes layouts from the sizes it reads (heads, key-value heads, head dimension) and checks each one numerically:

1. the model runs once on a small probe input (:func:`~vf_core.probe_calls.probe_inputs`) until its first such
   attention module is called; its arguments are kept (:func:`~vf_core.probe_calls.capture_calls`);
2. a float32 copy of that attention module, with its biases and its norms' epsilons zeroed (normalised queries and
   keys, qk-norm, are then exactly scale-invariant), is called on them with the rows of each role
   rescaled (:func:`check_layout`): scaling the v rows by 0 and by 2 must change the output affinely (attention is
   linear in v, not in q or k); scaling q by 2 and k by 1/2 must leave it unchanged (the scores ``q.k`` do not move;
   powers of two keep this exact); and where the projection is called as a module, noise added to the q rows of
   the first position must change no other position's output (a query only affects its own position, a key
   affects every position that attends to it).

Where the model's probe pass does not reach the attention (a vision tower behind token ids, a denoiser whose inputs
cannot be guessed), the attention is called on its own (:mod:`vf_core.probe_calls`: on a random sequence, with an
identity rotation where it requires a rotary position, on two sequences, or through a module around it). An attention
that is not local in positions (XCiT's attention across channels, where a query's noise spreads like a key's) passes
with q before k as in the names. The first candidate that passes every check is the layout; when none does, the same
layouts with the roles' row blocks reordered are tried (:func:`permuted_layouts`: CodeGen's q, v, k per group), so
the roles follow what is measured. The model itself is never modified.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from .layouts import layout_for

__all__ = ["FusedLayout", "AttentionProbe", "candidate_layouts", "permuted_layouts", "head_sizes", "key_value_dims",
           "fallback_layouts", "check_layout"]


@dataclass(frozen=True)
class FusedLayout:
    """One way the rows of a fused projection may hold its roles: ``sizes`` per role after the permutation
    ``order`` (None: the rows are already in role order) and a description for the log line."""

    roles: tuple[str, ...]
    sizes: tuple[int, ...]
    order: Optional[tuple[int, ...]]
    kind: str  # "blocked", "interleaved per head", "grouped per key-value head"
    description: str

    def rows(self) -> dict[str, torch.Tensor]:
        """The weight rows of each role."""
        order = list(self.order) if self.order is not None else list(range(sum(self.sizes)))
        out, start = {}, 0
        for role, size in zip(self.roles, self.sizes):
            out[role] = torch.tensor(order[start:start + size], dtype=torch.long)
            start += size
        return out


# ---------------------------------------------------------------------------------------------- sizes
_HEADS = ("num_heads", "num_attention_heads", "n_heads", "n_head", "heads", "encoder_attention_heads",
          "decoder_attention_heads")
_KV_HEADS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "n_head_kv", "kv_heads", "kv_n_heads",
             "num_kv")
_HEAD_DIMS = ("head_dim", "head_size", "dim_head", "d_head", "attention_head_size", "d_kv")


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    try:
        return getattr(obj, key, None)
    except Exception:  # a config or module property that fails
        return None


def _ints(sources: Sequence[Any], keys: Sequence[str]) -> list[int]:
    out: list[int] = []
    for src in sources:
        for key in keys:
            value = _get(src, key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0 and value not in out:
                out.append(value)
    return out


def _config_sources(obj: Any) -> list[Any]:
    """``obj``'s config and the sub-configs that may hold attention sizes (``text_config``, MPT's ``attn_config``)."""
    config = _get(obj, "config")
    out = [config] if config is not None else []
    for sub in ("text_config", "attn_config", "attention_config", "decoder", "encoder"):
        value = _get(config, sub) if config is not None else None
        if value is not None and not isinstance(value, (str, int, float, bool)):
            out.append(value)
    return out


def head_sizes(attention: nn.Module, model: nn.Module) -> tuple[list[int], list[int], list[int]]:
    """Candidate numbers of heads, of key-value heads and head dimensions, from the attention module's attributes
    (timm's ``num_heads``, Falcon's ``num_kv_heads``) first, then from the configs."""
    sources = [attention, *_config_sources(attention), *_config_sources(model)]
    heads = _ints(sources, _HEADS)
    kv_heads = _ints(sources, _KV_HEADS)
    for src in sources:
        groups = _get(src, "num_key_value_groups")
        if isinstance(groups, int) and groups > 0:
            kv_heads += [h // groups for h in heads if h % groups == 0 and h // groups not in kv_heads]
        if _get(src, "multi_query") is True and 1 not in kv_heads:
            kv_heads.append(1)
    return heads, kv_heads, _ints(sources, _HEAD_DIMS)


def _grouped(roles: tuple[str, ...], sizes: tuple[int, ...], groups: int) -> tuple[int, ...]:
    """The row order of ``groups`` groups each holding its share of every role, roles in turn within a group."""
    shares = [s // groups for s in sizes]
    width = sum(shares)
    order: list[int] = []
    for r, share in enumerate(shares):
        offset = sum(shares[:r])
        order += [g * width + offset + i for g in range(groups) for i in range(share)]
    return tuple(order)


def key_value_dims(attention: nn.Module) -> list[tuple[int, int]]:
    """``(key dimension, value dimension)`` per head where an attention keeps them apart (timm's EfficientFormer,
    LeViT and TinyViT: ``key_dim`` and ``val_dim`` or ``d``, values wider than keys)."""
    keys = _ints([attention], ("key_dim",))
    values = _ints([attention], ("val_dim", "d", "value_dim"))
    return [(k, v) for k in keys for v in values if k != v]


def candidate_layouts(roles: tuple[str, ...], d_out: int, d_in: int, heads: Sequence[int],
                      kv_heads: Sequence[int], head_dims: Sequence[int],
                      kv_dims: Sequence[tuple[int, int]] = ()) -> list[FusedLayout]:
    """Layouts to try for a fused projection of ``d_out`` rows holding ``roles`` (``q, k, v`` or ``k, v``);
    ``kv_dims`` adds per-head key and value dimensions that differ (:func:`key_value_dims`)."""
    out: list[FusedLayout] = []
    seen: set = set()

    names = "/".join(roles)

    def add(sizes: tuple[int, ...], groups: int, kind: str) -> None:
        if any(s <= 0 or s % groups for s in sizes) or sum(sizes) != d_out:
            return
        order = None if groups == 1 else _grouped(roles, sizes, groups)
        key = (sizes, order)
        if key not in seen:
            seen.add(key)
            shares = "/".join(str(s // groups) for s in sizes)
            rows = f"{shares} rows" if groups == 1 else f"{groups} groups of {shares} rows"
            out.append(FusedLayout(roles, sizes, order, kind, f"{names} {kind} ({rows})"))

    if len(roles) == 2:  # k, v (a fused kv) or q, k (TNT's qk)
        kv_options = [d_out // 2] if d_out % 2 == 0 else []
        q_options: list[int] = []
    else:
        q_options = [h * d for h in heads for d in head_dims] + [d_in] + ([d_out // 3] if d_out % 3 == 0 else [])
        q_options += [d_out - 2 * h * d for h in kv_heads for d in head_dims]
        kv_options = []
    sized: list[tuple[int, ...]] = []
    for q in dict.fromkeys(q_options):
        if 0 < q < d_out and (d_out - q) % 2 == 0:
            sized.append((q, (d_out - q) // 2, (d_out - q) // 2))
    sized += [(kv, kv) for kv in kv_options]
    for sizes in sized:
        add(sizes, 1, "blocked")
    if roles == ("k", "v"):  # keys narrower than values, per head (LeViT's attention downsampling)
        for key, value in kv_dims:
            for h in heads:
                if h * (key + value) == d_out:
                    add((h * key, h * value), h, "interleaved per head")
                    add((h * key, h * value), 1, "blocked")
    if roles == ("q", "k", "v"):  # keys (and queries) narrower than values, per head
        for key, value in kv_dims:
            for h in heads:
                if h * (2 * key + value) == d_out:
                    sizes = (h * key, h * key, h * value)
                    add(sizes, h, "interleaved per head")
                    add(sizes, 1, "blocked")
    for sizes in sized:
        kv = sizes[-1]
        groups = list(kv_heads) + [kv // d for d in head_dims if kv % d == 0]
        per_head = len(sizes) == 2 or sizes[0] == kv
        if per_head:
            groups += list(heads) + [sizes[0] // d for d in head_dims if sizes[0] % d == 0]
        for g in dict.fromkeys(groups):
            if g > 1:
                add(sizes, g, "interleaved per head" if per_head and (sizes[0] // g in head_dims or g in heads)
                    else "grouped per key-value head")
    return out


def permuted_layouts(layouts: Sequence[FusedLayout]) -> list[FusedLayout]:
    """The same layouts with the roles' row blocks in another order, where their sizes allow (CodeGen keeps q, v, k
    per group; DaViT's channel attention computes its scores from the second and third blocks and is linear in the
    first): tried only when no layout in the names' order passes, so the roles follow what the check measures."""
    out: list[FusedLayout] = []
    seen = {(layout.sizes, layout.order) for layout in layouts}
    for layout in layouts:
        rows = layout.rows()
        roles = layout.roles
        for perm in itertools.permutations(range(len(roles))):
            if perm == tuple(range(len(roles))) or any(layout.sizes[i] != layout.sizes[p] for i, p in enumerate(perm)):
                continue
            # role i takes the rows the names' order gives role perm[i]
            order = tuple(int(r) for i in range(len(roles)) for r in rows[roles[perm[i]]])
            key = (layout.sizes, order)
            if key in seen:
                continue
            seen.add(key)
            held = ", ".join(roles[perm.index(j)] for j in range(len(roles)))
            out.append(FusedLayout(roles, layout.sizes, order, layout.kind,
                                   f"{layout.description}, held in the order {held}"))
    return out


#: attributes of an attention giving the width of its queries and keys where values are wider (SHViT's ``qk_dim``)
_QK_WIDTHS = ("qk_dim", "key_dim")


def fallback_layouts(roles: tuple[str, ...], d_out: int, attention: nn.Module, heads: Sequence[int] = (),
                     tried: Sequence[FusedLayout] = ()) -> list[FusedLayout]:
    """Layouts tried only after :func:`candidate_layouts` and :func:`permuted_layouts` all failed, for attentions
    that state no head sizes that fit:

    - queries and keys narrower than the values, their width an attribute of the attention (SHViT's single-head
      ``qk_dim``; times the heads where it has them): q and k rows first, the values the rest, blocked or per head;
    - equal shares per role interleaved per head, for every head width that divides a share (EfficientViT's
      multi-scale linear attention keeps q, k, v of each head together and names only its head width ``dim``).

    Each is checked numerically like any candidate; those already in ``tried`` are left out."""
    out: list[FusedLayout] = []
    seen = {(layout.sizes, layout.order) for layout in tried}
    names = "/".join(roles)

    def add(sizes: tuple[int, ...], groups: int, kind: str) -> None:
        if any(s <= 0 or s % groups for s in sizes) or sum(sizes) != d_out:
            return
        order = None if groups == 1 else _grouped(roles, sizes, groups)
        if (sizes, order) in seen:
            return
        seen.add((sizes, order))
        shares = "/".join(str(s // groups) for s in sizes)
        rows = f"{shares} rows" if groups == 1 else f"{groups} groups of {shares} rows"
        out.append(FusedLayout(roles, sizes, order, kind, f"{names} {kind} ({rows})"))

    if roles == ("q", "k", "v"):
        for width in _ints([attention], _QK_WIDTHS):
            for h in dict.fromkeys((1, *heads)):
                sizes = (h * width, h * width, d_out - 2 * h * width)
                add(sizes, 1, "blocked")
                if h > 1:
                    add(sizes, h, "interleaved per head")
    if d_out % len(roles) == 0:
        share = d_out // len(roles)
        for head in range(2, share):
            if share % head == 0:
                add((share,) * len(roles), share // head, "interleaved per head")
    return out


# ---------------------------------------------------------------------------------------------- checking
def _float(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().float().clone() if obj.is_floating_point() else obj
    if isinstance(obj, tuple):
        return tuple(_float(o) for o in obj)
    if isinstance(obj, list):
        return [_float(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _float(v) for k, v in obj.items()}
    return obj


def _first_tensor(obj: Any) -> Optional[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return obj
    values = obj.values() if isinstance(obj, Mapping) else obj if isinstance(obj, (tuple, list)) else ()
    for value in values:
        found = _first_tensor(value)
        if found is not None:
            return found
    return None


def _position0(t: torch.Tensor, feature_dim: int, features: Any = slice(None)) -> tuple:
    """An index of the first position (every dim but batch and features at 0)."""
    index: list[Any] = [0 if d not in (0, feature_dim) else slice(None) for d in range(t.dim())]
    index[feature_dim] = features
    return tuple(index)


class AttentionProbe:
    """A float32 copy of an attention module, biases and norm epsilons zeroed, called on captured arguments with
    rescaled rows (made once per attention module, then reused for every candidate layout)."""

    def __init__(self, attention: nn.Module, call: tuple[tuple, dict]) -> None:
        self.module = copy.deepcopy(attention).float()
        self.module.eval()  # not chained: some attentions' train() returns None (timm's EfficientFormer, LeViT)
        with torch.no_grad():
            for name, p in self.module.named_parameters():
                if name.rsplit(".", 1)[-1].endswith("bias") and p.dim() == 1:
                    p.zero_()
        self.epsilons: list[tuple[nn.Module, str, float]] = []
        for sub in self.module.modules():  # normalised q and k (qk-norm) are then exactly scale-invariant
            for attr in ("eps", "variance_epsilon", "epsilon"):
                if isinstance(getattr(sub, attr, None), float):
                    self.epsilons.append((sub, attr, getattr(sub, attr)))
                    setattr(sub, attr, 0.0)
        self.args, self.kwargs = call
        #: the child holding the output projection (set by the caller), and whether its input is what is compared
        self.before_output: Optional[str] = None
        self.tapped = False

    def tap_before_output(self) -> bool:
        """Compare the input of the output projection from now on, where the attention's output is zero at
        initialisation (LeViT's residual branches end in a batch norm whose weight starts at 0); whether it can."""
        if self.before_output is None or self.tapped:
            return False
        self.tapped = True
        return True

    def keep_epsilons(self) -> bool:
        """Give the norms their epsilons back (a norm over a single channel divides zero by zero without one:
        CSATv2's spatial attention on a one-channel map); whether there were any."""
        for sub, attr, value in self.epsilons:
            setattr(sub, attr, value)
        kept, self.epsilons = bool(self.epsilons), []
        return kept

    def run(self, members: Mapping[str, list[tuple[str, torch.Tensor]]], scales: Mapping[str, float],
            noise: Optional[str] = None) -> tuple[Optional[torch.Tensor], bool]:
        """The output with the rows of each role in ``scales`` rescaled (and noise on the first position of the rows
        of role ``noise``), and whether that noise was applied."""
        saved, handles, fired = [], [], []
        with torch.no_grad():
            try:
                for role, factor in scales.items():
                    for rel, rows in members[role]:
                        mod = self.module.get_submodule(rel)
                        matrix = layout_for(mod, rel).matrix(mod)
                        rows = rows.to(matrix.device)
                        saved.append((matrix, rows, matrix[rows].clone()))
                        matrix[rows] = matrix[rows] * factor
                for rel, rows in members.get(noise, []) if noise else []:
                    mod = self.module.get_submodule(rel)
                    handles.append(mod.register_forward_hook(self._noise_hook(layout_for(mod, rel).out_dim, rows,
                                                                              fired)))
                taken: list[torch.Tensor] = []
                if self.tapped:
                    handles.append(self.module.get_submodule(self.before_output).register_forward_pre_hook(
                        lambda module, args: taken.append(_first_tensor(args))))
                out = _first_tensor(self.module(*_float(self.args), **_float(self.kwargs)))
                out = taken[0] if taken else out
            finally:
                for handle in handles:
                    handle.remove()
                for matrix, rows, value in saved:
                    matrix[rows] = value
        return (out.float() if out is not None else None), bool(fired)

    @staticmethod
    def _noise_hook(out_dim: int, rows: torch.Tensor, fired: list):
        def hook(module, args, output):
            if not isinstance(output, torch.Tensor) or output.dim() < 3:
                return None
            fired.append(True)
            dim = out_dim % output.dim()
            output = output.clone()
            index = _position0(output, dim, rows.to(output.device))
            gen = torch.Generator().manual_seed(1)
            scale = output.abs().max().clamp_min(1e-6)
            output[index] += torch.randn(output[index].shape, generator=gen).to(output) * scale
            return output
        return hook


def check_layout(probe: AttentionProbe, members: Mapping[str, list[tuple[str, torch.Tensor]]],
                 out_dim: int = -1, kv_only: bool = False) -> tuple[bool, str]:
    """:func:`_check_layout`; where the output is not linear in the v rows and the probe knows the child holding
    the output projection, checked again (and from then on) on that child's input: an activation before the output
    projection (LeViT's ``proj = Sequential(Hardswish, LinearNorm)``) is no part of the attention."""
    ok, how = _check_layout(probe, members, out_dim, kv_only)
    if not ok and how == _NOT_LINEAR and probe.tap_before_output():
        ok, how = _check_layout(probe, members, out_dim, kv_only)
    return ok, how


_NOT_LINEAR = "the output is not linear in the v rows"


def _check_layout(probe: AttentionProbe, members: Mapping[str, list[tuple[str, torch.Tensor]]],
                  out_dim: int = -1, kv_only: bool = False) -> tuple[bool, str]:
    """Whether the rows in ``members`` (role -> ``[(module path within the attention, rows)]``) are the q, k and v of
    the attention ``probe`` copies; ``(passed, what was checked or why it failed)``. ``out_dim`` is the feature
    dimension of the attention's output (1 for convolutional attention). With ``kv_only`` (a fused k+v next to a
    query projection of its own), scores that are not scale-free in q and k (a relative-position term computed from
    the queries alone, as in Shaw's attention) still pass where the output is linear in the v rows and not in the k
    rows: with halves of equal size, that places every key row."""
    base, _ = probe.run(members, {})
    if base is not None and not torch.isfinite(base).all() and probe.keep_epsilons():
        base, _ = probe.run(members, {})  # zeroed epsilons made it 0/0 (a norm over one channel): kept instead
    if base is not None and torch.isfinite(base).all() and base.abs().max() == 0 and probe.tap_before_output():
        base, _ = probe.run(members, {})  # the output starts at zero: the output projection's input instead
    if base is None or not torch.isfinite(base).all() or base.abs().max() == 0:
        return False, "the attention's output is empty or not finite on the probe input"
    scale = float(base.abs().max())
    problem, unchecked = _values_problem(probe, members, base, scale)
    if problem:
        return False, problem
    if "q" in members:
        qk, _ = probe.run(members, {"q": 2.0, "k": 0.5})
        if qk is None or (qk - base).abs().max() > 1e-4 * scale:
            if kv_only and qk is not None and _nonlinear(probe, members, "k", base, scale):
                return True, ("checked numerically (linear in the v rows, not in the k rows; the scores also depend on"
                              " q alone)" + unchecked)
            return False, "scaling q by 2 and k by 1/2 changes the output"
        moved, fired = probe.run(members, {}, noise="q")
        if not fired or moved is None or moved.shape != base.shape or base.dim() < 3:
            return True, ("checked numerically; q before k assumed (the projection is not called as a module)"
                          + unchecked)
        if _spread(moved, base, out_dim) > 1e-4 * scale:
            # a key at one position reaches every position; a query only its own. Where the keys' rows spread no
            # less, the attention is not local in positions (attention across channels: XCiT's XCA), and the
            # check cannot tell q from k: q before k, as in the names
            moved, fired = probe.run(members, {}, noise="k")
            if fired and moved is not None and moved.shape == base.shape and _spread(moved, base, out_dim) > 1e-4 * scale:
                return True, ("checked numerically; q before k assumed (the attention is not local in positions)"
                              + unchecked)
            return False, "the q rows of one position change other positions' outputs"
    return True, "checked numerically" + unchecked


def _values_problem(probe: AttentionProbe, members: Mapping[str, list[tuple[str, torch.Tensor]]],
                    base: torch.Tensor, scale: float) -> tuple[str, str]:
    """Why the rows of ``members["v"]`` are not the values (``""`` where they pass), and a note for what could not be
    checked: the output must depend on them, change affinely when they are zeroed and doubled, and move linearly
    when noise is added to them. Values under a norm of their own (MViTv2's ``norm_v``: zeroing them is 0/0, doubling
    them changes nothing) cannot be checked: they pass on the other checks alone, and the note says so; rows of
    which only some are normalised (differential attention's k2 and v taken together) do not."""
    zero, _ = probe.run(members, {"v": 0.0})
    double, _ = probe.run(members, {"v": 2.0})
    if any(t is not None and not torch.isfinite(t).all() for t in (zero, double)):
        if double is not None and torch.isfinite(double).all() and (double - base).abs().max() <= 1e-4 * scale:
            return "", " (the values are normalised: their rows not checked)"
        return "the output is not finite with the v rows scaled", ""  # 0/0: a norm over some of them
    if zero is None or double is None or (base - zero).abs().max() <= 1e-3 * scale:
        return "the output does not depend on the v rows", ""
    if ((double - zero) - 2 * (base - zero)).abs().max() > 1e-4 * max(scale, float(double.abs().max())):
        return _NOT_LINEAR, ""
    if not _linear_in_noise(probe, members, "v", base, scale):
        return _NOT_LINEAR, ""
    return "", ""


def _linear_in_noise(probe: AttentionProbe, members: Mapping[str, list[tuple[str, torch.Tensor]]], role: str,
                     base: torch.Tensor, scale: float) -> bool:
    """Whether the output moves linearly when the same noise is added to the rows of ``role`` once, then twice: true
    of values, not of rows a norm rescales (normalised keys, qk-norm, hide from the scalings of the other checks:
    differential attention's ``q1, q2, k1, k2, v`` must not pass as q, k, v)."""
    once, twice = (_run_with_noise(probe, members, role, times) for times in (1.0, 2.0))
    if once is None or twice is None or not (torch.isfinite(once).all() and torch.isfinite(twice).all()):
        return False
    return bool(((twice - base) - 2 * (once - base)).abs().max() <= 1e-4 * max(scale, float(twice.abs().max())))


def _run_with_noise(probe: AttentionProbe, members: Mapping[str, list[tuple[str, torch.Tensor]]], role: str,
                    times: float) -> Optional[torch.Tensor]:
    """The probe's output with ``times`` a fixed noise (of the rows' own size) added to the rows of ``role``."""
    saved = []
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        try:
            for rel, rows in members[role]:
                mod = probe.module.get_submodule(rel)
                matrix = layout_for(mod, rel).matrix(mod)
                rows = rows.to(matrix.device)
                value = matrix[rows].clone()
                saved.append((matrix, rows, value))
                noise = torch.randn(value.shape, generator=gen).to(value) * value.std().clamp_min(1e-6)
                matrix[rows] = value + times * noise
            out, _ = probe.run(members, {})
        finally:
            for matrix, rows, value in saved:
                matrix[rows] = value
    return out


def _nonlinear(probe: AttentionProbe, members: Mapping[str, list[tuple[str, torch.Tensor]]], role: str,
               base: torch.Tensor, scale: float) -> bool:
    """Whether the output changes, and not affinely, when the rows of ``role`` are scaled by 0 and by 2."""
    zero, _ = probe.run(members, {role: 0.0})
    double, _ = probe.run(members, {role: 2.0})
    if zero is None or double is None or (base - zero).abs().max() <= 1e-3 * scale:
        return False
    return bool(((double - zero) - 2 * (base - zero)).abs().max() > 1e-3 * scale)


def _spread(moved: torch.Tensor, base: torch.Tensor, out_dim: int) -> float:
    """How much the output changed at positions other than the first."""
    others = (moved - base).abs()
    others[_position0(others, out_dim % others.dim())] = 0
    return float(others.max())
