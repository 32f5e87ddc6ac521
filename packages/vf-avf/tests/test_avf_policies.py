"""The built-in policies on constructed values: hand-computed EMA and top-k, overtaking, seeded baselines."""

from __future__ import annotations

import pytest
import torch

from vf_core import ConfigError
from vf_avf import AVFConfig, VectorFreezer, strengths

from avf_helpers import constant_registry, set_strengths


def run(freezer, registry, values_by_step, last_step):
    """Step the freezer from 0 to ``last_step``, setting the vectors' values first where given."""
    frozen = {}
    for step in range(last_step + 1):
        if step in values_by_step:
            set_strengths(registry, values_by_step[step])
        frozen[step] = set(freezer.step(step))
    return frozen


def test_topk_ema_matches_a_hand_computation_and_unfreezes_when_overtaken():
    registry = constant_registry("abcd")
    freezer = VectorFreezer(registry, AVFConfig(t_i=2, t_f=3, n_f=3, k=2, beta=0.5))
    values = {
        0: {"a": 9.0, "b": 9.0, "c": 9.0, "d": 9.0},   # before t_i: ignored (EMA only at AVF steps)
        2: {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0},   # S' = a 2, b 1.5, c 1, d 0.5
        3: {"a": 0.0, "b": 0.0, "c": 50.0, "d": 50.0},  # between AVF steps: ignored
        5: {"a": 4.0, "b": 3.0, "c": 10.0, "d": 1.0},  # S' = a 3, b 2.25, c 5.5, d 0.75: c overtakes b
        8: {"a": 4.0, "b": 3.0, "c": 10.0, "d": 12.0},  # S' = a 3.5, b 2.625, c 7.75, d 6.375: d overtakes a
    }
    frozen = run(freezer, registry, values, 10)
    assert [frozen[s] for s in range(11)] == [set()] * 2 + [{"a", "b"}] * 3 + [{"a", "c"}] * 3 + [{"c", "d"}] * 3
    assert [(r.step, r.frozen) for r in freezer.history] == [(2, ("a", "b")), (5, ("a", "c")), (8, ("c", "d"))]
    assert [r.scores for r in freezer.history] == [
        {"a": 2.0, "b": 1.5, "c": 1.0, "d": 0.5},
        {"a": 3.0, "b": 2.25, "c": 5.5, "d": 0.75},
        {"a": 3.5, "b": 2.625, "c": 7.75, "d": 6.375},
    ]
    assert freezer.policy.updates == 3


def test_topk_ema_with_the_papers_beta_is_exactly_the_formula():
    registry = constant_registry("abcdef")
    freezer = VectorFreezer(registry, AVFConfig(t_i=1, t_f=2, n_f=4, k=3))
    expected = dict.fromkeys("abcdef", 0.0)
    for step in range(9):
        values = {n: float((step * (i + 3)) % 7) * 0.125 for i, n in enumerate("abcdef")}
        set_strengths(registry, values)
        freezer.step(step)
        if step in (1, 3, 5, 7):
            expected = {n: 0.99 * expected[n] + (1 - 0.99) * values[n] for n in "abcdef"}
            top = sorted("abcdef", key=lambda n: (-expected[n], "abcdef".index(n)))[:3]
            assert freezer.history[-1].scores == expected
            assert freezer.frozen == frozenset(top)


def test_topk_ema_every_step_option():
    registry = constant_registry("abc")
    freezer = VectorFreezer(registry, AVFConfig(t_i=2, t_f=2, n_f=1, k=1, beta=0.5, ema_every_step=True))
    run(freezer, registry, {0: {"a": 8.0, "b": 0.0, "c": 0.0}, 1: {"a": 0.0, "b": 4.0, "c": 0.0},
                            2: {"a": 0.0, "b": 0.0, "c": 4.0}}, 2)
    # S' after steps 0, 1, 2: a 4, 2, 1; b 0, 2, 1; c 0, 0, 2 -> c is the top at the AVF step 2
    assert freezer.history[0].scores == {"a": 1.0, "b": 1.0, "c": 2.0}
    assert freezer.frozen == {"c"} and freezer.policy.updates == 3


def test_ties_go_to_registry_order():
    registry = constant_registry("abcd")
    freezer = VectorFreezer(registry, AVFConfig(t_i=0, t_f=1, n_f=1, k=2))
    set_strengths(registry, {"a": 1.0, "b": 2.0, "c": 2.0, "d": 2.0})
    assert freezer.step(0) == {"b", "c"}


def test_k_larger_than_the_number_of_vectors():
    with pytest.raises(ConfigError) as info:
        VectorFreezer(constant_registry("ab"), AVFConfig(k=3, t_i=1, t_f=1, n_f=1))
    assert info.value.fields == ("k",)


def test_random_policy_is_seeded_and_freezes_k_distinct_vectors():
    def frozen_sets(seed):
        registry = constant_registry("abcdefgh")
        freezer = VectorFreezer(registry, AVFConfig(policy="random", t_i=1, t_f=2, n_f=5, k=3, seed=seed))
        for step in range(12):
            freezer.step(step)
        return [r.frozen for r in freezer.history]

    first = frozen_sets(0)
    assert first == frozen_sets(0) and first != frozen_sets(1)
    assert all(len(set(f)) == 3 for f in first) and len(set(first)) > 1


def test_dropout_freezes_each_vector_with_probability_p_at_every_step():
    registry = constant_registry([f"v{i}" for i in range(20)])
    freezer = VectorFreezer(registry, AVFConfig(policy="dropout", p=0.25, seed=3))
    counts = [len(freezer.step(step)) for step in range(200)]
    assert freezer.history == []  # record_history is off by default
    assert abs(sum(counts) / (200 * 20) - 0.25) < 0.03
    changes = sum(1 for s in range(1, 200) if counts[s] != counts[s - 1])
    assert changes > 100  # a fresh draw at every step
    again = VectorFreezer(constant_registry([f"v{i}" for i in range(20)]), AVFConfig(policy="dropout", p=0.25, seed=3))
    assert [len(again.step(step)) for step in range(200)] == counts


def test_dropout_can_record_history():
    registry = constant_registry("abc")
    freezer = VectorFreezer(registry, AVFConfig(policy="dropout", p=0.5, record_history=True))
    for step in range(4):
        freezer.step(step)
    assert [r.step for r in freezer.history] == [0, 1, 2, 3] and set(freezer.history[0].scores) == set("abc")


def test_none_policy_never_freezes():
    registry = constant_registry("abc")
    freezer = VectorFreezer(registry, {"policy": "none"})
    set_strengths(registry, {"a": 5.0})
    assert all(freezer.step(step) == frozenset() for step in range(5)) and freezer.history == []


def test_frozen_grads_are_dropped_and_requires_grad_kept():
    registry = constant_registry("abc")
    freezer = VectorFreezer(registry, AVFConfig(t_i=0, t_f=1, n_f=1, k=1))
    set_strengths(registry, {"a": 1.0, "b": 2.0, "c": 0.5})
    for vec in registry:
        vec.parameter.grad = torch.ones(4)
    assert freezer.step(0) == {"b"}
    assert registry["b"].parameter.grad is None and registry["b"].parameter.requires_grad
    assert registry["a"].parameter.grad is not None and registry["c"].parameter.grad is not None


def test_strengths_match_the_core_definition():
    registry = constant_registry("ab", dim=3)
    with torch.no_grad():
        registry["a"].parameter.copy_(torch.tensor([0.5, -0.25, 1.0]))
    assert strengths(registry) == {v.name: v.strength() for v in registry}
    assert strengths(registry)["a"] == pytest.approx(1.75 / 3) and strengths(registry)["b"] == 0.0
