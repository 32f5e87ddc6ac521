"""VectorFit backend (vision): family declarations for the roles q, k, v, o, f1, f2."""

__version__ = "0.1.0"
