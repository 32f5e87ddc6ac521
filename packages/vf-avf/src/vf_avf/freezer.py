"""`VectorFreezer`: applies a freezing policy to a VectorFit model during training.

Paper: Hegde, Kaur, Tiwari, "VectorFit", https://arxiv.org/abs/2503.19530 (Adaptive Vector Freezing, method
spec section 1.2).

Call :meth:`VectorFreezer.step` after ``backward()`` and before ``optimizer.step()`` (and before gradient
clipping, so that frozen gradients do not count in the norm), with the number of optimizer steps already
taken. The freezer asks its policy for a decision, then sets the ``.grad`` of every frozen vector to
``None``: torch optimizers (SGD, Adam, AdamW, for-loop, ``foreach`` or ``fused``) skip such parameters
entirely, so a frozen vector gets no gradient step, no momentum and no weight decay, and its optimizer state
stays as it was. ``requires_grad`` is never touched, so DDP's gradient buckets and the autograd graph do not
change between steps.

Under ``torch.distributed`` with several ranks, each decision of rank 0 is broadcast to the others
(``sync_ranks=True``), so every rank freezes the same vectors even if their float arithmetic differed, or
their vectors' ``initial`` values did (DDP broadcasts rank 0's parameters, not the registry's copies of the
starting values; they agree whenever every rank loads the same pre-trained weights).

Example (the three-line pattern):
    >>> import torch
    >>> from vf_core import VectorFitConfig, get_vectorfit_model
    >>> from vf_avf import AVFConfig, VectorFreezer
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> vf = get_vectorfit_model(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)),
    ...                          VectorFitConfig(target_modules=["0", "1"]))
    >>> opt = torch.optim.AdamW([p for p in vf.parameters() if p.requires_grad], lr=1e-2)
    >>> freezer = VectorFreezer(vf, AVFConfig(policy="topk_ema", t_i=3, t_f=2, n_f=2, k=1))
    >>> for step in range(6):
    ...     vf(torch.randn(4, 8)).pow(2).mean().backward()
    ...     frozen = freezer.step(step)          # after backward, before optimizer.step
    ...     opt.step(); opt.zero_grad()
    >>> [record.step for record in freezer.history], len(freezer.frozen)
    ([3, 5], 1)
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from vf_core.errors import PluginError
from vf_core.vectors import TrainableVector, VectorRegistry

from .config import AVFConfig, resolve_config
from .errors import FreezerStateError
from .policies.base import Decision, FreezingPolicy
from .registry import get_policy
from .strength import strengths

__all__ = ["VectorFreezer", "AVFRecord", "registry_of", "STATE_FORMAT"]

#: the ``format`` tag of :meth:`VectorFreezer.state_dict`
STATE_FORMAT = "vf_avf.freezer/1"


@dataclass(frozen=True)
class AVFRecord:
    """One recorded decision: the step, the frozen names (registry order) and every vector's score.

    ``scores`` holds what the policy ranked by: the smoothed strength ``S'`` for ``topk_ema``, the strength
    ``S`` for ``random`` (and ``dropout`` with ``record_history``); it is empty when the policy gave none
    (``unfreeze_after_last``).
    """

    step: int
    frozen: tuple[str, ...]
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "frozen": list(self.frozen), "scores": dict(self.scores)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AVFRecord":
        return cls(int(data["step"]), tuple(data["frozen"]), {k: float(v) for k, v in data["scores"].items()})


def registry_of(model: Any) -> VectorRegistry:
    """The :class:`~vf_core.VectorRegistry` of a VectorFitModel (also inside DDP / accelerate wrappers), a
    registry, or an iterable of :class:`~vf_core.TrainableVector`."""
    if isinstance(model, VectorRegistry):
        return model
    seen = model
    for _ in range(4):  # DistributedDataParallel(...).module, torch.compile's _orig_mod, ...
        vectors = getattr(seen, "vectors", None) if not isinstance(seen, (list, tuple)) else None
        if isinstance(vectors, VectorRegistry):
            return vectors
        inner = getattr(seen, "module", None)
        seen = inner if inner is not None else getattr(seen, "_orig_mod", None)
        if seen is None:
            break
    if isinstance(model, (list, tuple)) and all(isinstance(v, TrainableVector) for v in model):
        return VectorRegistry(model)
    raise TypeError(f"expected a VectorFitModel (from vf_core.get_vectorfit_model, possibly wrapped in DDP), its"
                    f" .vectors registry, or a list of TrainableVector; got {type(model).__name__}. If you hold the"
                    f" base model only, pass the VectorFitModel that get_vectorfit_model returned.")


def _dist_world() -> Optional[Any]:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


class VectorFreezer:
    """Freezes VectorFit's trainable vectors step by step, as a freezing policy decides.

    Args:
        model: a :class:`~vf_core.VectorFitModel` (or DDP-wrapped), or its ``.vectors`` registry.
        config: an :class:`~vf_avf.AVFConfig` (any policy's), a mapping of its fields, or None for the
            paper's AVF with its defaults.
        total_steps: the run's number of optimizer steps; needed when the schedule is given in fractions.
        sync_ranks: under ``torch.distributed`` with several ranks, use rank 0's decision on every rank (one
            small broadcast per step, so :meth:`step` must be called on every rank).

    Attributes:
        vectors: the registry. policy: the :class:`~vf_avf.FreezingPolicy`. config: the resolved config.
        history: the recorded decisions, a list of :class:`AVFRecord` (each AVF step of scheduled policies).

    Example:
        >>> from vf_avf import AVFConfig
        >>> AVFConfig(t_i=0.5, t_f=0.1, n_f=3, k=2).t_i     # VectorFreezer(vf, cfg, total_steps=...) resolves it
        0.5
    """

    def __init__(self, model: Any, config: Union[AVFConfig, Mapping[str, Any], None] = None,
                 total_steps: Optional[int] = None, *, sync_ranks: bool = True) -> None:
        self.vectors = registry_of(model)
        self._source = model
        self.config = resolve_config(dict(config) if isinstance(config, Mapping) else config)
        self.total_steps = total_steps
        self.sync_ranks = sync_ranks
        record = get_policy(self.config.policy)
        self.policy: FreezingPolicy = record.factory(self.config, self.vectors, total_steps)
        if not isinstance(self.policy, FreezingPolicy):
            raise PluginError(f"freezing policy {record.name!r}: its factory returned {self.policy!r}, not a"
                              f" vf_avf.FreezingPolicy")
        self.history: list[AVFRecord] = []
        self.last_step: Optional[int] = None
        self._frozen: frozenset = frozenset()
        self._frozen_vectors: list[TrainableVector] = []

    # ------------------------------------------------------------------------------------------ stepping
    @property
    def frozen(self) -> frozenset:
        """The names of the vectors frozen now."""
        return self._frozen

    @property
    def trainable(self) -> list[str]:
        """The names of the vectors not frozen now, in registry order."""
        return [name for name in self.vectors.names() if name not in self._frozen]

    @property
    def avf_steps(self) -> tuple[int, ...]:
        """The policy's scheduled AVF steps (empty for per-step policies)."""
        return self.policy.avf_steps

    def step(self, global_step: int) -> frozenset:
        """Decide (once per step) and apply the frozen set; call after ``backward()``, before ``optimizer.step()``.

        :param global_step: optimizer steps already taken, 0 for the first. Calls must come in order, one
            per optimizer step; calling again with the same step only re-applies the frozen set.
        :return: the frozen names.
        """
        if not isinstance(global_step, int) or isinstance(global_step, bool) or global_step < 0:
            raise ValueError(f"global_step must be an int >= 0 (optimizer steps already taken), got {global_step!r}")
        last = self.last_step
        if last is not None and global_step < last:
            raise ValueError(f"global_step went back from {last} to {global_step}; to restart from a checkpoint, "
                             f"load the freezer state saved with it (VectorFreezer.load_state_dict)")
        registry_of(self._source)  # a VectorFitModel rebinds its vectors to parameters FSDP put in place
        if global_step != last:
            if last is not None and global_step > last + 1:
                skipped = [s for s in self.avf_steps if last < s < global_step]
                warnings.warn(f"VectorFreezer.step jumped from step {last} to {global_step}"
                              + (f"; the AVF steps {skipped} were missed" if skipped else "")
                              + ": call it once per optimizer step", stacklevel=2)
            decision = self.policy.decide(global_step, self.vectors, self._frozen)
            dist = _dist_world() if self.sync_ranks else None
            if dist is not None:
                decision = self._rank0_decision(dist, decision)
            if decision is not None:
                self._apply_decision(global_step, decision)
            self.last_step = global_step
        self.apply()
        return self._frozen

    def _apply_decision(self, step: int, decision: Decision) -> None:
        frozen = frozenset(decision.frozen)
        unknown = frozen.difference(self.vectors.names())
        if unknown:
            raise PluginError(f"freezing policy {self.config.policy!r} froze unknown vectors {sorted(unknown)[:5]}")
        self._frozen = frozen
        self._frozen_vectors = [v for v in self.vectors if v.name in frozen]
        if decision.record:
            order = tuple(name for name in self.vectors.names() if name in frozen)
            self.history.append(AVFRecord(step, order, dict(decision.scores or {})))

    def _rank0_decision(self, dist: Any, decision: Optional[Decision]) -> Optional[Decision]:
        """Rank 0's decision on every rank (one small broadcast per step; every rank must call ``step``)."""
        names = self.vectors.names()
        payload: list[Any] = [None]
        if dist.get_rank() == 0 and decision is not None:
            payload[0] = ([i for i, name in enumerate(names) if name in decision.frozen], decision.record)
        dist.broadcast_object_list(payload, src=0)
        if dist.get_rank() == 0:
            return decision
        if payload[0] is None:
            return None
        indices, record = payload[0]
        scores = decision.scores if decision is not None else None  # this rank's own view, for history
        return Decision(frozenset(names[i] for i in indices), scores=scores, record=record)

    def apply(self) -> None:
        """Drop the gradients of the frozen vectors (``.grad = None``) so the optimizer skips them."""
        for vec in self._frozen_vectors:
            vec.parameter.grad = None

    def strengths(self) -> dict[str, float]:
        """Every vector's current training strength ``S`` (mean absolute change from its initial value)."""
        return strengths(self.vectors)

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: the policy's state, the frozen set, ``history``, the last step.

        JSON-serialisable (:meth:`save` writes it as JSON; floats round-trip exactly).
        """
        return {
            "format": STATE_FORMAT,
            "policy": self.config.policy,
            "config": self.config.model_dump(mode="json"),
            "total_steps": self.total_steps,
            "vectors": [{"name": v.name, "layer": v.layer, "role": v.role, "kind": v.kind} for v in self.vectors],
            "last_step": self.last_step,
            "frozen": [name for name in self.vectors.names() if name in self._frozen],
            "history": [record.to_dict() for record in self.history],
            "policy_state": self.policy.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; the model and policy must be the ones it was taken from."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            found = state.get("format") if isinstance(state, Mapping) else type(state).__name__
            raise FreezerStateError(f"not a VectorFreezer state of format {STATE_FORMAT!r} (found {found!r})")
        if state["policy"] != self.config.policy:
            raise FreezerStateError(f"the saved state is of policy {state['policy']!r}, this freezer runs"
                                    f" {self.config.policy!r}; build the freezer with the config it was saved with")
        saved = [v["name"] for v in state["vectors"]]
        if saved != self.vectors.names():
            missing = sorted(set(saved) - set(self.vectors.names()))[:3]
            extra = sorted(set(self.vectors.names()) - set(saved))[:3]
            raise FreezerStateError(f"the saved state belongs to another set of vectors ({len(saved)} saved, "
                                    f"{len(self.vectors)} here; saved only: {missing}, here only: {extra})")
        current = self.config.model_dump(mode="json")
        saved_config = state["config"]
        changed = sorted(k for k in set(current) | set(saved_config) if current.get(k) != saved_config.get(k))
        if changed:
            diffs = ", ".join(f"{k}: {saved_config.get(k)!r} -> {current.get(k)!r}" for k in changed)
            warnings.warn(f"resuming a {self.config.policy!r} freezer whose config changed since it was saved: {diffs}",
                          stacklevel=2)
        self.policy.load_state_dict(state["policy_state"])
        self.last_step = state["last_step"]
        self._frozen = frozenset(state["frozen"])
        self._frozen_vectors = [v for v in self.vectors if v.name in self._frozen]
        self.history = [AVFRecord.from_dict(record) for record in state["history"]]

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write :meth:`state_dict` as JSON (atomically) and return the path."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.state_dict(), indent=1))
        os.replace(tmp, path)
        return path

    def load(self, path: Union[str, os.PathLike]) -> None:
        """Restore the state :meth:`save` wrote."""
        path = Path(path)
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise FreezerStateError(f"no freezer state at {path}") from None
        except json.JSONDecodeError as exc:
            raise FreezerStateError(f"the freezer state at {path} is not valid JSON: {exc}") from None
        self.load_state_dict(state)

    def __repr__(self) -> str:
        return (f"VectorFreezer(policy={self.config.policy!r}, vectors={len(self.vectors)}, frozen={len(self._frozen)},"
                f" last_step={self.last_step})")
