"""Mixture-of-experts weights held as one 3-D parameter: how to declare, recognise and read them.

transformers 5 keeps the experts of Mixtral, Qwen2-MoE / Qwen3-MoE, OLMoE, DeepSeek, gpt-oss and others in one
module holding 3-D parameters: ``mlp.experts.gate_up_proj`` of shape ``(experts, 2 * intermediate, hidden)`` and
``mlp.experts.down_proj`` of shape ``(experts, hidden, intermediate)``, or transposed, ``(experts, in, out)``
(gpt-oss, Aria, Llama 4). VectorFit decomposes each expert's matrix on its own, ``W_e = U_e diag(s_e) V_e^T``
(:class:`vf_core.layers.DecomposedExperts`), so every expert gets its own singular-value vector (and bias vector,
where the experts module has biases), named with the expert index: ``...experts.gate_up_proj[3].gate.sigma``.

Choice: a fused ``gate_up_proj`` is split into its two halves, ``gate`` and ``up``, each decomposed on its own and
each playing ``f1``: exactly what the same expert gets when it is held as separate ``gate_proj`` / ``up_proj``
linears (the gated-MLP convention of the declared families). The halves follow each other (``[gate; up]``) or
alternate row by row (gpt-oss's interleaved layout); :class:`ExpertParam` says which, or it is read from the
experts module (transformers' ``is_concatenated`` / ``is_transposed`` attributes). ``ExpertParam(halves=())``
decomposes each expert's whole matrix as one vector instead.

How such a parameter is targeted:

- a family lists it in :attr:`vf_core.families.Family.expert_params`, by its path relative to the block:
  ``{"mlp.experts.gate_up_proj": "f1", "mlp.experts.down_proj": "f2"}``;
- or the user names it in ``target_modules`` (full name or ``.``-suffix: ``["gate_up_proj", "down_proj"]``; a
  regex matches the full parameter name; naming the experts module itself, ``["experts"]``, targets its 3-D
  parameters);
- :func:`find_expert_params` recognises them structurally (3-D, first dimension = the number of experts in the
  config, role guessed from the name), for code that infers a family.

Routers (``mlp.gate``: a 2-D ``(experts, hidden)`` weight) are never expert parameters and stay untouched.

Example:
    >>> import torch
    >>> from vf_core.experts import find_expert_params
    >>> experts = torch.nn.Module()
    >>> experts.gate_up_proj = torch.nn.Parameter(torch.randn(4, 16, 8))
    >>> experts.down_proj = torch.nn.Parameter(torch.randn(4, 8, 8))
    >>> find_expert_params(experts, num_experts=4)
    {'gate_up_proj': 'f1', 'down_proj': 'f2'}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional, Union

from torch import nn

from .errors import TargetError
from .roles import ROLES

__all__ = ["ExpertParam", "ExpertLayout", "expert_count", "find_expert_params", "guess_expert_role",
           "expert_index", "is_expert_shaped", "EXPERT_COUNT_FIELDS"]

#: config fields that hold the number of routed experts, in the order they are read
EXPERT_COUNT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts",
                       "num_routed_experts")

_F1_WORDS = {"up", "gate", "w1", "w3", "wi", "fc1", "input"}
_F2_WORDS = {"down", "w2", "wo", "fc2", "output"}
# separate linear experts: ``experts.3.w1``, ``experts.expert_3.wi`` (Switch Transformers)
_EXPERT_IN_NAME = re.compile(r"(?:^|\.)experts\.(?:expert_)?(\d+)(?:\.|$)")


def expert_count(model_or_config: Any) -> Optional[int]:
    """The number of routed experts in a model's config (or a config), or None when it names none."""
    config = getattr(model_or_config, "config", model_or_config)
    for cfg in (config, getattr(config, "text_config", None), getattr(config, "ffn_config", None)):
        if cfg is None:
            continue
        for field in EXPERT_COUNT_FIELDS:
            value = getattr(cfg, field, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 1:
                return value
    return None


def guess_expert_role(name: str) -> Optional[str]:
    """``f1`` (up, gate, gate_up, w1, w3, input...) or ``f2`` (down, w2, output...) from a parameter's name (its
    last two ``.``-segments), or None."""
    words = set(re.split(r"[._]", ".".join(name.split(".")[-2:]).lower()))
    if words & _F2_WORDS:
        return "f2"
    if words & _F1_WORDS:
        return "f1"
    return None


def expert_index(name: str) -> Optional[int]:
    """The expert index in a module name of separate linear experts (``...experts.3.w1`` -> 3), or None."""
    m = _EXPERT_IN_NAME.search(name)
    return int(m.group(1)) if m else None


def is_expert_shaped(param: Any, num_experts: Optional[int] = None) -> bool:
    """A 3-D parameter with at least two matrices (exactly ``num_experts`` of them when that is known)."""
    if not isinstance(param, nn.Parameter) or param.ndim != 3 or param.shape[0] < 2:
        return False
    return num_experts is None or param.shape[0] == num_experts


def find_expert_params(model: nn.Module, num_experts: Optional[int] = None) -> dict[str, Optional[str]]:
    """The 3-D parameters of ``model`` that hold one matrix per expert, by full name, with the role their name
    suggests (:func:`guess_expert_role`; None when it suggests none), in model order.

    A parameter qualifies when it is 3-D and its first dimension is the number of experts (``num_experts``, else
    read from ``model.config``: :data:`EXPERT_COUNT_FIELDS`); when no count is known, when it has at least two
    matrices and lies under a module whose name says ``expert``. Routers (2-D) never qualify.
    """
    count = num_experts if num_experts is not None else expert_count(model)
    found: dict[str, Optional[str]] = {}
    for mname, module in model.named_modules():
        for attr, param in module._parameters.items():
            full = f"{mname}.{attr}" if mname else attr
            if full in found or not is_expert_shaped(param, count):
                continue
            if count is None and "expert" not in full.lower():
                continue
            found[full] = guess_expert_role(full)
    return found


@dataclass(frozen=True)
class ExpertLayout:
    """How one 3-D expert parameter is stored, resolved against the module that holds it.

    Attributes:
        attr: the parameter's attribute name on its module (``"gate_up_proj"``).
        role: the role of every expert's matrix (``f1``, ``f2``...) or None.
        experts: the number of experts (the first dimension).
        d_out, d_in: each expert's matrix is ``(d_out, d_in)`` (``y = W_e x``).
        transposed: stored ``(experts, d_in, d_out)`` (``y = x @ W[e]``) instead of ``(experts, d_out, d_in)``.
        halves: names of the row blocks each expert's matrix stacks (``("gate", "up")``), each decomposed on its
            own; ``()``: the whole matrix is one.
        interleaved: the halves alternate row by row (``gate0, up0, gate1, ...``) instead of following each other.
        bias: the attribute name of the ``(experts, d_out)`` bias parameter that goes with it, or None.
    """

    attr: str
    role: Optional[str]
    experts: int
    d_out: int
    d_in: int
    transposed: bool = False
    halves: tuple[str, ...] = ()
    interleaved: bool = False
    bias: Optional[str] = None

    @property
    def rows_per_half(self) -> int:
        return self.d_out // max(len(self.halves), 1)


def _hidden_size(owner: nn.Module, hidden_size: Optional[int]) -> Optional[int]:
    for attr in ("hidden_size", "hidden_dim"):
        value = getattr(owner, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return hidden_size


@dataclass(frozen=True)
class ExpertParam:
    """A declaration of a 3-D expert parameter; what is left None is read from the module that holds it.

    Args:
        role: the role of every expert's matrix (``"f1"`` for up / gate / gate_up, ``"f2"`` for down).
        transposed: stored ``(experts, in, out)``. None: the module's ``is_transposed`` attribute (set by
            transformers on its experts modules); without one, the shape against the hidden size (the input of an
            ``f1`` matrix, the output of an ``f2`` one); else False.
        halves: the row blocks each expert's matrix stacks, each decomposed on its own. None: ``("gate", "up")``
            for a parameter whose name holds ``gate_up``, else ``()`` (the whole matrix).
        interleaved: the halves alternate row by row. None: ``not module.is_concatenated`` where the module says,
            else False.
        bias: the name of the ``(experts, out)`` bias parameter, or False for none. None: ``<attr>_bias`` when the
            module has such a parameter of that shape.

    Example:
        >>> ExpertParam("f1", transposed=True, interleaved=True).role   # gpt-oss's gate_up_proj
        'f1'
    """

    role: Optional[str] = None
    transposed: Optional[bool] = None
    halves: Optional[tuple[str, ...]] = None
    interleaved: Optional[bool] = None
    bias: Union[None, bool, str] = None

    def __post_init__(self) -> None:
        if self.role is not None and self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r} for an expert parameter; roles are {', '.join(ROLES)}")

    def resolve(self, owner: nn.Module, attr: str, name: str, hidden_size: Optional[int] = None) -> ExpertLayout:
        """The :class:`ExpertLayout` of ``owner.<attr>`` (full name ``name``, for messages); raises
        :class:`~vf_core.errors.TargetError` when the parameter is not a 3-D tensor or does not split as declared."""
        param = owner._parameters.get(attr)
        if param is None or param.ndim != 3:
            shape = None if param is None else tuple(param.shape)
            raise TargetError(f"{name!r} is not a 3-D expert parameter (experts, out, in) (found shape {shape});"
                              " leave it out of target_modules / expert_params")
        experts, a, b = (int(n) for n in param.shape)
        transposed = self.transposed
        if transposed is None:
            flag = getattr(owner, "is_transposed", None)
            transposed = flag if isinstance(flag, bool) else self._transposed_by_shape(a, b, owner, hidden_size)
        d_out, d_in = (b, a) if transposed else (a, b)
        halves = self.halves
        if halves is None:
            halves = ("gate", "up") if "gate_up" in attr.lower() and d_out % 2 == 0 else ()
        halves = tuple(halves)
        if halves and (len(set(halves)) != len(halves) or d_out % len(halves)):
            raise TargetError(f"{name!r}: {d_out} output rows per expert do not split into halves {list(halves)}")
        interleaved = self.interleaved
        if interleaved is None:
            concatenated = getattr(owner, "is_concatenated", None)
            interleaved = (not concatenated) if isinstance(concatenated, bool) else False
        return ExpertLayout(attr, self.role, experts, d_out, d_in, bool(transposed), halves,
                            bool(interleaved and halves), self._bias(owner, attr, name, experts, d_out))

    def _transposed_by_shape(self, a: int, b: int, owner: nn.Module, hidden_size: Optional[int]) -> bool:
        hidden = _hidden_size(owner, hidden_size)
        if hidden is None or a == b:
            return False
        if self.role == "f2":  # the output is the hidden size
            return b == hidden and a != hidden
        return a == hidden and b != hidden  # f1 (or unknown): the input is the hidden size

    def _bias(self, owner: nn.Module, attr: str, name: str, experts: int, d_out: int) -> Optional[str]:
        if self.bias is False:
            return None
        bias_attr = f"{attr}_bias" if self.bias in (None, True) else str(self.bias)
        bias = owner._parameters.get(bias_attr)
        fits = bias is not None and tuple(bias.shape) == (experts, d_out)
        if self.bias in (None,) and not fits:
            return None
        if not fits:
            raise TargetError(f"{name!r}: the declared bias {bias_attr!r} is not an ({experts}, {d_out}) parameter"
                              f" of {type(owner).__name__}")
        return bias_attr
