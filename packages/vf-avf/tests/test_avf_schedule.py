"""Scheduled policies act at exactly ``t_i, t_i + t_f, ..., t_i + (n_f - 1) t_f`` and never elsewhere."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vf_avf import AVFConfig, Schedule, VectorFreezer

from avf_helpers import constant_registry


@settings(max_examples=60, deadline=None)
@given(t_i=st.integers(0, 30), t_f=st.integers(1, 9), n_f=st.integers(1, 6), extra=st.integers(0, 20))
def test_schedule_membership_matches_the_formula(t_i, t_f, n_f, extra):
    schedule = Schedule(t_i, t_f, n_f)
    expected = [t_i + i * t_f for i in range(n_f)]
    horizon = t_i + n_f * t_f + extra
    assert [s for s in range(horizon) if s in schedule] == expected == list(schedule.steps)
    assert schedule.last == expected[-1] and schedule.end == t_i + n_f * t_f


@pytest.mark.parametrize("policy", ["topk_ema", "random"])
@settings(max_examples=15, deadline=None)
@given(t_i=st.integers(0, 12), t_f=st.integers(1, 5), n_f=st.integers(1, 4), every=st.booleans())
def test_freezer_decides_at_avf_steps_only(policy, t_i, t_f, n_f, every):
    registry = constant_registry("abcdef")
    extra = {"ema_every_step": every} if policy == "topk_ema" else {"seed": int(every)}
    freezer = VectorFreezer(registry, AVFConfig(policy=policy, t_i=t_i, t_f=t_f, n_f=n_f, k=2, **extra))
    expected = [t_i + i * t_f for i in range(n_f)]
    changes, previous = [], freezer.frozen
    for step in range(t_i + n_f * t_f + 6):
        with torch.no_grad():  # values change at every step, so a decision off-schedule would show
            for i, vec in enumerate(registry):
                vec.parameter.fill_(float((step * 7 + i * 3) % 11))
        frozen = freezer.step(step)
        if frozen != previous:
            changes.append(step)
        previous = frozen
        if step < t_i:
            assert frozen == frozenset()
        else:
            assert len(frozen) == 2  # the last frozen set stays after the last AVF step (the default)
    assert [r.step for r in freezer.history] == expected
    assert set(changes) <= set(expected)


def test_fractions_fire_at_the_resolved_steps():
    registry = constant_registry("abc")
    freezer = VectorFreezer(registry, AVFConfig(t_i=0.4, t_f=0.1, n_f=3, k=1), total_steps=50)
    assert freezer.avf_steps == (20, 25, 30)
    for step in range(50):
        freezer.step(step)
    assert [r.step for r in freezer.history] == [20, 25, 30]


@pytest.mark.parametrize("policy", ["topk_ema", "random"])
def test_unfreeze_after_last_option(policy):
    registry = constant_registry("abcd")
    set_values = {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}
    with torch.no_grad():
        for name, value in set_values.items():
            registry[name].parameter.fill_(value)
    freezer = VectorFreezer(registry, AVFConfig(policy=policy, t_i=2, t_f=3, n_f=2, k=2, unfreeze_after_last=True))
    frozen = [freezer.step(step) for step in range(12)]
    assert [len(f) for f in frozen] == [0, 0, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0]  # AVF at 2, 5; all train from 8
    assert [r.step for r in freezer.history] == [2, 5, 8] and freezer.history[-1].frozen == ()


def test_steps_must_come_in_order():
    freezer = VectorFreezer(constant_registry("ab"), AVFConfig(t_i=3, t_f=2, n_f=2, k=1))
    freezer.step(0)
    freezer.step(0)  # the same step again: only re-applies
    freezer.step(1)
    freezer.step(2)
    with pytest.raises(ValueError, match="went back"):
        freezer.step(1)
    with pytest.warns(UserWarning, match=r"AVF steps \[3\] were missed"):
        freezer.step(4)
    with pytest.raises(ValueError, match="int >= 0"):
        freezer.step(-1)
