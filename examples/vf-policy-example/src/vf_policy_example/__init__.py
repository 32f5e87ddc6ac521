"""An example freezing policy plugin for VectorFit: ``least_trained``.

Paper (the AVF it mirrors): https://arxiv.org/abs/2503.19530. See docs/freezing-policies.md.

Example:
    >>> from vf_avf import AVFConfig
    >>> AVFConfig(policy="least_trained", t_i=10, t_f=5, n_f=3, k=2).k    # once the package is installed
    2
"""

from .policy import LeastTrainedConfig, LeastTrainedPolicy

__all__ = ["LeastTrainedConfig", "LeastTrainedPolicy"]
