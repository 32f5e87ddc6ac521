"""Adaptive Vector Freezing (AVF) and pluggable freezing policies."""

__version__ = "0.1.0"
