"""Tiny modules shared by vf-core's tests (no transformers needed; they live in :mod:`vf_core.testing.tiny`), the
check every structural-inference test ends with, and the check that a refused call left the user's model as it was."""

import torch
from torch import nn
from vf_core import VectorFitConfig, get_vectorfit_model
from vf_core.testing.tiny import TINY_ROLES, Block, Conv1D, TinyNet

__all__ = ["TINY_ROLES", "Block", "Conv1D", "TinyNet", "assert_inferred_exact_and_trainable", "snapshot",
           "assert_untouched"]


def assert_inferred_exact_and_trainable(net, x, roles=("q", "k", "v", "o", "f1", "f2")):
    """Inject ``net`` with the default config (no module names) and assert: the family is inferred, exactly
    ``roles`` are decomposed, the output on ``x`` is unchanged, and every singular-value vector gets a gradient.
    Returns the VectorFitModel."""
    torch.manual_seed(0)
    net.eval()
    with torch.no_grad():
        expected = net(x)
    vf = get_vectorfit_model(net, VectorFitConfig())
    assert vf.family.origin == "inferred"
    assert {v.role for v in vf.vectors} == set(roles)
    with torch.no_grad():
        torch.testing.assert_close(vf(x), expected, atol=1e-5, rtol=1e-4)
    vf(x).pow(2).mean().backward()
    assert all(v.parameter.grad is not None and v.parameter.grad.abs().sum() > 0
               for v in vf.vectors.select(kind="sigma"))
    return vf


def snapshot(model: nn.Module):
    """What :func:`assert_untouched` compares: the state (cloned), the trainable flags and the module classes."""
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {n: p.requires_grad for n, p in model.named_parameters()},
            {n: type(m) for n, m in model.named_modules()})


def assert_untouched(model: nn.Module, snap) -> None:
    """``model`` is as :func:`snapshot` saw it: the same modules, flags, state keys, dtypes and values (NaN equal)."""
    state, flags, types = snap
    assert {n: type(m) for n, m in model.named_modules()} == types
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert model.state_dict().keys() == state.keys()
    for k, v in model.state_dict().items():
        assert v.dtype == state[k].dtype, k
        assert torch.equal(v, state[k]) or torch.allclose(v, state[k], equal_nan=True, rtol=0, atol=0), k
