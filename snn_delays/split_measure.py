"""One evaluation pass over a split: accuracy, loss, confusion matrix and hidden-layer spike rates.

:func:`measure_batches` runs the model once per batch (``forward(x, return_spikes=True)``: the
compiled evaluation on CPU returns the spikes at no extra cost) and accumulates everything in a
:class:`SplitMeasure`. The trainer uses it for the per-epoch ``valid_acc``, ``valid_loss`` and
``spike_rate``; ``snn-delays evaluate`` for its report. It takes batches, not a dataset, so that it
needs nothing from the trainer (which imports it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from .model import DelaySNN

__all__ = ["SplitMeasure", "measure_batches"]


@dataclass
class SplitMeasure:
    """Sums over the samples of a split (counts, not means, so that passes can be added).

    ``confusion`` (K, K) int64: rows = true class, columns = predicted class.
    ``loss_sum``: sum over samples of the cross-entropy of the summed softmax used as logits (the
    training loss, here with rounded delays). ``spike_counts[k]`` / ``spike_slots[k]``: spikes of
    hidden layer k and its (step, sample, neuron) entries, over the T + extra_steps steps the layers run.
    """

    confusion: np.ndarray
    loss_sum: float = 0.0
    spike_counts: list[float] = field(default_factory=list)
    spike_slots: list[int] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))

    @property
    def accuracy(self) -> float:
        """Fraction of samples predicted right; NaN for an empty split."""
        return self.correct / self.n if self.n else float("nan")

    @property
    def loss(self) -> float:
        """Mean cross-entropy per sample; NaN for an empty split."""
        return self.loss_sum / self.n if self.n else float("nan")

    @property
    def per_class_accuracy(self) -> list[float | None]:
        """Accuracy within each true class (recall); None for a class without samples."""
        totals = self.confusion.sum(1)
        return [float(self.confusion[c, c] / t) if t else None for c, t in enumerate(totals)]

    @property
    def spike_rate(self) -> list[float]:
        """Per hidden layer: fraction of (step, sample, neuron) entries that hold a spike, in [0, 1]."""
        return [c / s if s else float("nan") for c, s in zip(self.spike_counts, self.spike_slots)]

    def add(self, membrane: Tensor, spikes: list[Tensor], y: Tensor) -> None:
        """Add one batch: readout ``membrane`` (T', B, K), hidden ``spikes`` [(T', B, H)], labels ``y`` (B,)."""
        scores = DelaySNN.scores(membrane)  # (B, K)
        self.loss_sum += float(nn.functional.cross_entropy(scores.double(), y, reduction="sum"))
        k = self.confusion.shape[0]
        pairs = y.cpu().numpy().astype(np.int64) * k + scores.argmax(-1).cpu().numpy()
        self.confusion += np.bincount(pairs, minlength=k * k).reshape(k, k)
        if not self.spike_counts:
            self.spike_counts, self.spike_slots = [0.0] * len(spikes), [0] * len(spikes)
        for layer, s in enumerate(spikes):
            self.spike_counts[layer] += float(s.sum(dtype=torch.float64))
            self.spike_slots[layer] += s.numel()

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready numbers: accuracy, correct, n, loss, confusion, per_class_accuracy, spike_rate."""
        return {"accuracy": self.accuracy, "correct": self.correct, "n": self.n, "loss": self.loss,
                "confusion": self.confusion.tolist(), "per_class_accuracy": self.per_class_accuracy,
                "spike_rate": self.spike_rate}


@torch.no_grad()
def measure_batches(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], n_classes: int) -> SplitMeasure:
    """Run ``model`` (a DelaySNN) in eval mode (rounded delays) over ``batches`` of (x (T, B, C), y (B,))
    and return the sums; the model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    m = SplitMeasure(confusion=np.zeros((n_classes, n_classes), dtype=np.int64))
    try:
        for x, y in batches:
            membrane, spikes = model(x, return_spikes=True)
            m.add(membrane, spikes, y)
    finally:
        model.train(was_training)
    return m
