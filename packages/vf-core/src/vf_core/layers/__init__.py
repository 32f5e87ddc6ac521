"""Decomposed layers: the layer that holds one method part (:mod:`vf_core.parts`) per row slice."""

from ..parts import FrozenPart, Part, SigmaPart, SVFitPart, SVFTPart, pattern_size, sparsity_pattern
from .layer import DecomposedLayer, SliceSpec

__all__ = ["DecomposedLayer", "SliceSpec", "Part", "FrozenPart", "SigmaPart", "SVFitPart", "SVFTPart",
           "sparsity_pattern", "pattern_size"]
