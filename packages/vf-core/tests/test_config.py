"""VectorFitConfig: defaults, variants of the method spec, and errors that name the field."""

from __future__ import annotations

import pytest

from vf_core import ConfigError, VectorFitConfig, VectorFitError


def test_defaults():
    cfg = VectorFitConfig()
    assert cfg.method == "vectorfit" and cfg.roles == ["q", "k", "v", "o", "f1", "f2"]
    assert cfg.bias_trained and cfg.sigma_trained
    assert not VectorFitConfig(method="svfit").bias_trained
    assert VectorFitConfig(method="svfit").svfit_rank_or_energy == (16, None)


@pytest.mark.parametrize("kwargs, field", [
    ({"methd": "vectorfit"}, "methd"),
    ({"method": "lora"}, "method"),
    ({"roles": ["q", "x"]}, "roles"),
    ({"roles": []}, "roles"),
    ({"rank": 0}, "rank"),
    ({"rank": -3}, "rank"),
    ({"energy": 0.0}, "energy"),
    ({"energy": 1.5}, "energy"),
    ({"pattern": "diagonal"}, "pattern"),
    ({"off_diagonals": -1}, "off_diagonals"),
    ({"train_sigma": "maybe"}, "train_sigma"),
    ({"svd_dtype": "float16"}, "svd_dtype"),
])
def test_bad_fields_raise_config_error_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError) as info:
        VectorFitConfig(**kwargs)
    assert field in str(info.value) and field in info.value.fields[0]
    assert isinstance(info.value, VectorFitError) and isinstance(info.value, ValueError)


def test_cross_field_errors():
    with pytest.raises(ConfigError, match="rank"):
        VectorFitConfig(method="svfit", rank=4, energy=0.9)
    with pytest.raises(ConfigError, match="nothing would train"):
        VectorFitConfig(train_sigma=False, train_bias=False)


def test_assignment_is_validated_and_round_trips():
    cfg = VectorFitConfig(roles=["q", "v"], train_bias=False)
    with pytest.raises(ConfigError, match="rank"):
        cfg.rank = -1
    again = VectorFitConfig.model_validate(cfg.model_dump(mode="json"))
    assert again == cfg


def test_paper_variants_are_expressible():
    VectorFitConfig(roles=["q", "k", "v", "o"], train_bias=False)  # attention singular values
    VectorFitConfig(train_bias=False)  # VectorFit(Sigma)
    VectorFitConfig(target_modules={"q": ["query"]}, fused_modules={"c_attn": ["q", "k", "v"]})


def test_model_validate_names_the_field():
    with pytest.raises(ConfigError) as info:
        VectorFitConfig.model_validate({"rank": 0})
    assert info.value.fields == ("rank",)
