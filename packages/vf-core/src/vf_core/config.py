"""`VectorFitConfig`: what to decompose and what to train.

Paper: VectorFit, https://arxiv.org/abs/2503.19530 (singular values and biases), SVFit
(https://arxiv.org/abs/2409.05926, top-r singular values) and SVFT (https://arxiv.org/abs/2405.19597, a
sparse trainable matrix between the singular vectors).

Example:
    >>> from vf_core import VectorFitConfig
    >>> VectorFitConfig(roles=["q", "k", "v", "o"], train_bias=False).method
    'vectorfit'
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from .parts import PART_TYPES
from .roles import ROLES, Role
from .strict import StrictModel

__all__ = ["VectorFitConfig", "Method", "Pattern", "SigmaParametrization"]

#: a method name: a key of :data:`vf_core.parts.PART_TYPES` (``"vectorfit"``, ``"svfit"``, ``"svft"``)
Method = str
Pattern = Literal["plain", "banded", "random", "topk"]
SigmaParametrization = Literal["absolute", "relative"]

TargetSpec = Union[str, list[str]]


class VectorFitConfig(StrictModel):
    """Configuration of a VectorFit, SVFit or SVFT adapter: the one options type every decomposed layer reads.

    Args:
        method: ``"vectorfit"`` trains the singular values ``s`` and/or the bias ``b`` of every targeted matrix;
            ``"svfit"`` trains the top-``rank`` singular values (or those holding ``energy`` of the spectrum)
            over a frozen residual; ``"svft"`` trains the non-zero entries of a sparse ``M`` in
            ``U (diag(s0) + M) V^T``. Any method registered in :data:`vf_core.parts.PART_TYPES`.
        roles: the roles to target among ``q, k, v, o, f1, f2`` (default: all six).
        train_sigma: train the singular values (``vectorfit``; ``svfit``/``svft`` always train theirs).
        sigma_parametrization: what ``vectorfit``'s trained singular-value vector holds: ``"absolute"`` (the
            paper: ``s`` itself) or ``"relative"`` (``t`` in ``s = s0 * (1 + t)``, so that Adam moves each
            singular value in proportion to its size). Both are exact at initialisation and merge, save and load
            alike; docs/method.md says which is the default and why.
        train_bias: train the bias of each targeted matrix. Default: ``True`` for ``vectorfit``,
            ``False`` for ``svfit`` and ``svft``.
        target_modules: overrides the backend's declarations. A list matches module names exactly or by a
            ``.``-separated suffix; a string is a regular expression matched against the whole name; a dict
            maps a role to such a list or string.
        fused_modules: module names (matched like ``target_modules``) whose output rows hold several roles
            stacked, mapped to those roles in order, e.g. ``{"c_attn": ["q", "k", "v"]}``.
        modules_to_save: modules trained in full and saved with the adapter (a new classification head).
            ``None`` takes the heads the backend declares for the family; ``[]`` saves none.
        rank, energy: ``svfit``'s number of singular values, or the smallest share of the spectrum's energy
            (sum of squared singular values) they must hold. Exactly one may be given; default ``rank=16``.
        pattern, off_diagonals, seed: ``svft``'s sparsity pattern of ``M``, its number of off-diagonals
            on each side, and the seed of the ``random`` pattern (stored with the adapter).
        svd_dtype: the precision of the decomposition, whatever the model's dtype.
        svd_driver: ``"auto"`` (Gram eigendecomposition for rectangular weights and flat spectra, LAPACK for
            other square-ish ones), ``"gram"`` or ``"svd"``; see :mod:`vf_core.svd`.
        svd_cache: keep decompositions on disk (``$VECTORFIT_CACHE/svd``), keyed by a fingerprint of the weights.
        add_missing_bias: give a targeted layer that has no bias a zero-initialised trainable one.
        decompose_tied: decompose weights shared with another module (otherwise an error).
    """

    method: Method = "vectorfit"
    roles: list[Role] = Field(default_factory=lambda: list(ROLES))
    train_sigma: bool = True
    sigma_parametrization: SigmaParametrization = "absolute"
    train_bias: Optional[bool] = None
    target_modules: Optional[Union[TargetSpec, dict[Role, TargetSpec]]] = None
    fused_modules: dict[str, list[Role]] = Field(default_factory=dict)
    modules_to_save: Optional[list[str]] = None
    rank: Optional[int] = Field(default=None, gt=0)
    energy: Optional[float] = Field(default=None, gt=0.0, le=1.0)
    pattern: Pattern = "banded"
    off_diagonals: int = Field(default=2, ge=0)
    seed: int = 0
    svd_dtype: Literal["float32", "float64"] = "float32"
    svd_driver: Literal["auto", "gram", "svd"] = "auto"
    svd_cache: bool = True
    add_missing_bias: bool = False
    decompose_tied: bool = False

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        if method not in PART_TYPES:
            raise ValueError(f"unknown method {method!r}; the methods are {', '.join(PART_TYPES)}")
        return method

    @field_validator("roles")
    @classmethod
    def _roles_unique_nonempty(cls, roles: list[str]) -> list[str]:
        if not roles:
            raise ValueError(f"at least one role is needed, among {', '.join(ROLES)}")
        if len(set(roles)) != len(roles):
            raise ValueError("roles must not repeat")
        return roles

    @model_validator(mode="after")
    def _method_fields(self) -> "VectorFitConfig":
        if self.rank is not None and self.energy is not None:
            raise ValueError("give svfit's 'rank' or 'energy', not both")
        if self.method == "vectorfit" and not self.train_sigma and self.train_bias is False:
            raise ValueError("'train_sigma' and 'train_bias' are both False: nothing would train")
        if (self.method != "vectorfit" and self.sigma_parametrization != "absolute"
                and "sigma_parametrization" in self.model_fields_set):
            raise ValueError(f"sigma_parametrization={self.sigma_parametrization!r} applies to method 'vectorfit'"
                             f" only, not {self.method!r}")
        return self

    @property
    def bias_trained(self) -> bool:
        """Whether biases train, resolving the method-dependent default."""
        if self.train_bias is not None:
            return self.train_bias
        return self.method == "vectorfit"

    @property
    def sigma_trained(self) -> bool:
        """Whether the method's spectral parameters (``s``, ``s_r`` or ``M``) train."""
        return self.train_sigma or self.method != "vectorfit"

    @property
    def svfit_rank_or_energy(self) -> tuple[Optional[int], Optional[float]]:
        if self.rank is None and self.energy is None:
            return 16, None
        return self.rank, self.energy
