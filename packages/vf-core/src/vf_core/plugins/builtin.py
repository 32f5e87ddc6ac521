"""vf-core's built-in plugin: the standard layer layouts and the fallback family recognition."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .manager import hookimpl


@hookimpl
def vectorfit_weight_layouts():
    from ..layouts import Conv1DLayout, Conv2dLayout, LinearLayout

    return [LinearLayout, Conv1DLayout, Conv2dLayout]


@hookimpl(trylast=True)
def vectorfit_identify_family(model: Any, families: Sequence[Any]) -> Optional[str]:
    for family in families:
        if family.identifies(model):
            return family.name
    return None
