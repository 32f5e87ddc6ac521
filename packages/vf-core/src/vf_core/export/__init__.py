"""Export a VectorFit adapter to other adapter formats: a PEFT LoRA adapter (:func:`save_as_lora`).

Paper: https://arxiv.org/abs/2503.19530. Every adapter trained by singular values has an exact low-rank weight change
``dW = U diag(s - s0) V^T``, which a LoRA adapter holds as ``B A``; see :mod:`vf_core.export.lora`.

Example:
    >>> import tempfile, torch
    >>> from vf_core import get_vectorfit_model
    >>> from vf_core.export import save_as_lora
    >>> vf = get_vectorfit_model(torch.nn.Sequential(torch.nn.Linear(6, 4)), target_modules=["0"])
    >>> with torch.no_grad():
    ...     vf.vectors["0.bias"].parameter += 0.1
    >>> save_as_lora(vf, tempfile.mkdtemp()).modules[0].bias
    True
"""

from .lora import CONFIG_NAME, DIFFUSERS_WEIGHTS_NAME, WEIGHTS_NAME, save_as_lora
from .report import LoraExportReport, ModuleExport

__all__ = ["save_as_lora", "LoraExportReport", "ModuleExport", "CONFIG_NAME", "WEIGHTS_NAME",
           "DIFFUSERS_WEIGHTS_NAME"]
