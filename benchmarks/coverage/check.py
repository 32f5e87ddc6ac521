"""The check every model of the coverage sweep gets: injected with the default ``VectorFitConfig()`` (no module
names: a declared family, else inferred roles), then

- **roles**: every role of the family (its declared or inferred roles, fused ones included) is found among the
  decomposed vectors, and the roles the model's structure shows (:func:`structure`: q, k, v, o where it has attention
  modules, f1, f2 where it has MLPs) are there too;
- **exact**: the output at initialisation equals the base model's within ``1e-4`` of the output's scale
  (``max |out - base| / max |base|``, float32);
- **gradients**: a backward pass from the output reaches the singular values of every decomposed matrix whose base
  weight gets a gradient from that output before injection (a layer the output does not depend on cannot pass one;
  experts the router did not pick are exempt).

:func:`check` returns a record: ``status`` is ``recognised`` (all of it holds), ``partial`` (a family was found and is
exact, but roles the structure shows are missing, or a fused projection is decomposed whole), ``failed`` (an
exception, or not exact, or gradients missing), ``no-blocks`` (the model has neither attention nor MLP modules and
gets vf-core's clear ``UnknownFamilyError``), or ``skipped`` (could not be built or run, before any VectorFit code).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import torch
from torch import nn
from vf_core import UnknownFamilyError, VectorFitConfig, get_vectorfit_model
from vf_core.testing.contract import output_tensor, relative_error

ATOL = 1e-4

_ATTENTION = re.compile(r"attention|attn|multihead|selfatt|crossatt", re.I)
_MLP_WORDS = re.compile(r"mlp|feedforward|feed_forward|ffn|intermediate|densereludense|denseactdense|densegated|"
                        r"experts?$|moe|swiglu|geglu|fusedmlp|convmlp|glu$", re.I)
#: "FF" as a word of a class name (T5LayerFF, FFBlock, ff_layer), not two letters inside one (EfficientViT, Diffusion)
_FF_WORD = re.compile(r"(^|[a-z0-9_])FF($|[A-Z0-9_])|(^|_)ff($|_)")


def _says_mlp(name: str) -> bool:
    """Whether a class name says MLP, feed-forward or experts."""
    return bool(_MLP_WORDS.search(name) or _FF_WORD.search(name))


def _matrices(module: nn.Module) -> int:
    """Weight matrices in ``module``'s subtree: layers with a 2-D weight (linear layers, GPT-2's Conv1D, custom
    linear classes such as I-BERT's QuantLinear; not embeddings), 1x1 convolutions, 3-D expert parameters and bare
    2-D projection weights (``nn.MultiheadAttention``'s ``in_proj_weight``)."""
    count = 0
    for m in module.modules():
        name = type(m).__name__
        weight = m._parameters.get("weight")
        if weight is not None and next(m.children(), None) is None:
            if weight.dim() == 2 and not re.search(r"embed|norm", name, re.I):
                count += 1
            elif weight.dim() > 2 and "conv" in name.lower() and all(s == 1 for s in weight.shape[2:]):
                count += 1
        count += sum(1 for n, p in m._parameters.items() if p is not None and n != "weight" and p.dim() == 3)
        count += sum(1 for n, p in m._parameters.items() if p is not None and p.dim() == 2 and "proj" in n)
    return count


def _channel_gate(module: nn.Module) -> bool:
    """Whether ``module``'s only matrices are a squeeze-excitation bottleneck: two 1x1 convolutions or linear layers,
    the first reducing the channels, the second restoring them (or a multiple of them). ResNeSt's ``SplitAttn`` and
    SKNet's ``SelectiveKernelAttn`` are named attention but are channel gates of a CNN, not attention over
    positions."""
    mats = [m.weight.shape for m in module.modules() if next(m.children(), None) is None
            and isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() >= 2
            and all(s == 1 for s in m.weight.shape[2:]) and not re.search(r"embed|norm", type(m).__name__, re.I)]
    if len(mats) != 2:
        return False
    (a_out, a_in, *_), (b_out, b_in, *_) = mats
    return a_out < a_in and b_in == a_out and b_out >= a_in and b_out % a_in == 0


def structure(model: nn.Module) -> dict[str, bool]:
    """Whether the model has attention modules and MLP modules, from its module class names (a class whose name
    says attention, or MLP/feed-forward/experts, holding at least two weight matrices; an "attention" that is only a
    channel gate, :func:`_channel_gate`, does not count), not from vf-core."""
    attention = mlp = False
    for m in model.modules():
        name = type(m).__name__
        if not (attention and mlp) and (_ATTENTION.search(name) or _says_mlp(name)):
            if _ATTENTION.search(name) and _channel_gate(m):
                continue
            if _matrices(m) >= 2:
                attention = attention or bool(_ATTENTION.search(name))
                mlp = mlp or bool(_says_mlp(name)) and not _ATTENTION.search(name)
    return {"attention": attention, "mlp": mlp}


def _base_gradients(model: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, dict[str, bool]]:
    """The base model's output, and whether it gives each weight a non-zero gradient, by module name (and by full
    name for 3-D expert parameters); the gradients are cleared again."""
    params = dict(model.named_parameters())
    for p in params.values():
        p.grad = None
    with torch.enable_grad():
        output = output_tensor(model(*args, **kwargs)).float()
        base = output.detach().clone()
        output.pow(2).mean().backward()
    out: dict[str, Any] = {}
    modules = dict(model.named_modules())
    for name, p in params.items():
        hit = p.grad is not None and bool(p.grad.abs().sum() > 0)
        owner, _, attr = name.rpartition(".")
        if attr == "weight":
            out[owner] = hit
            if hit and p.dim() >= 2:  # which output rows got a gradient (GPT-2's Conv1D stores them as columns)
                transposed = type(modules.get(owner)).__name__ == "Conv1D"
                grad = p.grad.t() if transposed else p.grad.flatten(1)
                out[owner + "#rows"] = grad.abs().sum(dim=1) > 0
        elif p.dim() == 3:
            out[name] = hit
        p.grad = None
    return base, out


def _short(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _part_reached(vf, v, reached: dict[str, Any]) -> bool:
    """For a slice of a fused projection (``to_kv.k``): whether its own rows of the base weight got a gradient (the
    keys of a cross-attention over a single context token do not), by the slices' rows; True otherwise."""
    rows = reached.get(v.module + "#rows")
    layer = vf.decomposed_layers().get(v.module)
    parts = getattr(layer, "parts", None)
    if rows is None or parts is None or len(parts) < 2:
        return True
    key = v.name[len(v.module) + 1:].split(".")[0]
    if key not in parts:
        return True
    start = 0
    for name, part in parts.items():
        count = int(part.dense_weight().shape[0])
        if name == key:
            break
        start += count
    inverse = getattr(layer, "row_inverse", None)
    order = torch.argsort(inverse) if inverse is not None else torch.arange(rows.numel())
    return bool(rows[order[start:start + count].to(rows.device)].any())


def check(model: nn.Module, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Inject ``model`` with the default config and check roles, exactness and gradients (see the module doc)."""
    record: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters())}
    record.update(structure(model))
    base, reached = _base_gradients(model, args, kwargs)
    if not torch.isfinite(base).all():
        raise ValueError("the base model's output is not finite on this input")
    try:
        vf = get_vectorfit_model(model, VectorFitConfig())
    except UnknownFamilyError as exc:
        has = record["attention"] or record["mlp"]
        record.update(status="failed" if has else "no-blocks", reason=_short(str(exc)), error=type(exc).__name__)
        return record
    except Exception as exc:
        record.update(status="failed", reason=_short(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
                                                     if str(exc).strip() else type(exc).__name__),
                      error=type(exc).__name__)
        return record
    family = vf.family
    roles_found = {v.role for v in vf.vectors if v.role}
    record.update(
        origin=family.origin, family=family.name, notes=_short(family.notes or "", 600),
        roles=[r for r in ("q", "k", "v", "o", "f1", "f2") if r in roles_found],
        matrices=len(vf.decomposed_layers()),
        # a fused projection decomposed whole because its layout is not known (multi-head latent attention's shared
        # latent is whole by nature)
        whole=sorted({"+".join(fm.roles) for fm in family.fused.values() if fm.whole and "latent" not in fm.note}),
    )
    expected = set(family.declared_roles)
    if record["attention"]:
        expected |= {"q", "k", "v", "o"}
    if record["mlp"]:
        expected |= {"f1", "f2"}
    missing = [r for r in ("q", "k", "v", "o", "f1", "f2") if r in expected - roles_found]
    record["missing"] = missing
    try:
        with torch.no_grad():
            out = output_tensor(vf(*args, **kwargs)).detach().float()
        error = relative_error(out, base)
        record["error"] = error if error == error else float("nan")
        exact = error <= ATOL
        vf.eval()
        with torch.enable_grad():
            loss = output_tensor(vf(*args, **kwargs)).float().pow(2).mean()
            loss.backward()
    except Exception as exc:
        record.update(status="failed", reason=_short(f"after injection: {type(exc).__name__}: "
                                                     f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"))
        return record
    sigma = list(vf.vectors.select(kind="sigma"))
    # a matrix whose base weight gets no gradient from this output (a layer the output does not depend on)
    # cannot pass one to its singular values either
    used = [v for v in sigma if reached.get(v.module, reached.get(v.name.split("[")[0], True))
            and _part_reached(vf, v, reached)]
    no_grad = [v.name for v in used if v.expert is None
               and (v.parameter.grad is None or not bool(v.parameter.grad.abs().sum() > 0))]
    record.update(sigma_vectors=len(sigma), unused=len(sigma) - len(used), no_grad=len(no_grad))
    reasons = []
    if not exact:
        reasons.append(f"not exact at initialisation (relative error {error:.2e} > {ATOL:g})")
    if no_grad:
        reasons.append(f"no gradient reaches {len(no_grad)} of {len(used)} singular-value vectors whose base weight"
                       f" gets one (e.g. {no_grad[0]})")
    if not sigma:
        reasons.append("no singular-value vector")
    if reasons:
        record.update(status="failed", reason="; ".join(reasons))
    elif missing or record["whole"]:
        parts = []
        if missing:
            parts.append(f"role(s) {', '.join(missing)} missing")
        if record["whole"]:
            parts.append(f"{', '.join(record['whole'])} decomposed whole")
        record.update(status="partial", reason="; ".join(parts))
    else:
        record.update(status="recognised")
    return record


def role_summary(record: dict) -> str:
    roles = ", ".join(record.get("roles") or []) or "none"
    return f"{record.get('origin', '?')} {record.get('family', '')} ({roles})"


def counts(records: list[dict]) -> Counter:
    return Counter(r["status"] for r in records)
