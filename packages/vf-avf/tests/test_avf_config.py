"""AVFConfig: resolution of ``policy`` to the registered config class, validation naming the field."""

from __future__ import annotations

import json
from typing import Optional

import pytest

from vf_core import ConfigError, PolicyNotFoundError
from vf_core.strict import StrictModel
from vf_avf import AVFConfig, DropoutConfig, NoFreezingConfig, RandomConfig, Schedule, TopKEMAConfig


def test_default_is_the_papers_avf():
    cfg = AVFConfig()
    assert type(cfg) is TopKEMAConfig and isinstance(cfg, AVFConfig)
    assert (cfg.policy, cfg.t_i, cfg.t_f, cfg.n_f, cfg.k, cfg.beta) == ("topk_ema", 0.4, 0.05, 5, 5, 0.99)
    assert (cfg.ema_every_step, cfg.unfreeze_after_last) == (False, False)


@pytest.mark.parametrize("data, cls", [
    ({"policy": "topk_ema", "t_i": 800, "t_f": 70, "n_f": 27, "k": 5}, TopKEMAConfig),
    ({"policy": "random", "t_i": 10, "t_f": 2, "n_f": 3, "k": 2, "seed": 4}, RandomConfig),
    ({"policy": "dropout", "p": 0.25, "seed": 1}, DropoutConfig),
    ({"policy": "none"}, NoFreezingConfig),
])
def test_resolves_by_constructor_validate_and_json(data, cls):
    for cfg in (AVFConfig(**data), AVFConfig.model_validate(data), AVFConfig.model_validate_json(json.dumps(data)),
                AVFConfig.model_validate(cls(**data))):
        assert type(cfg) is cls
        assert cfg.model_dump() == cls(**data).model_dump()
    assert AVFConfig.model_validate(cls(**data).model_dump()) == cls(**data)


def test_unknown_policy_lists_the_installed_ones():
    with pytest.raises(PolicyNotFoundError) as info:
        AVFConfig(policy="freeze_everything", k=2)
    message = str(info.value)
    assert "'freeze_everything'" in message and "topk_ema" in message and "dropout" in message
    assert isinstance(info.value, KeyError)
    with pytest.raises(PolicyNotFoundError):
        AVFConfig.model_validate({"policy": "nope"})


@pytest.mark.parametrize("data, field", [
    ({"k": 0}, "k"), ({"t_f": 0}, "t_f"), ({"n_f": 0}, "n_f"), ({"t_i": -1}, "t_i"), ({"beta": 1.0}, "beta"),
    ({"t_i": 800.0}, "t_i"), ({"t_f": 1.5}, "t_f"), ({"t_i": 1.0}, "t_i"), ({"t_f": 0.0}, "t_f"),
    ({"t_i": True}, "t_i"), ({"bta": 0.9}, "bta"), ({"policy": "random", "beta": 0.9}, "beta"),
    ({"policy": "dropout", "p": 1.5}, "p"), ({"policy": "dropout", "k": 3}, "k"), ({"policy": "none", "k": 1}, "k"),
    ({"policy": 3}, "policy"),
])
def test_bad_fields_raise_config_error_naming_them(data, field):
    for build in (lambda: AVFConfig(**data), lambda: AVFConfig.model_validate(data),
                  lambda: AVFConfig.model_validate_json(json.dumps(data))):
        with pytest.raises(ConfigError) as info:
            build()
        assert field in info.value.fields and field in str(info.value)


def test_assignment_is_validated():
    cfg = AVFConfig(k=2)
    with pytest.raises(ConfigError, match="k"):
        cfg.k = -1


def test_a_field_typed_avfconfig_resolves_the_policy():
    class Recipe(StrictModel):
        avf: Optional[AVFConfig] = None

    recipe = Recipe(avf={"policy": "dropout", "p": 0.5})
    assert type(recipe.avf) is DropoutConfig and recipe.avf.p == 0.5
    assert Recipe.model_validate_json(recipe.model_dump_json()) == recipe
    with pytest.raises(ConfigError, match="avf"):
        Recipe(avf={"policy": "dropout", "k": 1})


def test_fractions_resolve_against_total_steps():
    cfg = AVFConfig(t_i=0.4, t_f=0.05, n_f=5)
    assert Schedule.from_config(cfg, 1000).steps == (400, 450, 500, 550, 600)
    assert Schedule.resolve(0.29, 0.07, 2, 100).steps == (29, 36)  # rounds to nearest, not down
    assert Schedule.resolve(10, 0.1, 3, 50).steps == (10, 15, 20)  # steps and fractions mix
    with pytest.raises(ConfigError, match="total_steps") as info:
        Schedule.from_config(cfg, None)
    assert info.value.fields == ("t_i",)
    with pytest.raises(ConfigError) as info:
        Schedule.resolve(0, 0.001, 2, 100)
    assert info.value.fields == ("t_f",)
    with pytest.warns(UserWarning, match="never happen"):
        Schedule.resolve(90, 5, 4, 100)
