"""Decomposed layers: the layer that holds one method part (:mod:`vf_core.parts`) per row slice, and the 3-D expert
parameter that holds one per expert (:class:`DecomposedExperts`)."""

from ..parts import FrozenPart, Part, SigmaPart, SVFitPart, SVFTPart, pattern_size, sparsity_pattern
from .experts import DecomposedExperts, PlainExpertParams
from .layer import DecomposedLayer, SliceSpec

__all__ = ["DecomposedLayer", "DecomposedExperts", "PlainExpertParams", "SliceSpec", "Part", "FrozenPart", "SigmaPart",
           "SVFitPart", "SVFTPart", "sparsity_pattern", "pattern_size"]
