"""The exceptions vf-avf adds to :mod:`vf_core.errors` (which it also uses: ``ConfigError``,
``PolicyNotFoundError``, ``PluginError``). Paper (AVF): https://arxiv.org/abs/2503.19530.

Example:
    >>> from vf_avf.errors import FreezerStateError
    >>> from vf_core import VectorFitError
    >>> issubclass(FreezerStateError, VectorFitError)
    True
"""

from __future__ import annotations

from vf_core.errors import VectorFitError

__all__ = ["FreezerStateError"]


class FreezerStateError(VectorFitError, ValueError):
    """A saved freezer state is missing, of an unknown format, or belongs to another model or policy."""
