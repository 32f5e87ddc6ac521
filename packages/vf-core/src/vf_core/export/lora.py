"""Export a VectorFit adapter as a PEFT LoRA adapter, for the serving engines and loaders that take LoRA.

Each decomposed module's change ``dW = U diag(s - s0) V^T`` (SVFit: its top-r part; SVFT: ``U M V^T``) is written as
LoRA's ``B A`` (:mod:`vf_core.export.deltas`, :mod:`vf_core.export.lowrank`):

- ``rank=None, energy=None``: lossless, each module's rank the number of its changed singular values (summed over a
  fused module's roles; at most ``min(d_out, d_in)``);
- ``rank=R``: the best rank-``R`` approximation of each module's ``dW``;
- ``energy=E``: per module, the fewest terms holding the share ``E`` of ``||dW||_F^2``.

Every module gets ``lora_alpha == r`` (``rank_pattern`` and ``alpha_pattern`` name the modules whose rank differs
from the most common one), so PEFT's scaling ``lora_alpha / r`` is 1 and ``B A`` is ``dW`` itself; this is also what
diffusers assumes for a file without alphas. Trained bias changes go into ``lora_B.bias`` (PEFT's ``lora_bias``, peft
0.14 or later); the trained heads into ``modules_to_save``. Fused projections (GPT-2's ``c_attn``, timm's ``qkv``) are
written under the base model's own module name, ``dW`` assembled from the role slices. The files:

- ``adapter_config.json`` and ``adapter_model.safetensors``: PEFT's format, keys
  ``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight`` / ``lora_B.bias`` and
  ``base_model.model.<head>.<param>``; load with ``PeftModel.from_pretrained(base, directory)``;
- for a diffusers model also ``pytorch_lora_weights.safetensors``: the same LoRA tensors keyed
  ``unet.<module>.lora_A.weight`` (``transformer.`` for a diffusers transformer), which a pipeline's
  ``load_lora_weights(directory)`` and the model's ``load_lora_adapter(directory, prefix="unet",
  weight_name="pytorch_lora_weights.safetensors")`` take;
- ``export_report.json`` / ``export_report.txt``: the fidelity report (:mod:`vf_core.export.report`).

Paper: https://arxiv.org/abs/2503.19530.

Example:
    >>> import tempfile, torch
    >>> from vf_core import get_vectorfit_model
    >>> vf = get_vectorfit_model(torch.nn.Sequential(torch.nn.Linear(6, 4)), target_modules=["0"])
    >>> with torch.no_grad():
    ...     vf.vectors["0.sigma"].parameter[:2] += 0.5
    >>> report = vf.save_as_lora(tempfile.mkdtemp(), sample_inputs=torch.ones(1, 6))
    >>> report.ranks, report.max_output_difference < 1e-5
    ({'0': 2}, True)
"""

from __future__ import annotations

import collections
import json
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import torch
from safetensors.torch import save_file

from ..errors import ConfigError, ExportError
from .deltas import ModuleDelta, expert_parameters, module_deltas
from .lowrank import Factors, factor
from .replay import PREFIX, replay_difference
from .report import LoraExportReport, ModuleExport

if TYPE_CHECKING:  # pragma: no cover
    from ..model import VectorFitModel

__all__ = ["save_as_lora", "CONFIG_NAME", "WEIGHTS_NAME", "DIFFUSERS_WEIGHTS_NAME"]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
DIFFUSERS_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"

#: PEFT's task type from the end of a transformers class name
_TASK_TYPES = (("ForSequenceClassification", "SEQ_CLS"), ("ForCausalLM", "CAUSAL_LM"), ("LMHeadModel", "CAUSAL_LM"),
               ("ForConditionalGeneration", "SEQ_2_SEQ_LM"), ("ForSeq2SeqLM", "SEQ_2_SEQ_LM"),
               ("ForTokenClassification", "TOKEN_CLS"), ("ForQuestionAnswering", "QUESTION_ANS"))


def _check_options(rank: Optional[int], energy: Optional[float]) -> str:
    if rank is not None and energy is not None:
        raise ConfigError("give rank or energy, not both", fields=("rank", "energy"))
    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ConfigError(f"rank must be a positive integer, got {rank!r}", fields=("rank",))
        return f"rank={rank}"
    if energy is not None:
        if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0 < energy <= 1:
            raise ConfigError(f"energy must be a share in (0, 1], got {energy!r}", fields=("energy",))
        return f"energy={energy:g}"
    return "lossless"


def _task_type(model: torch.nn.Module) -> Optional[str]:
    name = type(model).__name__
    return next((task for suffix, task in _TASK_TYPES if name.endswith(suffix)), None)


def _is_diffusers(model: torch.nn.Module) -> bool:
    return type(model).__module__.split(".")[0] == "diffusers"


def _diffusers_prefix(model: torch.nn.Module) -> str:
    """The name a diffusers pipeline gives the model: ``unet`` for a UNet, else ``transformer``."""
    return "unet" if "unet" in type(model).__name__.lower() else "transformer"


def _collides(name: str, others: list[str]) -> bool:
    """Whether PEFT's suffix matching of ``name`` (``key == name or key.endswith("." + name)``) would also take
    another module."""
    return any(other != name and other.endswith("." + name) for other in others)


def _lora_tensors(delta: ModuleDelta, f: Factors, rank: int, lora_bias: bool) -> dict[str, torch.Tensor]:
    """The module's ``lora_A`` / ``lora_B`` (and ``lora_B.bias``) in PEFT's shapes and the module's dtype; factors
    padded with zeros up to ``rank``."""
    b, a = f.b, f.a
    if rank > f.rank:
        b = torch.cat([b, b.new_zeros(b.shape[0], rank - f.rank)], 1)
        a = torch.cat([a, a.new_zeros(rank - f.rank, a.shape[1])], 0)
    if delta.kind == "conv2d":
        a, b = a.reshape(rank, *delta.kernel), b[:, :, None, None]
    out = {"lora_A.weight": a.to(delta.dtype).contiguous(), "lora_B.weight": b.to(delta.dtype).contiguous()}
    if lora_bias:
        bias = delta.bias if delta.bias is not None else b.new_zeros(b.shape[0])
        out["lora_B.bias"] = bias.to(delta.dtype).contiguous()
    return out


def _written_error(delta: ModuleDelta, tensors: dict[str, torch.Tensor]) -> float:
    """``||dW - B A||_F / ||dW||_F`` with the tensors as written (cast to the module's dtype)."""
    dense = delta.dense()
    norm = float(torch.linalg.matrix_norm(dense))
    if norm == 0:
        return 0.0
    a = tensors["lora_A.weight"].to(torch.float64).reshape(tensors["lora_A.weight"].shape[0], -1)
    b = tensors["lora_B.weight"].to(torch.float64).reshape(tensors["lora_B.weight"].shape[0], -1)
    return float(torch.linalg.matrix_norm(dense - b @ a)) / norm


def _base_name(vf: "VectorFitModel") -> Optional[str]:
    config = getattr(vf.model, "config", None)
    value = config.get("_name_or_path") if isinstance(config, dict) else getattr(config, "_name_or_path", None)
    return str(value) if value else None


def save_as_lora(vf: "VectorFitModel", directory: Union[str, os.PathLike], *, rank: Optional[int] = None,
                 energy: Optional[float] = None, sample_inputs: Any = None, uniform_rank: bool = False,
                 base_model_name_or_path: Optional[str] = None) -> LoraExportReport:
    """Write ``vf``'s active adapter to ``directory`` as a PEFT LoRA adapter and return its fidelity report (also
    written there). See the module's documentation for the format.

    Args:
        rank: keep at most ``rank`` terms per module (the best rank-``rank`` approximation of its ``dW``).
        energy: keep, per module, the fewest terms holding this share of ``||dW||_F^2`` (in ``(0, 1]``).
        sample_inputs: inputs of the model (a dict of keyword arguments, a tuple of positional ones, or a tensor):
            the report then gives the largest output difference between ``vf`` and a copy of the base model
            carrying the written adapter (costs a copy of the model).
        uniform_rank: pad every module with zeros to the largest rank (exact): one ``r`` for the whole adapter,
            as engines that read a single rank take it.
        base_model_name_or_path: written into ``adapter_config.json`` (default: the model config's
            ``_name_or_path``).

    Raises :class:`~vf_core.ConfigError` for bad options and :class:`~vf_core.errors.ExportError` for what a LoRA
    adapter cannot hold (a layer type other than Linear, Conv1D, Conv2d) or an adapter with nothing to export.
    """
    mode = _check_options(rank, energy)
    deltas = module_deltas(vf)
    heads = list(vf.modules_to_save)
    factors = {name: factor(d.b, d.a, rank=rank, energy=energy, orthogonal=d.orthogonal)
               for name, d in deltas.items()}
    changed = {name: f for name, f in factors.items() if f.rank > 0 or deltas[name].bias is not None}
    if not changed and not heads:
        raise ExportError("nothing to export: no singular value, sparse entry or bias differs from its starting"
                          " value and no head is trained; train the adapter first")
    lora_bias = any(deltas[name].bias is not None for name in changed)
    ranks = {name: max(f.rank, 1) for name, f in changed.items()}  # PEFT needs r >= 1: a bias-only change gets 1
    if uniform_rank and ranks:
        top = max(ranks.values())
        ranks = {name: top for name in ranks}

    tensors: dict[str, torch.Tensor] = {}
    modules: list[ModuleExport] = []
    for name, f in changed.items():
        written = _lora_tensors(deltas[name], f, ranks[name], lora_bias)
        tensors.update({f"{PREFIX}{name}.{key}": value for key, value in written.items()})
        modules.append(ModuleExport(
            name, deltas[name].kind, deltas[name].shape, changed=deltas[name].rank, rank=ranks[name],
            relative_error=_written_error(deltas[name], written), energy_kept=f.energy_kept(),
            bias=deltas[name].bias is not None, parameters=sum(t.numel() for t in written.values())))
    head_sizes = {}
    for head in heads:
        state = vf.model.get_submodule(head).state_dict()
        tensors.update({f"{PREFIX}{head}.{key}": value.detach().contiguous() for key, value in state.items()})
        head_sizes[head] = sum(v.numel() for v in state.values())

    all_names = [n for n, _ in vf.model.named_modules()]
    targets = list(changed)
    collided = [n for n in targets if _collides(n, all_names)]
    common = collections.Counter(ranks.values()).most_common(1)[0][0] if ranks else 1
    pattern = {n: r for n, r in ranks.items() if r != common}

    def key(name: str) -> str:  # PEFT matches pattern keys as regexes against module-name suffixes
        return "\\A" + re.escape(name) if name in collided else name

    config = {
        "peft_type": "LORA", "task_type": _task_type(vf.model),
        "base_model_name_or_path": base_model_name_or_path or _base_name(vf),
        "r": common, "lora_alpha": common,
        "rank_pattern": {key(n): r for n, r in pattern.items()},
        "alpha_pattern": {key(n): r for n, r in pattern.items()},
        "target_modules": ("(" + "|".join(re.escape(n) for n in targets) + ")") if collided else targets,
        "lora_dropout": 0.0, "bias": "none", "lora_bias": lora_bias, "use_rslora": False, "use_dora": False,
        "fan_in_fan_out": any(deltas[n].kind == "conv1d" for n in targets),
        "modules_to_save": heads or None, "init_lora_weights": True, "inference_mode": True,
    }

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.cpu() for k, v in tensors.items()}, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    files = [CONFIG_NAME, WEIGHTS_NAME]
    if _is_diffusers(vf.model):
        prefix = _diffusers_prefix(vf.model)
        lora_only = {prefix + "." + k[len(PREFIX):]: v.cpu() for k, v in tensors.items() if ".lora_" in k}
        save_file(lora_only, str(out / DIFFUSERS_WEIGHTS_NAME), metadata={"format": "pt"})
        files.append(DIFFUSERS_WEIGHTS_NAME)

    report = LoraExportReport(
        directory=str(out), mode=mode, modules=modules, heads=head_sizes,
        unchanged=[n for n in deltas if n not in changed], files={f: (out / f).stat().st_size for f in files},
        vectorfit_parameters=vf.trainable_parameter_counts()["total"])
    _account_for_the_rest(vf, report, deltas, changed)
    report.notes = serving_notes(report, deltas, lora_bias, pattern, heads, targets)
    if sample_inputs is not None:
        kinds = {n: deltas[n].kind for n in targets}
        report.max_output_difference = replay_difference(vf, tensors, kinds, heads, sample_inputs)
        report.output_check = ("VectorFit model against a copy of the base model carrying the written adapter,"
                               " applied as PEFT applies it (lora_alpha == r: scaling 1)")
        if lora_bias:  # what an engine that drops LoRA biases (vLLM, TGI) would serve
            no_bias = {k: v for k, v in tensors.items() if not k.endswith(".lora_B.bias")}
            report.max_output_difference_without_bias = replay_difference(vf, no_bias, kinds, heads, sample_inputs)
    report.write(out)
    return report


def _account_for_the_rest(vf: "VectorFitModel", report: LoraExportReport, deltas, changed) -> None:
    """Note what trains but is not in the adapter: 3-D expert parameters and other trainable parameters."""
    experts = expert_parameters(vf)
    if experts:
        report.not_exported[", ".join(experts)] = (
            "decomposed 3-D expert parameters: PEFT holds them only through target_parameters, which takes no"
            " lora_bias and reads its own (experts, in, out) layout; merge the model to keep them")
        warnings.warn(f"save_as_lora: {len(experts)} decomposed 3-D expert parameter(s) are not exported"
                      " (see the report); the LoRA adapter leaves their change out", stacklevel=3)
    other = vf.trainable_parameter_counts().get("other", 0)
    if other:
        report.not_exported["other trainable parameters"] = (
            f"{other:,} trained entries outside the decomposed layers and heads; LoRA has no place for them")


def serving_notes(report: LoraExportReport, deltas, lora_bias: bool, pattern: dict, heads: list[str],
                  targets: list[str]) -> list[str]:
    """What the target formats and serving engines cannot take from this export as it is."""
    notes = []
    if lora_bias:
        without = [n for n in targets if deltas[n].bias is not None and not deltas[n].had_bias]
        notes.append(
            f"lora_B.bias on {sum(deltas[n].bias is not None for n in targets)} module(s) (lora_bias=true): PEFT"
            " (0.14 or later) and diffusers load it; vLLM deprecated and then removed its LoRA-bias support and TGI"
            " has none, so serving there drops the bias changes (train without biases, or merge, for those)")
        if without:
            notes.append(f"{len(without)} module(s) have a LoRA bias but no bias of their own (e.g. {without[0]}):"
                         " PEFT loads and runs the adapter but cannot merge it into them")
    if pattern:
        top = max(m.rank for m in report.modules)
        notes.append(f"ranks differ between modules (rank_pattern/alpha_pattern, largest {top}): every module has"
                     " lora_alpha == r, so an engine that applies one lora_alpha / r to all still scales by 1, but"
                     f" vLLM needs --max-lora-rank >= {top} (its allowed values are fixed, up to 512 in recent"
                     " releases) and reads r from the config: export with uniform_rank=True for one r")
    elif report.modules and max(m.rank for m in report.modules) > 512:
        notes.append("a rank above 512: vLLM's --max-lora-rank does not go that high; export with rank=R")
    if heads:
        notes.append(f"modules_to_save ({', '.join(heads)}): PEFT loads them; vLLM refuses adapters with"
                     " modules_to_save and TGI ignores them: serve the head from a merged model")
    if any(deltas[n].kind == "conv2d" for n in targets):
        notes.append("Conv2d modules: PEFT and diffusers load them; LLM serving engines (vLLM, TGI) have no"
                     " convolution LoRA")
    if any(deltas[n].kind == "conv1d" for n in targets):
        notes.append("GPT-2-style Conv1D modules are written with fan_in_fan_out=true (PEFT's setting for them)")
    notes.append("vLLM and TGI load only target names their model implementations declare (q_proj, k_proj, v_proj,"
                 " o_proj, gate_proj, up_proj, down_proj and the like); fused projections are exported under the base"
                 " model's own name (c_attn, qkv, query_key_value), which they may not map")
    return notes
