"""Decomposed layers: the parts of each method and the layer that holds them."""

from .layer import DecomposedLayer, MethodOptions, SliceSpec
from .parts import FrozenPart, Part, SigmaPart, SVFitPart, SVFTPart
from .patterns import pattern_size, sparsity_pattern

__all__ = ["DecomposedLayer", "MethodOptions", "SliceSpec", "Part", "FrozenPart", "SigmaPart", "SVFitPart",
           "SVFTPart", "sparsity_pattern", "pattern_size"]
