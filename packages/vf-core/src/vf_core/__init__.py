"""VectorFit core: fine-tune pre-trained models by their singular values and biases.

Paper: Hegde, Kaur, Tiwari, "VectorFit: Adaptive Singular & Bias Vector Fine-Tuning of Pre-trained
Foundation Models", https://arxiv.org/abs/2503.19530. Also SVFit (https://arxiv.org/abs/2409.05926) and SVFT
(https://arxiv.org/abs/2405.19597).

Example:
    >>> import torch
    >>> from vf_core import VectorFitConfig, get_vectorfit_model
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    >>> vf = get_vectorfit_model(net, VectorFitConfig(target_modules=["0"], modules_to_save=["1"]))
    >>> _ = vf.print_trainable_parameters()  # doctest: +ELLIPSIS
    trainable params: 34 || all params: 90 || trainable%: 37.7778
      = 8 singular values + 8 bias entries + 18 head parameters
"""

__version__ = "0.1.0"

from .config import VectorFitConfig
from .errors import (
    AdapterError,
    AdapterFormatError,
    AdapterMismatchError,
    AdapterUsageError,
    ConfigError,
    IncompatibleAdapterError,
    ExportError,
    InferenceError,
    NonFiniteWeightError,
    PluginError,
    PolicyNotFoundError,
    TargetError,
    TaskError,
    TiedWeightError,
    UnknownAdapterError,
    UnknownFamilyError,
    UnsupportedLayerError,
    VectorFitError,
)
from .experts import ExpertParam
from .families import Family, FusedModule
from .layers import DecomposedLayer
from .model import VectorFitModel, get_vectorfit_model
from .roles import ROLES
from .tasks import Task
from .vectors import TrainableVector, VectorRegistry

__all__ = [
    "__version__",
    "VectorFitConfig",
    "VectorFitModel",
    "get_vectorfit_model",
    "DecomposedLayer",
    "TrainableVector",
    "VectorRegistry",
    "Family",
    "FusedModule",
    "ExpertParam",
    "ROLES",
    "VectorFitError",
    "ConfigError",
    "TargetError",
    "UnknownFamilyError",
    "InferenceError",
    "UnsupportedLayerError",
    "NonFiniteWeightError",
    "TiedWeightError",
    "AdapterError",
    "AdapterMismatchError",
    "AdapterFormatError",
    "UnknownAdapterError",
    "IncompatibleAdapterError",
    "AdapterUsageError",
    "ExportError",
    "PluginError",
    "PolicyNotFoundError",
    "TaskError",
    "Task",
]
