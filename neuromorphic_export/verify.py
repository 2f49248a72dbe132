"""Compare the simulator's runs of exported networks with the model's own outputs (numpy only).

The caller (``snn-delays verify``) runs the PyTorch model in float64 eval mode and passes its
predictions and hidden spikes here; this module never imports the training code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .network import Network
from .simulate import Convention, simulate

__all__ = ["VerifyResult", "compare_runs", "verify_network", "format_table"]


@dataclass
class VerifyResult:
    """One exported network against the model on n samples.

    spike_mismatches[k]: hidden-layer-k (step, sample, neuron) entries that differ from the model's,
    after shifting the simulator's spikes back by the runtime's latency ((k + 1) * hop steps);
    spikes_model[k]: the model's spike count there.
    """

    name: str
    convention: str
    n: int
    accuracy: float
    agreement: float
    spike_mismatches: list[int]
    spikes_model: list[int]

    def as_dict(self) -> dict:
        return asdict(self)


def compare_runs(name: str, convention: Convention, labels: np.ndarray, model_predictions: np.ndarray,
                 model_spikes: list[np.ndarray] | None, predictions: np.ndarray,
                 spikes: list[np.ndarray] | None, align_hop: int | None = None) -> VerifyResult:
    """Accuracy, agreement with the model and spike mismatches of one simulated run.

    model_spikes / spikes: per hidden layer (T, B, H) and (T + shifts, B, H).
    """
    labels = np.asarray(labels)
    mism, counts = [], []
    if model_spikes is not None and spikes is not None:
        hop = convention.hop_latency_steps if align_hop is None else align_hop  # model spikes already late: 0
        for k, (ms, ss) in enumerate(zip(model_spikes, spikes)):
            shift = hop * (k + 1)
            aligned = ss[shift: shift + ms.shape[0]]
            n = aligned.shape[0]  # a chip-forward model runs longer than a model-convention simulation
            mism.append(int((aligned != (ms[:n] > 0)).sum()))
            counts.append(int((ms > 0).sum()))
    conv = f"hop {convention.hop_latency_steps}, u {convention.threshold_rule} theta, {convention.arithmetic}"
    return VerifyResult(name, conv, int(len(labels)), float((predictions == labels).mean()),
                        float((predictions == model_predictions).mean()), mism, counts)


def verify_network(name: str, net: Network, x: np.ndarray, labels: np.ndarray,
                   model_predictions: np.ndarray, model_spikes: list[np.ndarray] | None,
                   convention: "Convention | str" = "target", progress=None,
                   align_hop: int | None = None) -> VerifyResult:
    """Simulate ``net`` on x (T, B, C_in) and compare it with the model's outputs.
    ``progress(n)``: called after every batch of n samples. ``align_hop``: the latency per hop by
    which spikes are shifted before comparing (default the convention's; 0 when the model's own
    forward already runs with the chip's latency, as a fine-tuned run's does)."""
    res = simulate(net, x, convention=convention, record_spikes=model_spikes is not None, progress=progress)
    conv = Convention.model() if convention == "model" else (
        Convention.of(net) if convention == "target" else convention)
    return compare_runs(name, conv, labels, model_predictions, model_spikes, res.predictions,
                        res.spikes if model_spikes is not None else None, align_hop)


def format_table(model_accuracy: float, n: int, results: list[VerifyResult]) -> str:
    lines = [f"{'network':34s} {'accuracy':>8s} {'agreement':>9s}  spike mismatches / model spikes",
             f"{'model (PyTorch, float64, eval)':34s} {model_accuracy:8.4f} {1.0:9.4f}  -"]
    for r in results:
        sm = ", ".join(f"{m}/{c}" for m, c in zip(r.spike_mismatches, r.spikes_model)) or "-"
        lines.append(f"{r.name:34s} {r.accuracy:8.4f} {r.agreement:9.4f}  {sm}   [{r.convention}]")
    lines.append(f"({n} samples)")
    return "\n".join(lines)
