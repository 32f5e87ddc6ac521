"""vf-avf's plugin: contributes the built-in freezing policies through the same hook third parties use.

Paper (AVF): https://arxiv.org/abs/2503.19530.

Registered by the ``vectorfit`` entry point ``vf_avf = "vf_avf.plugin"`` in vf-avf's ``pyproject.toml``;
``VECTORFIT_DISABLE_PLUGINS=vf_avf`` would remove the built-ins like any other plugin.

Example:
    >>> from vf_avf.plugin import vectorfit_freezing_policies
    >>> [record.name for record in vectorfit_freezing_policies()]
    ['topk_ema', 'random', 'dropout', 'none']
"""

from __future__ import annotations

from vf_core.plugins import hookimpl


@hookimpl
def vectorfit_freezing_policies():
    from .policies import BUILTIN_POLICIES

    return list(BUILTIN_POLICIES)
