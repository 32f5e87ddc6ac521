"""The six roles a targeted matrix plays in a transformer block."""

from __future__ import annotations

from typing import Literal

__all__ = ["ROLES", "Role", "KINDS", "Kind"]

Role = Literal["q", "k", "v", "o", "f1", "f2"]
#: attention query, key, value and output projections; the MLP's up (``f1``) and down (``f2``) layers
ROLES: tuple[str, ...] = ("q", "k", "v", "o", "f1", "f2")

Kind = Literal["sigma", "bias", "m"]
KINDS: tuple[str, ...] = ("sigma", "bias", "m")
