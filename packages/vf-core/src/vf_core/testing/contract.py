"""The contract every declared architecture family must meet, run on the family's tiny random model.

Families come from the plugin registry (:func:`vf_core.plugins.list_families`), so a newly declared family is
tested without new test code. A backend's ``tests/test_contract.py`` selects its own families::

    from vf_core.testing import FamilyContract

    class TestNlpFamilies(FamilyContract):
        backend = "nlp"

For every selected family, pytest runs (one test each, named ``test_...[<family>]``):

- ``test_declaration``: the family has a ``tiny_model`` and an ``example_input`` factory;
- ``test_identified``: the installed plugins recognise the tiny model as this family;
- ``test_roles_in_every_block``: every block holding a declared module has a vector for every declared role,
  and every vector lies in such a block;
- ``test_exact_at_initialisation``: the decomposed model computes the original outputs (float32 tolerance),
  by the dense (eval, no grad) and the factored (grad enabled) paths alike;
- ``test_forward_backward``: a backward pass reaches every singular-value and bias vector and the heads, and
  nothing else trains;
- ``test_save_load_roundtrip``: after perturbing every vector and head, ``save_pretrained`` then
  ``VectorFitModel.from_pretrained(fresh copy of the base model, directory)`` gives the same outputs;
- ``test_merge``: ``merge_and_unload`` gives the unmerged outputs, leaves no ``DecomposedLayer`` behind and
  restores the original parameter names.

Selecting families: set ``VECTORFIT_FAMILY`` to comma-separated family names (``VECTORFIT_FAMILY=llama``) to
run only those (the ``nox -s "family(llama)"`` session does this), or use pytest's ``-k llama``.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
from collections import defaultdict
from typing import Any, ClassVar, Mapping, Optional, Sequence

import pytest
import torch

from ..config import VectorFitConfig
from ..families import Family
from ..layers import DecomposedExperts, DecomposedLayer
from ..model import VectorFitModel, get_vectorfit_model
from ..plugins import list_families
from ..targets import identify_family

__all__ = ["FamilyContract", "FAMILY_ENV", "selected_families", "output_tensor", "expected_blocks", "block_of",
           "relative_error"]

#: environment variable naming the families to test (comma-separated); unset or empty: all of them
FAMILY_ENV = "VECTORFIT_FAMILY"

_RUNS_DECOMPOSED = ("test_exact_at_initialisation", "test_forward_backward", "test_save_load_roundtrip",
                    "test_merge")


def selected_families(backend: Optional[str] = None, names: Optional[Sequence[str]] = None) -> list[Family]:
    """The registered families of ``backend`` (all backends if None), restricted to ``names`` if given and to
    the names in ``$VECTORFIT_FAMILY`` if set. A name in ``$VECTORFIT_FAMILY`` that no installed plugin
    declares is an error (a typo must not pass as "nothing to test")."""
    registry = list_families()
    wanted = [n.strip() for n in os.environ.get(FAMILY_ENV, "").split(",") if n.strip()]
    unknown = [n for n in wanted if n not in registry]
    if unknown:
        raise pytest.UsageError(f"{FAMILY_ENV} names {unknown}, which no installed plugin declares; known families:"
                                f" {', '.join(sorted(registry))}")
    out = []
    for name, family in registry.items():
        if backend is not None and family.backend != backend:
            continue
        if names is not None and name not in names:
            continue
        if wanted and name not in wanted:
            continue
        out.append(family)
    return out


def output_tensor(output: Any) -> torch.Tensor:
    """The main tensor of a model's output: the tensor itself, the first tensor of a ``ModelOutput`` /
    diffusers ``BaseOutput`` / dict (``logits``, ``last_hidden_state``, ``sample``...) or of a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        values = list(output.values())
    elif isinstance(output, (tuple, list)):
        values = list(output)
    else:
        values = [getattr(output, a, None) for a in ("logits", "last_hidden_state", "sample")]
    for value in values:
        if value is None:
            continue
        try:
            return output_tensor(value)
        except TypeError:
            continue
    raise TypeError(f"no tensor found in a model output of type {type(output).__name__}")


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max |actual - expected| / max |expected|`` (in float64)."""
    actual, expected = actual.detach().double(), expected.detach().double()
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def _place(family: Family, name: str) -> tuple[Optional[str], Optional[str]]:
    m = re.match(family.block_pattern, name)
    if m and name.startswith(m.group(0) + "."):
        return m.group(0), name[len(m.group(0)) + 1:]
    return None, None


def block_of(family: Family, module_name: str) -> Optional[str]:
    """The block prefix of ``module_name`` under the family's ``block_pattern``, or None."""
    return _place(family, module_name)[0]


def expected_blocks(model: torch.nn.Module, family: Family) -> list[str]:
    """Block prefixes (in model order) that hold at least one module the family declares (a role or fused path) or
    one of its 3-D expert parameters."""
    declared = {p for paths in family.roles.values() for p in paths} | set(family.fused) | set(family.expert_params)
    blocks: dict[str, None] = {}
    for name, _ in itertools.chain(model.named_modules(), model.named_parameters()):
        prefix, rel = _place(family, name)
        if prefix is not None and rel in declared:
            blocks.setdefault(prefix, None)
    return list(blocks)


class FamilyContract:
    """The shared battery of tests, run for every selected family. Subclass it in a ``Test*`` class.

    Class attributes a backend may set:
        backend: only the families of this backend (``"nlp"``...); None runs every registered family.
        families: only these family names (None: all of the backend's).
        partial_blocks: family name -> {block regex: roles those blocks legitimately lack}, e.g. Flux's
            single-stream blocks have no ``o``: ``{"flux": {r".*single_transformer_blocks\\.\\d+": ("o",)}}``.
            The regex is matched (``re.fullmatch``) against the block prefix.
        zero_grad_ok: family name -> regex of vector names (``re.fullmatch``) whose gradient may legitimately be
            exactly zero (dead rows, e.g. SD3's last block discards its text queries). They still need a gradient.
        known_failures: family name -> reason; the tests that run the decomposed model are marked
            ``xfail(strict=True)`` for that family (so a fix is noticed and the entry removed).
        exact_rtol: tolerance of "exact at initialisation", relative to the largest output (float32 SVD).
        same_rtol: tolerance of "same outputs" after a save/load round trip or a merge.
    """

    backend: ClassVar[Optional[str]] = None
    families: ClassVar[Optional[Sequence[str]]] = None
    partial_blocks: ClassVar[Mapping[str, Mapping[str, Sequence[str]]]] = {}
    zero_grad_ok: ClassVar[Mapping[str, str]] = {}
    known_failures: ClassVar[Mapping[str, str]] = {}
    exact_rtol: ClassVar[float] = 1e-4
    same_rtol: ClassVar[float] = 1e-5

    _built: ClassVar[dict[str, torch.nn.Module]] = {}

    # ------------------------------------------------------------------------------------------ collection
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "family" not in metafunc.fixturenames:
            return
        params = []
        for family in selected_families(self.backend, self.families):
            marks = []
            reason = self.known_failures.get(family.name)
            if reason and metafunc.function.__name__ in _RUNS_DECOMPOSED:
                marks.append(pytest.mark.xfail(reason=reason, strict=True))
            params.append(pytest.param(family, id=family.name, marks=marks))
        metafunc.parametrize("family", params)

    # ------------------------------------------------------------------------------------------ helpers
    @classmethod
    def build(cls, family: Family) -> torch.nn.Module:
        """A fresh copy of the family's tiny model (built once per family, then deep-copied)."""
        if family.tiny_model is None or family.example_input is None:
            pytest.fail(f"family {family.name!r} (backend {family.backend!r}) declares no tiny_model/example_input"
                        " factory, so the contract cannot run on it; add both to its Family record")
        key = f"{family.backend}:{family.name}"
        if key not in FamilyContract._built:
            FamilyContract._built[key] = family.tiny_model()
        return copy.deepcopy(FamilyContract._built[key])

    @staticmethod
    def run(family: Family, model: torch.nn.Module) -> torch.Tensor:
        args, kwargs = family.example_input(model)
        return output_tensor(model(*args, **kwargs))

    @staticmethod
    def perturb(vf: VectorFitModel, seed: int = 0) -> None:
        """Move every vector and head parameter away from its initial value (seeded)."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for vec in vf.vectors:
                noise = torch.randn(vec.parameter.shape, generator=gen).to(vec.parameter)
                if vec.kind == "sigma":
                    vec.parameter.mul_(1 + 0.05 * noise)
                else:
                    vec.parameter.add_(0.05 * noise)
            for p in vf.head_parameters().values():
                p.add_(0.05 * torch.randn(p.shape, generator=gen).to(p))

    def assert_close(self, actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str) -> None:
        assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
        assert torch.isfinite(actual).all(), f"{what}: non-finite outputs"
        err = relative_error(actual, expected)
        assert err <= rtol, f"{what}: max abs difference is {err:.3e} of the output scale (tolerance {rtol:.0e})"

    def allowed_missing(self, family: Family, prefix: str) -> set[str]:
        allowed: set[str] = set()
        for pattern, roles in self.partial_blocks.get(family.name, {}).items():
            if re.fullmatch(pattern, prefix):
                allowed.update(roles)
        return allowed

    # ------------------------------------------------------------------------------------------ tests
    def test_declaration(self, family: Family) -> None:
        assert family.tiny_model is not None and family.example_input is not None, (
            f"family {family.name!r} has no tiny_model/example_input factory for the contract tests")
        assert family.declared_roles, f"family {family.name!r} declares no role"
        if self.backend is not None:
            assert family.backend == self.backend

    def test_identified(self, family: Family) -> None:
        found = identify_family(self.build(family))
        assert found is not None, f"no installed plugin recognises the tiny model of {family.name!r}"
        assert found.name == family.name, (
            f"the tiny model of {family.name!r} is recognised as {found.name!r}: make its model_types, class_names"
            " or matches more specific, or declare it before the family that claims it")

    def test_roles_in_every_block(self, family: Family) -> None:
        model = self.build(family)
        blocks = expected_blocks(model, family)
        assert blocks, (f"block_pattern {family.block_pattern!r} of {family.name!r} finds no block holding a"
                        " declared module in its tiny model")
        vf = get_vectorfit_model(model, VectorFitConfig())
        found: dict[str, set[str]] = defaultdict(set)
        layers: dict[str, set[Optional[int]]] = defaultdict(set)
        for vec in vf.vectors.select(kind="sigma"):
            prefix = block_of(family, vec.module)
            assert prefix is not None, f"vector {vec.name!r} lies outside every block of {family.name!r}"
            assert vec.role in family.declared_roles, f"vector {vec.name!r} has role {vec.role!r}"
            found[prefix].add(vec.role)
            layers[prefix].add(vec.layer)
        assert list(found) == blocks, (f"blocks with vectors {list(found)} differ from the blocks holding declared"
                                       f" modules {blocks}")
        for prefix in blocks:
            missing = set(family.declared_roles) - found[prefix] - self.allowed_missing(family, prefix)
            assert not missing, f"block {prefix!r} of {family.name!r} has no vector for roles {sorted(missing)}"
        assert [layers[p] for p in blocks] == [{i} for i in range(len(blocks))], "blocks are not numbered 0, 1, ..."
        for head in vf.modules_to_save:
            assert not any(n == head or n.startswith(head + ".") for n in vf.decomposed_layers()), (
                f"head {head!r} is both decomposed and trained in full")

    def test_exact_at_initialisation(self, family: Family) -> None:
        model = self.build(family)
        with torch.no_grad():
            reference = self.run(family, model)
        vf = get_vectorfit_model(model, VectorFitConfig())
        vf.eval()
        with torch.no_grad():  # dense path: U diag(s) V^T rebuilt once
            dense = self.run(family, vf)
        self.assert_close(dense, reference, self.exact_rtol, f"{family.name}: decomposed (eval, no grad) vs original")
        factored = self.run(family, vf)  # grad enabled: the factored path U (s * (V^T x))
        self.assert_close(factored, reference, self.exact_rtol, f"{family.name}: decomposed (factored) vs original")

    def test_forward_backward(self, family: Family) -> None:
        vf = get_vectorfit_model(self.build(family), VectorFitConfig())
        assert len(vf.vectors) > 0
        out = self.run(family, vf)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(out)
        (out * weights).sum().backward()  # random weights: no cancellation through a normalisation
        no_grad, zero = [], []
        may_be_zero = self.zero_grad_ok.get(family.name)
        for vec in vf.vectors:
            grad = vec.parameter.grad
            if grad is None or not torch.isfinite(grad).all():
                no_grad.append(vec.name)
            elif may_be_zero and re.fullmatch(may_be_zero, vec.name):
                continue
            elif vec.kind == "sigma" and not grad.abs().sum() > 0:
                zero.append(vec.name)
            elif vec.kind == "bias" and vec.role != "k" and not grad.abs().sum() > 0:
                zero.append(vec.name)  # a key bias shifts every attention logit equally: its gradient may be 0
        assert not no_grad, f"no (finite) gradient reaches {no_grad}"
        assert not zero, f"the gradient of {zero} is zero"
        heads = vf.head_parameters()
        missing = [n for n, p in heads.items() if p.grad is None]
        assert not missing, f"no gradient reaches the head parameters {missing}"
        trainable = {id(v.parameter) for v in vf.vectors} | {id(p) for p in heads.values()}
        stray = [n for n, p in vf.get_base_model().named_parameters() if p.requires_grad and id(p) not in trainable]
        assert not stray, f"parameters outside the vectors and heads train: {stray[:5]}"

    def test_save_load_roundtrip(self, family: Family, tmp_path) -> None:
        fresh = self.build(family)
        vf = get_vectorfit_model(self.build(family), VectorFitConfig())
        self.perturb(vf)
        vf.eval()
        with torch.no_grad():
            expected = self.run(family, vf)
        vf.save_pretrained(tmp_path)
        loaded = VectorFitModel.from_pretrained(fresh, tmp_path)
        assert loaded.vectors.names() == vf.vectors.names()
        for vec in vf.vectors:
            assert torch.equal(loaded.vectors[vec.name].parameter, vec.parameter), f"{vec.name} differs after loading"
        for name, p in vf.head_parameters().items():
            assert torch.equal(loaded.head_parameters()[name], p), f"head parameter {name} differs after loading"
        with torch.no_grad():
            actual = self.run(family, loaded)
        self.assert_close(actual, expected, self.same_rtol, f"{family.name}: reloaded adapter vs saved model")

    def test_merge(self, family: Family) -> None:
        model = self.build(family)
        names = [n for n, _ in model.named_parameters()]
        vf = get_vectorfit_model(model, VectorFitConfig())
        self.perturb(vf)
        vf.eval()
        with torch.no_grad():
            unmerged = self.run(family, vf)
        merged = vf.merge_and_unload()
        left = [n for n, m in merged.named_modules() if isinstance(m, (DecomposedLayer, DecomposedExperts))]
        assert not left, f"decomposed layers left after merge_and_unload: {left[:5]}"
        assert [n for n, _ in merged.named_parameters()] == names, "merging changed the parameter names"
        with torch.no_grad():
            actual = self.run(family, merged)
        self.assert_close(actual, unmerged, self.same_rtol, f"{family.name}: merged vs unmerged")
