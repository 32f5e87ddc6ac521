"""The methods, one module each: the part of a decomposed layer that a method trains.

A decomposed layer (:class:`vf_core.layers.DecomposedLayer`) splits its output rows into parts: a whole matrix
is one part, a fused ``qkv`` projection one part per role. Each method is one :class:`Part` subclass:

- :class:`SigmaPart` (:mod:`vf_core.parts.vectorfit`, VectorFit, https://arxiv.org/abs/2503.19530):
  ``y = U diag(s) V^T x + b``;
- :class:`SVFitPart` (:mod:`vf_core.parts.svfit`, SVFit, https://arxiv.org/abs/2409.05926):
  ``y = W_e x + U_r diag(s_r) V_r^T x + b``;
- :class:`SVFTPart` (:mod:`vf_core.parts.svft`, SVFT, https://arxiv.org/abs/2405.19597):
  ``y = U (diag(s0) + M) V^T x + b``, ``M`` sparse;
- :class:`FrozenPart`: a slice nothing trains (a fused role left out of ``roles``).

:data:`PART_TYPES` maps ``VectorFitConfig.method`` to its part class; the layer builds a part with
``PART_TYPES[config.method].from_decomposition(dec, weight, bias, config, name)``, and ``VectorFitConfig``
accepts exactly these method names. A fourth method is one new module here and one entry below (plus its own
options as ``VectorFitConfig`` fields, if it has any).

Example:
    >>> from vf_core.parts import PART_TYPES
    >>> sorted(PART_TYPES)
    ['svfit', 'svft', 'vectorfit']
"""

from __future__ import annotations

from .base import FrozenPart, Part, param_or_buffer
from .patterns import pattern_size, sparsity_pattern
from .svfit import SVFitPart, svfit_rank
from .svft import SVFTPart
from .vectorfit import SIGMA_PARAMETRIZATIONS, SigmaPart

__all__ = ["PART_TYPES", "Part", "FrozenPart", "SigmaPart", "SVFitPart", "SVFTPart", "SIGMA_PARAMETRIZATIONS",
           "sparsity_pattern", "pattern_size", "svfit_rank", "param_or_buffer"]

#: method name (``VectorFitConfig.method``) -> the part class that implements it
PART_TYPES: dict[str, type[Part]] = {
    "vectorfit": SigmaPart,
    "svfit": SVFitPart,
    "svft": SVFTPart,
}
