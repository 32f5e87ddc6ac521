"""The fidelity report of a LoRA export: per module how close the exported ``dW`` is, its rank and size; the output
check; and what the target formats cannot hold.

Written next to the adapter as ``export_report.json`` and ``export_report.txt`` (PEFT and diffusers ignore both).
Paper: https://arxiv.org/abs/2503.19530.

Example:
    >>> from vf_core.export.report import LoraExportReport, ModuleExport
    >>> report = LoraExportReport(directory="out", mode="lossless", modules=[
    ...     ModuleExport("fc", "linear", (4, 6), changed=2, rank=2, relative_error=0.0, energy_kept=1.0,
    ...                  bias=False, parameters=20)])
    >>> report.max_relative_error, report.adapter_parameters
    (0.0, 20)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

__all__ = ["ModuleExport", "LoraExportReport", "REPORT_JSON", "REPORT_TEXT"]

REPORT_JSON = "export_report.json"
REPORT_TEXT = "export_report.txt"


@dataclass
class ModuleExport:
    """One exported module: ``changed`` rank-one terms in VectorFit's change (changed singular values, summed over
    a fused module's roles), ``rank`` of them exported; ``relative_error`` is ``||dW - B A||_F / ||dW||_F`` measured
    on the written (cast) tensors; ``energy_kept`` the share of ``||dW||_F^2`` the kept terms hold."""

    name: str
    kind: str
    shape: tuple[int, int]
    changed: int
    rank: int
    relative_error: float
    energy_kept: float
    bias: bool
    parameters: int


@dataclass
class LoraExportReport:
    """What :func:`vf_core.export.save_as_lora` wrote and how faithful it is."""

    directory: str
    mode: str  # "lossless", "rank=R" or "energy=E"
    modules: list[ModuleExport] = field(default_factory=list)
    heads: dict[str, int] = field(default_factory=dict)  # modules_to_save -> parameters
    unchanged: list[str] = field(default_factory=list)  # decomposed modules nothing changed in (not written)
    not_exported: dict[str, str] = field(default_factory=dict)  # what the adapter leaves out, and why
    notes: list[str] = field(default_factory=list)  # what the target formats and engines cannot hold
    files: dict[str, int] = field(default_factory=dict)  # file -> bytes
    vectorfit_parameters: int = 0  # the trained entries of the VectorFit adapter, for comparison
    max_output_difference: Optional[float] = None  # with sample inputs: VectorFit model vs base + the LoRA
    output_check: Optional[str] = None  # how that was measured
    max_output_difference_without_bias: Optional[float] = None  # the same with the lora_B biases dropped

    @property
    def max_relative_error(self) -> float:
        return max((m.relative_error for m in self.modules), default=0.0)

    @property
    def adapter_parameters(self) -> int:
        """Entries of the LoRA factors and biases plus the heads."""
        return sum(m.parameters for m in self.modules) + sum(self.heads.values())

    @property
    def ranks(self) -> dict[str, int]:
        return {m.name: m.rank for m in self.modules}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["max_relative_error"] = self.max_relative_error
        out["adapter_parameters"] = self.adapter_parameters
        out["modules"] = [{**asdict(m), "shape": list(m.shape)} for m in self.modules]
        return out

    def summary(self) -> str:
        """A readable account: totals, the worst modules, the output check and the notes."""
        ranks = [m.rank for m in self.modules]
        lines = [f"PEFT LoRA export ({self.mode}) in {self.directory}",
                 f"  modules: {len(self.modules)} exported, {len(self.unchanged)} unchanged (left out);"
                 f" ranks {min(ranks, default=0)}..{max(ranks, default=0)}",
                 f"  parameters: {self.adapter_parameters:,} (LoRA factors and biases"
                 f"{' + heads' if self.heads else ''}) for {self.vectorfit_parameters:,} trained VectorFit entries",
                 f"  largest relative Frobenius error of dW: {self.max_relative_error:.3g}"]
        if self.files:
            lines.append("  files: " + ", ".join(f"{name} ({size:,} bytes)" for name, size in self.files.items()))
        if self.heads:
            lines.append("  heads (modules_to_save): " + ", ".join(self.heads))
        if self.max_output_difference is not None:
            lines.append(f"  max output difference on the sample inputs: {self.max_output_difference:.3g}"
                         f" ({self.output_check})")
        if self.max_output_difference_without_bias is not None:
            lines.append(f"  the same without the lora_B biases (as an engine that drops them serves it):"
                         f" {self.max_output_difference_without_bias:.3g}")
        worst = sorted(self.modules, key=lambda m: m.relative_error, reverse=True)[:5]
        if worst and worst[0].relative_error > 0:
            lines.append("  largest errors:")
            lines += [f"    {m.name}: rank {m.rank} of {m.changed}, error {m.relative_error:.3g},"
                      f" energy kept {m.energy_kept:.4f}" for m in worst if m.relative_error > 0]
        for what, why in self.not_exported.items():
            lines.append(f"  not exported: {what}: {why}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def write(self, directory: Path) -> None:
        (directory / REPORT_JSON).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        (directory / REPORT_TEXT).write_text(self.summary() + "\n")
