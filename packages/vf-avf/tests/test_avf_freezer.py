"""The freezer in a plain PyTorch loop: frozen vectors do not move at all, and resuming is bit-identical."""

from __future__ import annotations

import json

import pytest
import torch

from vf_avf import AVFConfig, FreezerStateError, VectorFreezer

from avf_helpers import batch, loss_of, optimizer_state, snapshot, tiny_vf, trainable

OPTIMIZERS = {
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.05, weight_decay=0.1),
    "adamw-foreach": lambda params: torch.optim.AdamW(params, lr=0.05, weight_decay=0.1, foreach=True),
    "adamw-fused": lambda params: torch.optim.AdamW(params, lr=0.05, weight_decay=0.1, fused=True),
    "sgd-momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=0.1),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_a_frozen_vector_does_not_move_even_with_momentum_and_weight_decay(name):
    vf = tiny_vf()
    opt = OPTIMIZERS[name](trainable(vf))
    for step in range(3):  # every vector gets momentum first
        loss_of(vf, step).backward()
        opt.step()
        opt.zero_grad()
    assert all(optimizer_state(opt, v.parameter) for v in vf.vectors)
    freezer = VectorFreezer(vf, AVFConfig(t_i=3, t_f=10, n_f=1, k=4))
    before, state_before = None, None
    for step in range(3, 7):
        loss_of(vf, step).backward()
        frozen = freezer.step(step)
        if before is None:
            assert len(frozen) == 4
            before = snapshot(vf)
            state_before = {n: optimizer_state(opt, vf.vectors[n].parameter) for n in frozen}
        opt.step()
        opt.zero_grad()
    after = snapshot(vf)
    moved = {v.name for v in vf.vectors if not torch.equal(after[_pname(vf, v.name)], before[_pname(vf, v.name)])}
    assert moved == set(vf.vectors.names()) - set(frozen)
    for n in frozen:
        assert vf.vectors[n].parameter.requires_grad
        for key, value in state_before[n].items():  # no momentum update, not even the step count
            assert torch.equal(torch.as_tensor(optimizer_state(opt, vf.vectors[n].parameter)[key]),
                               torch.as_tensor(value)), (n, key)


def _pname(vf, vector_name):
    target = vf.vectors[vector_name].parameter
    return next(n for n, p in vf.named_parameters() if p is target)


CONFIGS = {
    "topk_ema": {"policy": "topk_ema", "t_i": 3, "t_f": 3, "n_f": 3, "k": 5},
    "topk_ema-options": {"policy": "topk_ema", "t_i": 0.25, "t_f": 0.15, "n_f": 3, "k": 5, "beta": 0.9,
                         "ema_every_step": True, "unfreeze_after_last": True},
    "random": {"policy": "random", "t_i": 2, "t_f": 4, "n_f": 3, "k": 6, "seed": 5},
    "dropout": {"policy": "dropout", "p": 0.3, "seed": 2, "record_history": True},
}
TOTAL = 16


def train(config, steps, *, vf=None, opt=None, freezer=None):
    vf = vf or tiny_vf()
    opt = opt or torch.optim.AdamW(trainable(vf), lr=0.05, weight_decay=0.01)
    freezer = freezer or VectorFreezer(vf, config, total_steps=TOTAL)
    for step in steps:
        loss_of(vf, step).backward()
        freezer.step(step)
        opt.step()
        opt.zero_grad()
    return vf, opt, freezer


@pytest.mark.parametrize("stop", [5, 9])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_resuming_from_the_state_dict_is_bit_identical(name, stop, tmp_path):
    config = CONFIGS[name]
    ref_vf, _, ref_freezer = train(config, range(TOTAL))

    vf, opt, freezer = train(config, range(stop))
    torch.save({"model": vf.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    freezer.save(tmp_path / "avf.json")
    del vf, opt, freezer

    vf = tiny_vf()
    ckpt = torch.load(tmp_path / "ckpt.pt")
    vf.load_state_dict(ckpt["model"])
    opt = torch.optim.AdamW(trainable(vf), lr=0.05, weight_decay=0.01)
    opt.load_state_dict(ckpt["opt"])
    freezer = VectorFreezer(vf, AVFConfig.model_validate(config), total_steps=TOTAL)
    freezer.load(tmp_path / "avf.json")
    train(config, range(stop, TOTAL), vf=vf, opt=opt, freezer=freezer)

    assert freezer.history == ref_freezer.history and freezer.frozen == ref_freezer.frozen
    ref, got = snapshot(ref_vf), snapshot(vf)
    assert all(torch.equal(ref[n], got[n]) for n in ref)
    assert freezer.state_dict() == json.loads(json.dumps(ref_freezer.state_dict()))


def test_freezing_changes_training():
    plain, _, _ = train({"policy": "none"}, range(TOTAL))
    avf, _, freezer = train(CONFIGS["topk_ema"], range(TOTAL))
    assert [r.step for r in freezer.history] == [3, 6, 9]
    assert any(not torch.equal(a, b) for a, b in zip(snapshot(plain).values(), snapshot(avf).values()))


def test_state_from_another_model_or_policy_is_rejected(tmp_path):
    _, _, freezer = train(CONFIGS["topk_ema"], range(4))
    state = freezer.state_dict()
    with pytest.raises(FreezerStateError, match="policy 'topk_ema'"):
        VectorFreezer(tiny_vf(), {"policy": "random", "k": 2, "t_i": 1, "t_f": 1, "n_f": 1}).load_state_dict(state)
    other = dict(state, vectors=state["vectors"][:-1])
    with pytest.raises(FreezerStateError, match="another set of vectors"):
        VectorFreezer(tiny_vf(), CONFIGS["topk_ema"]).load_state_dict(other)
    with pytest.raises(FreezerStateError, match="format"):
        VectorFreezer(tiny_vf(), CONFIGS["topk_ema"]).load_state_dict({"format": "x"})
    with pytest.warns(UserWarning, match="k: 5 -> 4"):
        VectorFreezer(tiny_vf(), dict(CONFIGS["topk_ema"], k=4)).load_state_dict(state)
    with pytest.raises(FreezerStateError, match="no freezer state"):
        VectorFreezer(tiny_vf(), CONFIGS["topk_ema"]).load(tmp_path / "missing.json")


def test_accepts_models_registries_and_ddp_like_wrappers():
    vf = tiny_vf()

    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    for source in (vf, vf.vectors, Wrapper(vf), list(vf.vectors)):
        assert VectorFreezer(source, {"policy": "none"}).vectors.names() == vf.vectors.names()
    with pytest.raises(TypeError, match="VectorFitModel"):
        VectorFreezer(vf.get_base_model(), {"policy": "none"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("fused", [False, True])
def test_a_frozen_vector_does_not_move_on_cuda(fused):
    vf = tiny_vf().cuda()
    opt = torch.optim.AdamW(trainable(vf), lr=0.05, weight_decay=0.1, fused=fused)
    freezer = VectorFreezer(vf, AVFConfig(t_i=2, t_f=10, n_f=1, k=4))
    for step in range(5):
        x, y = (t.cuda() for t in batch(step))
        torch.nn.functional.cross_entropy(vf(x), y).backward()
        frozen = freezer.step(step)
        if step == 2:
            before = {n: vf.vectors[n].parameter.detach().clone() for n in frozen}
        opt.step()
        opt.zero_grad()
    assert len(frozen) == 4 and all(torch.equal(before[n], vf.vectors[n].parameter) for n in frozen)
    assert set(freezer.history[0].scores) == set(vf.vectors.names())
