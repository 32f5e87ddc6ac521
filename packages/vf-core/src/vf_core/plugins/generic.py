"""The built-in generic plugin: targets any ``nn.Module`` by explicit module names or a regular expression.

With ``VectorFitConfig.target_modules`` set it needs no backend at all: a list matches names exactly or by a
``.``-suffix, a string is a full-match regex, a dict maps roles to either. Without it, it selects the
modules the recognised family declares. It answers last (``trylast``), so a third-party plugin can take over
target selection for models it knows better.

Example:
    >>> import torch
    >>> from vf_core import VectorFitConfig, get_vectorfit_model
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    >>> vf = get_vectorfit_model(net, VectorFitConfig(target_modules=r"[01]"))
    >>> sorted(vf.decomposed_layers())
    ['0', '1']
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .manager import hookimpl


@hookimpl(trylast=True)
def vectorfit_select_targets(model: Any, config: Any, family: Optional[Any], heads: Sequence[str]):
    from ..targets import select_targets

    return select_targets(model, config, family, heads)
