"""The module the ``vectorfit`` entry point names: it implements one hook."""

from vf_avf import PolicyRecord
from vf_core.plugins import hookimpl

from .policy import LeastTrainedConfig, LeastTrainedPolicy


@hookimpl
def vectorfit_freezing_policies():
    return [PolicyRecord("least_trained", LeastTrainedConfig, LeastTrainedPolicy,
                         "freeze the k least-trained vectors at each AVF step")]
