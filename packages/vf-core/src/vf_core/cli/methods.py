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

from ..roles import ROLES
from .records import CLIError

__all__ = ["METHODS", "VECTOR_METHODS", "PEFT_METHODS", "DEFAULT_LR", "MethodSpec", "Prepared", "apply_method",
           "restore_trained", "save_trained", "count_parameters", "default_avf", "family_targets", "resolve_avf"]

METHODS = ("vectorfit", "svfit", "svft", "bitfit", "full", "lora", "adalora")
VECTOR_METHODS = ("vectorfit", "svfit", "svft")
PEFT_METHODS = ("lora", "adalora")

#: learning rate per method when ``--lr`` is not given: the winners of the quality benchmark's sweep
#: (benchmarks/quality/README.md: MiniLM on 2,000 Rotten Tomatoes snippets for 2 epochs, the same grid rule,
#: budget and two seeds for every method). Short runs want higher rates than the paper's 1e-3 over 20+ epochs.
DEFAULT_LR = {"vectorfit": 1e-2, "svfit": 4e-2, "svft": 2e-2, "bitfit": 5e-3, "full": 2e-4, "lora": 2e-3,
              "adalora": 5e-3}

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


@dataclass
class MethodSpec:
    """A method and its options, as stored in ``run.json``."""

    name: str
    roles: list[str] = field(default_factory=lambda: list(ROLES))
    train_bias: Optional[bool] = None
    target_modules: Optional[str] = None
    modules_to_save: Optional[list] = None
    svfit_rank: Optional[int] = None
    svfit_energy: Optional[float] = None
    svft_pattern: str = "banded"
    svft_off_diagonals: int = 2
    lora_r: int = 8
    lora_alpha: Optional[float] = None
    lora_dropout: float = 0.0
    adalora_init_r: Optional[int] = None
    avf: Optional[dict] = None
    sigma_parametrization: Optional[str] = None   # vectorfit: None takes VectorFitConfig's default

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "MethodSpec":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def is_vector(self) -> bool:
        return self.name in VECTOR_METHODS

    def label(self) -> str:
        """A short human label: ``vectorfit``, ``vectorfit (no AVF, sigma only)``, ``lora r=8``..."""
        if self.name in VECTOR_METHODS:
            bits = []
            if self.name == "vectorfit":
                if self.avf is None:
                    bits.append("no AVF")
                if self.train_bias is False:
                    bits.append("sigma only")
                if self.sigma_parametrization == "relative":
                    bits.append("relative sigma")
                elif self.sigma_parametrization == "absolute":
                    bits.append("absolute sigma")
            if self.name == "svfit":
                bits.append(f"r={self.svfit_rank}" if self.svfit_rank else
                            f"energy={self.svfit_energy}" if self.svfit_energy else "r=16")
            if self.name == "svft":
                bits.append(f"{self.svft_pattern}, d={self.svft_off_diagonals}")
            if list(self.roles) != list(ROLES):
                bits.append("roles " + ",".join(self.roles))
            return self.name + (f" ({', '.join(bits)})" if bits else "")
        if self.name == "lora":
            return f"lora r={self.lora_r}"
        if self.name == "adalora":
            return f"adalora r={self.adalora_init_r or self.lora_r + self.lora_r // 2}->{self.lora_r}"
        return self.name

    def vectorfit_config(self):
        from ..config import VectorFitConfig

        fields: dict[str, Any] = {"method": self.name, "roles": list(self.roles)}
        if self.train_bias is not None:
            fields["train_bias"] = self.train_bias
        if self.sigma_parametrization is not None and self.name == "vectorfit":
            fields["sigma_parametrization"] = self.sigma_parametrization
        if self.target_modules:
            fields["target_modules"] = self.target_modules
        if self.modules_to_save is not None:
            fields["modules_to_save"] = list(self.modules_to_save)
        if self.name == "svfit":
            if self.svfit_energy is not None:
                fields["energy"] = self.svfit_energy
            elif self.svfit_rank is not None:
                fields["rank"] = self.svfit_rank
        if self.name == "svft":
            fields["pattern"] = self.svft_pattern
            fields["off_diagonals"] = self.svft_off_diagonals
        return VectorFitConfig(**fields)


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
    from ..config import VectorFitConfig
    from ..errors import TargetError
    from ..targets import identify_family, resolve_heads, resolve_targets

    cfg = VectorFitConfig(roles=list(spec.roles), target_modules=spec.target_modules or None,
                          modules_to_save=list(spec.modules_to_save) if spec.modules_to_save is not None else None)
    family = identify_family(model)
    try:
        targets = resolve_targets(model, cfg, family)
    except TargetError as exc:
        raise CLIError(" ".join(str(exc).split())) from None
    try:
        heads = resolve_heads(model, cfg, family)
    except TargetError as exc:
        raise CLIError(" ".join(str(exc).split())) from None
    out = []
    for t in targets:
        role = t.slices[0].role if len(t.slices) == 1 else "+".join(s.role or "?" for s in t.slices)
        out.append((t.name, role, t.layer))
    return out, heads, family


def apply_method(model, spec: MethodSpec, *, total_steps: Optional[int] = None) -> Prepared:
    """Apply ``spec`` to ``model`` (in place) and return what to train; raises :class:`CLIError` on bad options."""
    from ..errors import VectorFitError

    if spec.name not in METHODS:
        raise CLIError(f"unknown method {spec.name!r}; choose one of {', '.join(METHODS)}")
    if spec.avf is not None and spec.name not in VECTOR_METHODS:
        raise CLIError(f"AVF freezes VectorFit vectors; method {spec.name!r} has none (drop --avf)")
    _, total = count_parameters(model)
    targets, heads, family = family_targets(model, spec)
    if not heads and spec.name != "full":
        where = f"family {family.name!r}" if family else "this model (no family recognised)"
        raise CLIError(f"no classification head found for {where}; name it with --heads (modules trained in full)")
    prepared = Prepared(spec, model, model, targets=targets, heads=heads, total_params=total)
    try:
        if spec.name in VECTOR_METHODS:
            from ..model import get_vectorfit_model

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
        from safetensors.torch import save_file

        from .rundir import write_json

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
        from ..errors import AdapterError
        from ..model import VectorFitModel

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
        import torch
        from safetensors.torch import load_file

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
    from ..model import VectorFitModel

    if isinstance(trained, VectorFitModel):
        return trained.merge_and_unload()
    if hasattr(trained, "merge_and_unload") and hasattr(trained, "peft_config"):
        return trained.merge_and_unload()
    return trained
