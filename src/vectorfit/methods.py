"""The fine-tuning methods the ``vectorfit`` command offers, applied the same way to every backend's models.

* ``vectorfit``, ``svfit``, ``svft``: this library (:func:`vf_core.get_vectorfit_model`); variants by option
  (``--roles q,k,v,o`` attention only, ``--no-bias`` sigma only, ``--svfit-rank``, ``--svft-pattern``...).
  Adaptive Vector Freezing (vf-avf) is on by default for ``vectorfit`` (``--no-avf`` turns it off).
* ``bitfit`` (Ben Zaken et al., https://arxiv.org/abs/2106.10199): every parameter named ``*.bias`` trains,
  plus the new head.
* ``full``: every parameter trains.
* ``lora`` / ``adalora`` (PEFT; https://arxiv.org/abs/2106.09685, https://arxiv.org/abs/2303.10512): on the
  same modules VectorFit decomposes (the family's ``q, k, v, o, f1, f2`` for ``--roles``), head trained in
  full. peft is imported only when one of them is asked for.

Every method's trainable count includes the head; ``total_params`` is the base model's size with its new head
(before any adapter), the same denominator for every method.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file
from vf_core.config import VectorFitConfig
from vf_core.errors import AdapterError, TargetError, VectorFitError
from vf_core.model import BIAS_LR_SCALE, VectorFitModel, get_vectorfit_model
from vf_core.parts import PART_TYPES
from vf_core.roles import ROLES
from vf_core.targets import identify_family, resolve_heads, resolve_targets

from .errors import CLIError
from .rundir import write_json

__all__ = ["METHODS", "VECTOR_METHODS", "PEFT_METHODS", "DEFAULT_LR", "DEFAULT_LR_SCALE", "MethodSpec", "Prepared", "apply_method",
           "restore_trained", "save_trained", "count_parameters", "default_avf", "family_targets", "resolve_avf",
           "adalora_update", "merged_module"]

#: vf-core's methods (one part class each, :data:`vf_core.parts.PART_TYPES`)
VECTOR_METHODS = tuple(PART_TYPES)
PEFT_METHODS = ("lora", "adalora")
METHODS = (*VECTOR_METHODS, "bitfit", "full", *PEFT_METHODS)

#: learning rate per method when ``--lr`` is not given: the winners of the quality benchmark's sweep
#: (benchmarks/quality/README.md: MiniLM on 2,000 Rotten Tomatoes snippets for 2 epochs, the same grid rule,
#: budget and two seeds for every method). Short runs want higher rates than the paper's 1e-3 over 20+ epochs.
DEFAULT_LR = {"vectorfit": 1e-2, "svfit": 4e-2, "svft": 2e-2, "bitfit": 5e-3, "full": 2e-4, "lora": 2e-3,
              "adalora": 5e-3}

#: learning rates of some kinds of vector as a share of ``--lr``, when ``--lr-<kind>`` is not given: VectorFit's
#: biases train at 0.3 times the rate of its singular values and head (the stall study, docs/method.md "Stalls")
DEFAULT_LR_SCALE = {"vectorfit": {"bias": BIAS_LR_SCALE}}

#: the default AVF schedule, in fractions of the run (the paper: t_i about 55% of training, t_f about one epoch
#: of 20, n_f 4-5, k 5): resolved against the number of optimizer steps once it is known
DEFAULT_AVF = {"policy": "topk_ema", "t_i": 0.5, "t_f": 0.1, "n_f": 4, "k": 5, "beta": 0.99}

BITFIT_FORMAT = "vectorfit-bitfit"
BITFIT_WEIGHTS = "bitfit_model.safetensors"
BITFIT_CONFIG = "adapter_config.json"


def default_avf() -> dict:
    return dict(DEFAULT_AVF)


def resolve_avf(avf: Optional[dict], total_steps: int) -> Optional[dict]:
    """AVF fields with fractions of the run turned into steps for a run of ``total_steps``; ``t_f`` is at least one
    step, so a very short run (a smoke test) still has a valid schedule (its late AVF steps simply never come)."""
    if avf is None:
        return None
    out = dict(avf)
    for key, minimum in (("t_i", 0), ("t_f", 1)):
        value = out.get(key)
        if isinstance(value, float):
            out[key] = max(minimum, int(round(value * total_steps)))
    return out


#: the VectorFitConfig fields every method reads: which modules to target (LoRA and AdaLoRA adapt the same ones)
#: and which are the new head trained in full
TARGETING_FIELDS = ("roles", "target_modules", "modules_to_save")

#: ``run.json`` written before the method's options became a VectorFitConfig dict: old field -> config field
_OLD_FIELDS = {"svfit_rank": "rank", "svfit_energy": "energy", "svft_pattern": "pattern",
               "svft_off_diagonals": "off_diagonals"}


@dataclass
class MethodSpec:
    """A method and its options, as stored in ``run.json``.

    ``config`` holds the :class:`~vf_core.VectorFitConfig` fields the command line set, under their
    VectorFitConfig names (never re-declared here): ``roles``, ``target_modules`` and ``modules_to_save`` for
    every method, and for vectorfit, svfit and svft their own (``train_bias``, ``sigma_parametrization``,
    ``rank`` or ``energy``, ``pattern`` and ``off_diagonals``); a field left out takes VectorFitConfig's
    default. The other fields belong to the baselines (LoRA, AdaLoRA) and to AVF.
    """

    name: str
    config: dict = field(default_factory=dict)
    lora_r: int = 8
    lora_alpha: Optional[float] = None
    lora_dropout: float = 0.0
    adalora_init_r: Optional[int] = None
    avf: Optional[dict] = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "MethodSpec":
        """Read ``run.json``'s ``method``, of this format or of the one before (options as flat fields such as
        ``svfit_rank``), so that ``vectorfit evaluate`` and ``plot`` keep working on old runs."""
        known = {f for f in cls.__dataclass_fields__}
        if "config" not in data:
            data = _from_flat(data)
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def is_vector(self) -> bool:
        return self.name in VECTOR_METHODS

    @property
    def is_peft(self) -> bool:
        """LoRA or AdaLoRA (a PEFT adapter)."""
        return self.name in PEFT_METHODS

    @property
    def roles(self) -> list[str]:
        return list(self.config.get("roles", ROLES))

    def label(self) -> str:
        """A short human label: ``vectorfit``, ``vectorfit (no AVF, sigma only)``, ``lora r=8``..."""
        c = self.config
        if self.name in VECTOR_METHODS:
            bits = []
            if self.name == "vectorfit":
                if self.avf is None:
                    bits.append("no AVF")
                if c.get("train_bias") is False:
                    bits.append("sigma only")
                if c.get("sigma_parametrization") == "relative":
                    bits.append("relative sigma")
                elif c.get("sigma_parametrization") == "absolute":
                    bits.append("absolute sigma")
            if self.name == "svfit":
                bits.append(f"r={c['rank']}" if c.get("rank") else
                            f"energy={c['energy']}" if c.get("energy") else "r=16")
            if self.name == "svft":
                bits.append(f"{c.get('pattern', 'banded')}, d={c.get('off_diagonals', 2)}")
            if self.roles != list(ROLES):
                bits.append("roles " + ",".join(self.roles))
            return self.name + (f" ({', '.join(bits)})" if bits else "")
        if self.name == "lora":
            return f"lora r={self.lora_r}"
        if self.name == "adalora":
            return f"adalora r={self.adalora_init_r or self.lora_r + self.lora_r // 2}->{self.lora_r}"
        return self.name

    def vectorfit_config(self) -> VectorFitConfig:
        """The adapter's configuration (vectorfit, svfit, svft)."""
        return VectorFitConfig(method=self.name, **self.config)

    def targeting_config(self) -> VectorFitConfig:
        """Only which modules are targeted and which are heads: what every method, baselines included, reads."""
        return VectorFitConfig(**{k: v for k, v in self.config.items() if k in TARGETING_FIELDS})


def _from_flat(data: dict) -> dict:
    """The ``MethodSpec`` fields of a ``run.json`` ``method`` written with flat options: only the options that
    the method used then (the old ``vectorfit_config()``) go into ``config``."""
    name = data["name"]
    config: dict[str, Any] = {"roles": list(data.get("roles") or ROLES)}
    if data.get("train_bias") is not None:
        config["train_bias"] = data["train_bias"]
    if name == "vectorfit" and data.get("sigma_parametrization") is not None:
        config["sigma_parametrization"] = data["sigma_parametrization"]
    if data.get("target_modules"):
        config["target_modules"] = data["target_modules"]
    if data.get("modules_to_save") is not None:
        config["modules_to_save"] = list(data["modules_to_save"])
    if name == "svfit":
        if data.get("svfit_energy") is not None:
            config["energy"] = data["svfit_energy"]
        elif data.get("svfit_rank") is not None:
            config["rank"] = data["svfit_rank"]
    if name == "svft":
        config["pattern"] = data.get("svft_pattern", "banded")
        config["off_diagonals"] = data.get("svft_off_diagonals", 2)
    rest = {k: v for k, v in data.items() if k not in _OLD_FIELDS and k not in config
            and k not in ("train_bias", "sigma_parametrization")}
    return {**rest, "config": config}


@dataclass
class Prepared:
    """A model with a method applied: what the engine trains, and what to report and save."""

    spec: MethodSpec
    model: Any                  # what the engine trains: a VectorFitModel, a PeftModel or the model itself
    base: Any                   # the underlying model (nn.Module) with the original module names
    vf: Any = None              # the VectorFitModel for vector methods
    targets: list = field(default_factory=list)    # [(name, role, layer)] of the family's targeted modules
    heads: list = field(default_factory=list)
    trainable_params: int = 0
    total_params: int = 0
    breakdown: dict = field(default_factory=dict)


def count_parameters(model) -> tuple[int, int]:
    """``(trainable, all)`` over distinct parameters."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def family_targets(model, spec: MethodSpec):
    """(targets [(name, role, layer)], heads) from the family declaration (or ``--target-modules``)."""
    cfg = spec.targeting_config()
    family = None
    try:
        # no --target-modules: the declared family, or the roles inferred from the model's structure
        family = identify_family(model, infer=cfg.target_modules is None)
        targets = resolve_targets(model, cfg, family)
    except TargetError as exc:
        hint = " (with the vectorfit command: --target-modules REGEX, e.g. '.*\\.(q_proj|v_proj)')" \
            if family is None else ""
        raise CLIError(" ".join(str(exc).split()) + hint) from None
    try:
        heads = resolve_heads(model, cfg, family)
    except TargetError as exc:
        raise CLIError(" ".join(str(exc).split())) from None
    out = []
    for t in targets:
        role = t.slices[0].role if len(t.slices) == 1 else "+".join(s.role or "?" for s in t.slices)
        out.append((t.name, role, t.layer))
    return out, heads, family


def apply_method(model, spec: MethodSpec, *, total_steps: Optional[int] = None, new_head: bool = True) -> Prepared:
    """Apply ``spec`` to ``model`` (in place) and return what to train; raises :class:`CLIError` on bad options.
    ``new_head=False`` (language modelling: the model keeps its own output layer) allows a model without a head."""
    if spec.name not in METHODS:
        raise CLIError(f"unknown method {spec.name!r}; choose one of {', '.join(METHODS)}")
    if spec.avf is not None and spec.name not in VECTOR_METHODS:
        raise CLIError(f"AVF freezes VectorFit vectors; method {spec.name!r} has none (drop --avf)")
    _, total = count_parameters(model)
    targets, heads, family = family_targets(model, spec)
    if not heads and spec.name != "full" and new_head:
        where = f"family {family.name!r}" if family else "this model (no family recognised)"
        raise CLIError(f"no classification head found for {where}; name it with --heads (modules trained in full)")
    prepared = Prepared(spec, model, model, targets=targets, heads=heads, total_params=total)
    try:
        if spec.name in VECTOR_METHODS:
            vf = get_vectorfit_model(model, spec.vectorfit_config())
            prepared.model, prepared.vf = vf, vf
            prepared.breakdown = vf.trainable_parameter_counts()
        elif spec.name == "full":
            for p in model.parameters():
                p.requires_grad_(True)
        elif spec.name == "bitfit":
            for name, p in model.named_parameters():
                p.requires_grad_(name.endswith("bias") or any(name.startswith(h + ".") for h in heads))
        else:
            prepared.model = _apply_peft(model, spec, targets, heads, total_steps)
    except VectorFitError as exc:
        if isinstance(exc, CLIError):
            raise
        raise CLIError(str(exc).replace("\n", " ")) from None
    prepared.trainable_params, _ = count_parameters(prepared.model)
    if prepared.vf is not None:
        prepared.trainable_params = prepared.vf.trainable_parameter_counts()["total"]
    if not prepared.breakdown:
        head_ids = {id(p) for h in heads for p in model.get_submodule(h).parameters()}
        head = sum(p.numel() for p in model.parameters() if id(p) in head_ids and p.requires_grad)
        prepared.breakdown = {"head": head, "other": prepared.trainable_params - head,
                              "total": prepared.trainable_params}
    return prepared


def _lora_alpha(spec: MethodSpec) -> float:
    return spec.lora_alpha if spec.lora_alpha is not None else 2.0 * spec.lora_r


def _apply_peft(model, spec: MethodSpec, targets, heads, total_steps: Optional[int]):
    try:
        import peft
    except ImportError:
        raise CLIError(f"method {spec.name!r} needs PEFT: pip install peft") from None
    names = [name for name, _, _ in targets]
    common = dict(target_modules=names, modules_to_save=list(heads), lora_dropout=spec.lora_dropout, bias="none")
    if spec.name == "lora":
        config = peft.LoraConfig(r=spec.lora_r, lora_alpha=_lora_alpha(spec), **common)
    else:
        steps = max(int(total_steps or 0), 1)
        tinit, tfinal = int(0.1 * steps), int(0.2 * steps)
        if tinit >= steps - tfinal:
            tinit, tfinal = 0, 0
        init_r = spec.adalora_init_r or spec.lora_r + max(spec.lora_r // 2, 1)
        config = peft.AdaLoraConfig(init_r=init_r, target_r=spec.lora_r, lora_alpha=_lora_alpha(spec),
                                    total_step=steps, tinit=tinit, tfinal=tfinal, deltaT=max(1, steps // 50),
                                    **common)
    return peft.get_peft_model(model, config)


def adalora_update(model, global_step: int) -> None:
    """AdaLoRA's budget allocation: call after ``backward()``, before ``zero_grad()``, every step."""
    inner = getattr(model, "base_model", None)
    if inner is not None and hasattr(inner, "update_and_allocate"):
        inner.update_and_allocate(global_step)


# ---------------------------------------------------------------------------------------------- save / load
def save_trained(prepared: Prepared, adapter_dir: Path) -> Optional[Path]:
    """Write the trained state of a non-``full`` method into ``adapter_dir``; returns it (None for ``full``)."""
    name = prepared.spec.name
    if name in VECTOR_METHODS:
        prepared.vf.save_pretrained(adapter_dir)
    elif name in PEFT_METHODS:
        prepared.model.save_pretrained(str(adapter_dir))
    elif name == "bitfit":
        tensors = {n: p.detach().contiguous().cpu() for n, p in prepared.base.named_parameters() if p.requires_grad}
        adapter_dir.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(adapter_dir / BITFIT_WEIGHTS), metadata={"format": BITFIT_FORMAT})
        write_json(adapter_dir / BITFIT_CONFIG, {"format": BITFIT_FORMAT, "heads": prepared.heads,
                                                 "tensors": sorted(tensors)})
    else:
        return None
    return adapter_dir


def restore_trained(model, method: str, adapter_dir: Path):
    """Apply a saved non-``full`` run's trained state to a freshly loaded base ``model``; returns the result
    (a :class:`~vf_core.VectorFitModel`, a PEFT model, or ``model`` itself for ``bitfit``)."""
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise CLIError(f"adapter directory {str(adapter_dir)!r} does not exist")
    if method in VECTOR_METHODS:
        try:
            return VectorFitModel.from_pretrained(model, adapter_dir)
        except AdapterError as exc:
            raise CLIError(str(exc)) from None
    if method in PEFT_METHODS:
        try:
            from peft import PeftModel
        except ImportError:
            raise CLIError(f"this run used {method!r}: loading it needs PEFT (pip install peft)") from None
        return PeftModel.from_pretrained(model, str(adapter_dir))
    if method == "bitfit":
        path = adapter_dir / BITFIT_WEIGHTS
        if not path.is_file():
            raise CLIError(f"{path} is missing; the bitfit run did not finish saving")
        tensors = load_file(str(path))
        params = dict(model.named_parameters())
        for name, value in tensors.items():
            if name not in params or tuple(params[name].shape) != tuple(value.shape):
                raise CLIError(f"bitfit tensor {name!r} {tuple(value.shape)} does not fit this base model")
        with torch.no_grad():
            for name, value in tensors.items():
                params[name].copy_(value)
        return model
    raise CLIError(f"cannot restore method {method!r} from an adapter directory")


def merged_module(trained):
    """A plain ``nn.Module`` with the trained state folded in (VectorFit and LoRA merged)."""
    if isinstance(trained, VectorFitModel):
        return trained.merge_and_unload()
    if hasattr(trained, "merge_and_unload") and hasattr(trained, "peft_config"):
        return trained.merge_and_unload()
    return trained
