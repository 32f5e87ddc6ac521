"""How to call an attention module so that :func:`vf_core.fused_layouts.check_layout` can test a fused projection's
layout on it: the arguments of its first call while the model runs once on a small probe input built from the model's
signature and config (:func:`probe_inputs`, :func:`capture_calls`, other image sizes where one is refused), and, where
that pass does not reach it, the attention called on its own: on one random sequence (:func:`direct_call`), with an
identity rotation where it requires rotary positions (:func:`rotary_call`), on two sequences (a cross-attention's
context, joint attention's second stream: :func:`two_stream_call`), or through the nearest module around it that
runs on a random sequence (:func:`enclosing_call`). Nothing here changes the model: its train/eval flags are
restored and its weights are not touched.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Attention(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.qkv, self.proj = nn.Linear(8, 24), nn.Linear(8, 8)
    ...     def forward(self, x):
    ...         q, k, v = self.qkv(x).chunk(3, -1)
    ...         return self.proj(torch.softmax(q @ k.transpose(-1, -2), -1) @ v)
    >>> args, kwargs = direct_call(Attention(), 8)
    >>> args[0].shape
    torch.Size([1, 8, 8])
"""

from __future__ import annotations

import copy
import inspect
import itertools
from typing import Any, Optional, Sequence

import torch
from torch import nn

from .fused_layouts import _first_tensor, _get, _ints, head_sizes

__all__ = ["probe_inputs", "capture_calls", "direct_call", "rotary_call", "two_stream_call", "enclosing_call"]


def _first_param(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    device, dtype = torch.device("cpu"), torch.float32
    for i, p in enumerate(model.parameters()):
        if i == 0:
            device = p.device
        if p.is_floating_point():
            return device, p.dtype
    return device, dtype


def _image_size(model: nn.Module, config: Any) -> Optional[tuple[int, int]]:
    for value in (_get(model, "img_size"), _get(_get(model, "patch_embed"), "img_size"), _get(config, "image_size"),
                  _get(_get(config, "vision_config"), "image_size")):
        if isinstance(value, int) and value > 0:
            return value, value
        if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
            return int(value[0]), int(value[1])
    cfg = _get(model, "pretrained_cfg") or _get(model, "default_cfg")
    size = _get(cfg, "input_size")
    if isinstance(size, (tuple, list)) and len(size) == 3:
        return int(size[1]), int(size[2])
    return None


#: image sides tried, in turn, after the size a vision model states, when its forward pass refuses that size (a timm
#: model built at another ``img_size`` keeps no record of it)
_OTHER_SIDES = (64, 96, 128, 32, 256, 384)


def probe_inputs(model: nn.Module, side: Optional[int] = None) -> Optional[tuple[tuple, dict]]:
    """A small input for ``model`` built from its signature and config (token ids for a language model, an image
    for a vision model, a noisy sample and a timestep for a diffusers denoiser), or None when none can be built.
    ``side`` replaces the image size the model states (see :func:`capture_calls`)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    names = set(params)
    config = _get(model, "config")
    sources = [config, _get(config, "text_config")] if config is not None else []
    device, dtype = _first_param(model)
    gen = torch.Generator().manual_seed(0)
    if "input_ids" in names:
        vocab = next(iter(_ints(sources, ("vocab_size",))), None)
        if vocab is None:
            return None
        ids = torch.randint(min(3, vocab - 1), vocab, (1, 8), generator=gen).to(device)
        kwargs: dict = {"input_ids": ids}
        if "attention_mask" in names:
            kwargs["attention_mask"] = torch.ones_like(ids)
        if "decoder_input_ids" in names and _get(config, "is_encoder_decoder"):
            kwargs["decoder_input_ids"] = ids
        if "use_cache" in names:
            kwargs["use_cache"] = False
        return (), kwargs
    if "sample" in names and "timestep" in names and config is not None:  # diffusers UNets
        size = _get(config, "sample_size") or 16
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        channels = _get(config, "in_channels") or 4
        kwargs = {"sample": torch.randn(1, channels, height, width, generator=gen).to(device, dtype),
                  "timestep": torch.tensor([10], device=device)}
        cross = _get(config, "cross_attention_dim")
        cross = cross[0] if isinstance(cross, (tuple, list)) else cross
        if "encoder_hidden_states" in names and isinstance(cross, int):
            kwargs["encoder_hidden_states"] = torch.randn(1, 4, cross, generator=gen).to(device, dtype)
        if "class_labels" in names and (_get(config, "num_class_embeds") or _get(config, "class_embed_type")):
            kwargs["class_labels"] = torch.tensor([0], device=device)
        return (), kwargs
    if "pixel_values" in names:
        size = (side, side) if side else _image_size(model, config)
        channels = next(iter(_ints([config, _get(config, "vision_config")], ("num_channels",))), 3)
        if size is None:
            return None
        return (), {"pixel_values": torch.randn(1, channels, *size, generator=gen).to(device, dtype)}
    positional = [p for p in params.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    size = (side, side) if side else _image_size(model, config)
    if len(positional) == 1 and size is not None:  # timm and other image models: forward(x)
        cfg = _get(model, "pretrained_cfg") or _get(model, "default_cfg")
        channels = (_get(cfg, "input_size") or (3,))[0]
        return (torch.randn(1, channels, *size, generator=gen).to(device, dtype),), {}
    return None


class _Captured(Exception):
    """Raised from a pre-hook to stop the probe forward pass once every wanted call is captured."""


def capture_calls(model: nn.Module, modules: Sequence[nn.Module]) -> tuple[dict[int, tuple[tuple, dict]], str]:
    """Run ``model`` on :func:`probe_inputs` (eval mode, no gradients, stopped as soon as it can) and keep the
    arguments of the first call of each of ``modules`` that runs through: ``({id(module): (args, kwargs)}, why some
    are missing)``. Where the pass fails on an image, other sizes are tried (``_OTHER_SIDES``). The model's
    train/eval flags are restored; its weights are not touched."""
    inputs = probe_inputs(model)
    if inputs is None:
        return {}, f"no probe input could be built for {type(model).__name__}"
    image = any(isinstance(a, torch.Tensor) and a.dim() == 4 for a in (*inputs[0], *inputs[1].values()))
    calls: dict[int, tuple[tuple, dict]] = {}
    reason = ""
    for side in (None, *_OTHER_SIDES) if image else (None,):
        inputs = probe_inputs(model, side) if side else inputs
        if inputs is None:
            break
        calls, failed = _call_until(model, modules, *inputs)
        if not failed:
            reason = ""
            break
        calls = {}  # the probe input did not suit the model: another size, else left unchecked
        reason = reason or f"the probe forward pass failed ({failed})"
    if not {id(m) for m in modules} <= set(calls) and not reason:
        reason = "the attention module was not called by the probe forward pass"
    return calls, reason


def direct_call(attention: nn.Module, width: int, conv: bool = False) -> Optional[tuple[tuple, dict]]:
    """Arguments for calling ``attention`` on its own, where the model's probe pass did not reach it (a vision
    tower behind token ids, a denoiser whose inputs cannot be guessed): a random ``(1, 8, width)`` sequence, then
    ``(1, 4, 4, width)`` channels-last, or ``(1, width, 4, 4)`` for a convolutional projection; the first that runs
    and gives a finite tensor, or None. The layout check then runs on that call like on a captured one."""
    device, dtype = _first_param(attention)
    gen = torch.Generator().manual_seed(0)
    shapes = [(1, width, 4, 4), (1, width, 8)] if conv else [(1, 8, width), (1, 4, 4, width)]
    probe = copy.deepcopy(attention).float()
    probe.eval()
    for shape in shapes:
        x = torch.randn(*shape, generator=gen).to(device)
        try:
            with torch.no_grad():
                out = _first_tensor(probe(x))
        except Exception:  # this shape or signature does not suit the module
            continue
        if out is not None and out.is_floating_point() and out.dim() >= 3 and torch.isfinite(out).all():
            return (x.to(dtype),), {}
    return None


#: names of a rotary-position argument an attention may require: angles, or a (cos, sin) pair
_ROTARY_ARGS = ("rope", "rotary_emb", "rotary_pos_emb", "rotary_embeddings", "freqs_cis", "freqs",
                "image_rotary_emb", "position_embeddings", "pos_emb")


def rotary_call(attention: nn.Module, model: nn.Module, width: int) -> Optional[tuple[tuple, dict]]:
    """Arguments for calling on its own an attention whose only other required argument is a rotary position
    (StableAudio 3's ``forward(hidden_states, rope)``): a random ``(1, 8, width)`` sequence and a rotation by angle
    zero, the identity, in the shapes such attentions take (angles ``(L, d)`` or ``(1, L, d)``, a pair of ones and
    zeros as cos and sin), ``d`` a head dimension or its half (partial rotary). An identity rotation keeps the scores
    ``q.k``, so the layout check holds as without one. The first that runs and gives a finite tensor whose positions
    differ (a rotation read otherwise, complex numbers multiplied by zero, would blank the scores), or None."""
    required = _required_rotary(attention)
    if required is None:
        return None
    device, dtype = _first_param(attention)
    x = torch.randn(1, 8, width, generator=torch.Generator().manual_seed(0)).to(device)
    probe = copy.deepcopy(attention).float()
    probe.eval()
    for rotation in _identity_rotations(8, _rotary_dims(attention, model, width), device):
        try:
            with torch.no_grad():
                out = _first_tensor(probe(x, **{required: rotation}))
        except Exception:  # this shape does not suit the attention
            continue
        if (out is not None and out.is_floating_point() and out.dim() >= 3 and torch.isfinite(out).all()
                and not torch.allclose(out, out[:, :1].expand_as(out))):
            rotation = tuple(r.to(dtype) for r in rotation) if isinstance(rotation, tuple) else rotation.to(dtype)
            return (x.to(dtype),), {required: rotation}
    return None


def _required_rotary(attention: nn.Module) -> Optional[str]:
    """The name of the rotary argument ``attention.forward`` requires besides its input, or None where it requires
    anything else (or nothing else)."""
    try:
        params = list(inspect.signature(attention.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    required = [p for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if len(required) != 2 or required[1].name not in _ROTARY_ARGS:
        return None
    return required[1].name


def _rotary_dims(attention: nn.Module, model: nn.Module, width: int) -> list[int]:
    """Widths a rotation may span: the head dimensions read or derived from the heads, and their halves."""
    heads, _, head_dims = head_sizes(attention, model)
    dims = list(head_dims) + [width // h for h in heads if width % h == 0]
    dims += [d // 2 for d in dims]
    return [d for d in dict.fromkeys(dims) if d > 0 and d % 2 == 0]


def _identity_rotations(length: int, dims: Sequence[int], device: torch.device):
    """Rotations by angle zero over ``length`` positions: angles, then (cos, sin) pairs, in 2-D and 3-D."""
    for d in dims:
        for shape in ((length, d), (1, length, d)):
            yield torch.zeros(*shape, device=device)
        for shape in ((length, d), (1, length, d)):
            yield torch.ones(*shape, device=device), torch.zeros(*shape, device=device)


def two_stream_call(attention: nn.Module, width: int, others: Sequence[int]) -> Optional[tuple[tuple, dict]]:
    """Arguments for calling on its own an attention that needs a second sequence (a cross-attention's context,
    the text stream of joint attention, a perceiver's latents): random ``(1, 8, width)`` and ``(1, 8, other)``
    sequences (``width`` first), both among the input widths of its projections (``others``); the first pair that
    runs and gives a finite tensor, or None."""
    device, dtype = _first_param(attention)
    gen = torch.Generator().manual_seed(0)
    probe = copy.deepcopy(attention).float()
    probe.eval()
    widths = list(dict.fromkeys((width, *others)))[:4]
    for first, other in itertools.product(widths, widths):
        x, y = torch.randn(1, 8, first, generator=gen).to(device), torch.randn(1, 8, other, generator=gen).to(device)
        try:
            with torch.no_grad():
                out = _first_tensor(probe(x, y))
        except Exception:  # this pair of widths or the signature does not suit the module
            continue
        if out is not None and out.is_floating_point() and out.dim() >= 3 and torch.isfinite(out).all():
            return (x.to(dtype), y.to(dtype)), {}
    return None


def enclosing_call(model: nn.Module, path: str, limit: int = 3) -> Optional[tuple[tuple, dict]]:
    """The arguments the attention at ``path`` receives when the nearest module around it that runs on a random
    ``(1, 8, width)`` sequence is called (a Conformer encoder that computes its attention's relative distances
    itself, where neither the model's probe pass nor the attention alone can run); ``width`` is tried among the
    input widths of the enclosing module's first layers. None where no enclosing module (below the model) runs."""
    attention = model.get_submodule(path)
    parts = path.split(".")
    device, dtype = _first_param(attention)
    for depth in range(len(parts) - 1, 0, -1):
        outer = model.get_submodule(".".join(parts[:depth]))
        if isinstance(outer, (nn.ModuleList, nn.ModuleDict, nn.Sequential)):
            continue
        widths: list[int] = []
        for module in outer.modules():
            if isinstance(module, nn.Linear) and module.in_features not in widths:
                widths.append(module.in_features)
            if len(widths) >= limit:
                break
        for width in widths:
            x = torch.randn(1, 8, width, generator=torch.Generator().manual_seed(0)).to(device, dtype)
            calls, _ = _call_until(outer, [attention], (x,), {})
            if id(attention) in calls:
                return calls[id(attention)]
    return None


def _call_until(outer: nn.Module, modules: Sequence[nn.Module], args: tuple,
                kwargs: dict) -> tuple[dict[int, tuple[tuple, dict]], str]:
    """Call ``outer`` (eval mode, no gradients) and keep the arguments of the first call of each of ``modules`` that
    runs through, stopping as soon as all are kept; ``outer``'s train/eval flags are restored."""
    wanted = {id(m) for m in modules}
    calls: dict[int, tuple[tuple, dict]] = {}
    started: dict[int, tuple[tuple, dict]] = {}

    def pre_hook(module, a, kw):
        started.setdefault(id(module), (a, dict(kw)))

    def hook(module, a, output):  # kept once the module has run on them (an image of the wrong size may not)
        if id(module) in started:
            calls.setdefault(id(module), started[id(module)])
        if wanted <= set(calls):
            raise _Captured

    handles = [m.register_forward_pre_hook(pre_hook, with_kwargs=True) for m in modules]
    handles += [m.register_forward_hook(hook) for m in modules]
    modes = [(m, m.training) for m in outer.modules()]
    reason = ""
    try:
        outer.eval()
        with torch.no_grad():
            outer(*args, **kwargs)
    except _Captured:
        pass
    except Exception as exc:  # the input did not suit the module
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes:
            module.training = mode
    return calls, reason
