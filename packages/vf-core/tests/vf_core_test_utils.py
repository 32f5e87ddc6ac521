"""Tiny modules shared by vf-core's tests (no transformers needed); they live in :mod:`vf_core.testing.tiny`."""

from vf_core.testing.tiny import TINY_ROLES, Block, Conv1D, TinyNet

__all__ = ["TINY_ROLES", "Block", "Conv1D", "TinyNet"]
