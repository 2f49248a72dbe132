"""Variants as configs: a model.variant name expands to model fields, which the model reads; old
configs and checkpoints that name only the variant build the same model; a field the variant sets
cannot be given another value unless model.variant is "custom"."""

import dataclasses

import pytest
import torch

from neuromorphic_export.model_variants import (VARIANT_FIELDS, VARIANT_REGISTRY, VARIANTS, stored_variant_fields,
                                                variant_fields)
from snn_delays.config import ConfigError, ModelConfig, config_from_dict, load_config, to_toml
from snn_delays.model import build_model, count_trainable

# 12 inputs -> 10 -> 10 -> 4 outputs, 7 taps, one element per connection
SIZES = dict(input_size=12, n_classes=4, hidden_size=10, n_layers=2, kernel_size=7, dropout=0.0)
CONNECTIONS = 12 * 10 + 10 * 10 + 10 * 4  # 260
NORM = 2 * 10 * 2  # BatchNorm weight and bias of the two hidden layers

# Trainable parameters by hand: weights (260) + delays (260) + BatchNorm (40), what each variant freezes or replaces.
HAND_COUNTS = {
    "full": 2 * CONNECTIONS + NORM,
    "constant-sigma": 2 * CONNECTIONS + NORM,
    "fixed-delays": CONNECTIONS + NORM,
    "fixed-weights": CONNECTIONS + NORM,
    "dense-conv": 7 * CONNECTIONS + NORM,  # a free 7-tap kernel per connection
}


def _trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() * int(bool(p.requires_grad)) for n, p in model.named_parameters()
               if not n.endswith(".mask"))


@pytest.mark.parametrize("name", list(HAND_COUNTS))
def test_old_configs_naming_a_variant_build_the_same_model(name):
    # a config dict as old checkpoints and config files hold it: the variant, none of the fields
    cfg = config_from_dict({"model": {**SIZES, "variant": name}})
    assert {k: getattr(cfg.model, k) for k in VARIANT_FIELDS} == variant_fields(name)
    model = build_model(cfg)
    assert _trainable(model) == HAND_COUNTS[name] == count_trainable(cfg.model)


def test_the_model_reads_the_fields_not_the_name():
    fixed = build_model(ModelConfig(**SIZES, variant="custom", delays="fixed", learn_weights=False))
    assert not any(p.requires_grad for n, p in fixed.named_parameters() if n.endswith(("delay", "weight"))
                   and "norm" not in n)
    assert _trainable(fixed) == NORM
    none = build_model(ModelConfig(**SIZES, variant="custom", delays="none"))
    assert all(s.kernel_size == 1 for s in none.synapses())
    assert _trainable(none) == CONNECTIONS + NORM


def test_no_delay_variants_resolve_their_sizes_from_match_params():
    wider = build_model(ModelConfig(**SIZES, variant="no-delays-wider"))
    assert wider.config.delays == "none" and wider.config.match_params == "wider"
    assert wider.config.hidden_size > SIZES["hidden_size"]
    full = 2 * CONNECTIONS + NORM
    assert abs(_trainable(wider) - full) <= 2 * (12 + 10 + 4) + 2  # within one neuron of the full count


def test_a_field_the_variant_sets_is_refused_unless_custom():
    with pytest.raises(ConfigError, match='model.variant = "custom"'):
        load_config("synthetic", ["model.learn_weights=false"])
    with pytest.raises(ConfigError, match="fixed-delays"):
        config_from_dict({"model": {"variant": "fixed-delays", "delays": "learned"}})
    cfg = load_config("synthetic", ['model.variant="custom"', "model.learn_weights=false"])
    assert cfg.model.learn_weights is False
    again = config_from_dict(__import__("tomllib").loads(to_toml(cfg)))  # a custom config survives its TOML
    assert again == cfg
    # the variant name sets every one of its fields, so replacing it builds that variant
    back = dataclasses.replace(ModelConfig(variant="no-delays-deeper"), variant="full")
    assert {k: getattr(back, k) for k in VARIANT_FIELDS} == variant_fields("full")


def test_invalid_fields_are_refused():
    with pytest.raises(ConfigError, match="model.delays"):
        ModelConfig(variant="custom", delays="sometimes").validate()
    with pytest.raises(ConfigError, match="match_params"):
        ModelConfig(variant="custom", match_params="wider").validate()  # needs delays = "none"


def test_stored_fields_for_the_exporter():
    assert stored_variant_fields({"variant": "dense-conv"})["dense_kernel"] is True
    assert stored_variant_fields({"variant": "no-delays-deeper"})["match_params"] == "deeper"
    assert stored_variant_fields({})["delays"] == "learned"  # no variant: the full model
    custom = stored_variant_fields({"variant": "custom", "dense_kernel": True})
    assert custom["dense_kernel"] is True and custom["delays"] == "learned"


def test_one_registry_with_descriptions():
    assert set(VARIANTS) <= set(VARIANT_REGISTRY)
    assert all(v.description for v in VARIANT_REGISTRY.values())
    assert all(set(VARIANT_REGISTRY[n].fields) <= set(VARIANT_FIELDS) for n in VARIANTS)
