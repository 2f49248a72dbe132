"""The model variants: one registry of names, each a description and the model config fields it
sets. Torch-free, so that both checkpoint readers (training's and the exporter's) expand the
``model.variant`` a stored config names into the same fields.

Two kinds of names, both in :data:`VARIANT_REGISTRY`:

- values of ``model.variant`` (:data:`VARIANTS`): each sets every one of :data:`VARIANT_FIELDS`
  (the fields it does not name take their defaults, :data:`FULL_FIELDS`), so that a config file or
  an old checkpoint that says ``variant = "fixed-delays"`` builds the same model as before. The
  value ``"custom"`` sets none of them: the config's own fields count.
- the other names (:data:`MODEL_VARIANTS`) are the full model (``model.variant = "full"``) with
  other config fields changed (training kernel, recurrence, neuron model); ``--variant`` applies those fields.

The model and the trainer read the fields, never the name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

__all__ = ["Variant", "VARIANT_REGISTRY", "VARIANT_FIELDS", "FULL_FIELDS", "VARIANTS", "MODEL_VARIANTS",
           "VARIANT_NAMES", "CUSTOM", "DELAY_MODES", "MATCH_PARAMS", "variant_fields", "stored_variant_fields"]

DELAY_MODES = ("learned", "fixed", "none")  # model.delays: learned, random and frozen, or no delays (one tap)
MATCH_PARAMS = ("", "wider", "deeper")  # model.match_params: sizes resolved to the full model's parameter count
CUSTOM = "custom"  # model.variant that leaves VARIANT_FIELDS to the config

# The fields a model.variant sets, at the full model's values.
FULL_FIELDS: Mapping[str, Any] = MappingProxyType({
    "delays": "learned",  # feed-forward delays: learned, fixed (random, frozen) or none (one tap per connection)
    "learn_weights": True,  # False: the weights stay at their random initial values
    "constant_sigma": False,  # True: the interpolation width stays at train.sigma_final every epoch
    "dense_kernel": False,  # True: a free kernel of kernel_size taps per connection instead of weight/delay
    "match_params": "",  # wider/deeper: width or depth chosen to match the full model's parameter count
})
VARIANT_FIELDS = tuple(FULL_FIELDS)


@dataclass(frozen=True)
class Variant:
    """A variant: what it is, and the model config fields (name -> value) it sets."""

    description: str
    fields: Mapping[str, Any] = field(default_factory=dict)


VARIANT_REGISTRY: Mapping[str, Variant] = MappingProxyType({
    # values of model.variant: each sets VARIANT_FIELDS
    "full": Variant("learned weights and delays, Gaussian kernel of decreasing width"),
    "constant-sigma": Variant("the full model with the kernel width fixed at train.sigma_final",
                              {"constant_sigma": True}),
    "fixed-delays": Variant("random delays, frozen; only the weights learn", {"delays": "fixed"}),
    "fixed-weights": Variant("random weights, frozen; only the delays learn", {"learn_weights": False}),
    "no-delays-wider": Variant("no delays (one tap per connection), wider to match the full model's "
                               "parameter count (fan-in K: 2K inputs per neuron)",
                               {"delays": "none", "match_params": "wider"}),
    "no-delays-deeper": Variant("no delays, more hidden layers and the width that match the full model's "
                                "parameter count", {"delays": "none", "match_params": "deeper"}),
    "no-delays": Variant("no delays (one tap per connection), the same sizes as the full model",
                         {"delays": "none"}),
    "dense-conv": Variant("a free kernel of kernel_size taps per connection instead of weight and delay",
                          {"dense_kernel": True}),
    # the full model with other config fields
    "interp-triangle": Variant("the full model with a triangle training kernel",
                               {"interpolation": "triangle", "learn_sigma": False}),
    "interp-bilinear": Variant("the full model with a bilinear (two-tap) training kernel",
                               {"interpolation": "bilinear", "learn_sigma": False}),
    "gauss-learned-sigma": Variant("the full model with a learned Gaussian width per element",
                                   {"interpolation": "gauss", "learn_sigma": True}),
    "triangle-learned-sigma": Variant("the full model with a learned triangle width per element",
                                      {"interpolation": "triangle", "learn_sigma": True}),
    # the recurrent variants run LIF neurons whatever the config's model.neuron (their compiled loop is the
    # LIF's; experiments/fsdd.toml defaults to adLIF)
    "recurrent": Variant("the full model with a recurrent delay synapse per hidden layer, delays learned in [1, Dr]",
                         {"recurrent": True, "recurrent_delays": "learned", "neuron": "lif"}),
    "recurrent-fixed-delays": Variant("recurrent delay synapses with random, frozen delays",
                                      {"recurrent": True, "recurrent_delays": "fixed", "neuron": "lif"}),
    "recurrent-one-step": Variant("recurrent synapses with every delay one step (a plain recurrent SNN)",
                                  {"recurrent": True, "recurrent_delays": "one-step", "neuron": "lif"}),
    "recurrent-from-one-step": Variant("recurrent delays learned, starting at one step",
                                       {"recurrent": True, "recurrent_delays": "learned",
                                        "recurrent_delay_init": "one-step", "neuron": "lif"}),
    "adlif": Variant("the full model with adaptive LIF neurons (adLIF: time constants and adaptation learned per "
                     "neuron) in the hidden layers", {"neuron": "adlif"}),
})

VARIANTS = tuple(n for n, v in VARIANT_REGISTRY.items() if set(v.fields) <= set(VARIANT_FIELDS))
MODEL_VARIANTS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {n: v.fields for n, v in VARIANT_REGISTRY.items() if n not in VARIANTS})
VARIANT_NAMES = tuple(VARIANT_REGISTRY)  # what --variant (train) and --variants (ablate, cv) take


def variant_fields(variant: str) -> dict[str, Any]:
    """The :data:`VARIANT_FIELDS` values a ``model.variant`` value sets (KeyError for another name;
    {} for ``custom``)."""
    if variant == CUSTOM:
        return {}
    if variant not in VARIANTS:
        raise KeyError(variant)
    return {**FULL_FIELDS, **VARIANT_REGISTRY[variant].fields}


def stored_variant_fields(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`VARIANT_FIELDS` of a stored ``[model]`` table (a checkpoint's config dict): those
    its ``variant`` sets, else (``custom``, or an unknown name) the table's own values with the
    full model's as defaults. Checkpoints written before the fields existed name only the variant."""
    variant = str(model_cfg.get("variant", "full"))
    if variant in VARIANTS:
        return variant_fields(variant)
    return {k: model_cfg.get(k, v) for k, v in FULL_FIELDS.items()}
