"""The reference stack of performance.md, built from the authors' packages: ``dcls`` 0.1.1
(``Dcls1d(..., version='gauss')``, widths frozen and shared) and SpikingJelly's multi-step
``LIFNode``, ``BatchNorm1d`` and ``Dropout``; data (T, B, C); each delay layer is preceded by
Td - 1 zeros on the left and (Td - 1) // 2 on the right of the time axis, as the reference does.

Install beside the CPU torch: ``pip install --no-deps dcls spikingjelly && pip install loguru``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ReferenceSNN", "missing_reason", "reset"]


def missing_reason() -> str | None:
    """Why the reference stack cannot be built here (the import error), or None when it can."""
    try:
        import DCLS.construct.modules  # noqa: F401
        from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: F401
    except Exception as e:  # ImportError and the odd failure of their optional imports
        return f"{type(e).__name__}: {e}"
    return None


class ReferenceSNN(nn.Module):
    """[pad -> Dcls1d -> BatchNorm1d -> LIFNode -> Dropout] x L -> pad -> Dcls1d -> LIFNode (v_th 1e9).

    ``forward(x)``: x (T, B, C) -> readout membrane (T + (L + 1) * ((Td - 1) // 2), B, n_classes)."""

    def __init__(self, n_in: int, hidden: int, n_layers: int, n_classes: int, kernel_size: int,
                 sigma: float, tau: float, dropout: float):
        super().__init__()
        from DCLS.construct.modules import Dcls1d
        from spikingjelly.activation_based import layer, neuron, surrogate

        self.kernel_size = kernel_size
        sizes = [n_in] + [hidden] * n_layers + [n_classes]
        self.synapses = nn.ModuleList(
            Dcls1d(sizes[k], sizes[k + 1], kernel_count=1, dilated_kernel_size=kernel_size, bias=False,
                   version="gauss") for k in range(n_layers + 1))
        for syn in self.synapses:
            syn.SIG.requires_grad_(False)  # frozen and shared: set by set_sigma
        self.norms = nn.ModuleList(layer.BatchNorm1d(hidden, step_mode="m") for _ in range(n_layers))
        self.lifs = nn.ModuleList(
            neuron.LIFNode(tau=tau, v_threshold=1.0, surrogate_function=surrogate.ATan(alpha=5.0),
                           detach_reset=True, step_mode="m", decay_input=False) for _ in range(n_layers))
        self.drops = nn.ModuleList(layer.Dropout(dropout, step_mode="m") for _ in range(n_layers))
        self.readout = neuron.LIFNode(tau=tau, v_threshold=1e9, surrogate_function=surrogate.ATan(alpha=5.0),
                                      detach_reset=True, step_mode="m", decay_input=False, store_v_seq=True)
        self.set_sigma(kernel_size // 2)

    def set_sigma(self, sigma: float) -> None:
        """DCLS 'gauss' width is |SIG| + 0.27: the reference stores sigma - 0.27."""
        for syn in self.synapses:
            syn.SIG.data.fill_(sigma - 0.27)

    @torch.no_grad()
    def round_positions(self) -> None:
        """The reference's evaluation kernel: rounded positions, SIG = 0."""
        for syn in self.synapses:
            syn.P.data.round_()
            syn.SIG.data.fill_(0.0)

    def _delay(self, syn: nn.Module, x: Tensor) -> Tensor:
        td = self.kernel_size
        xb = F.pad(x.permute(1, 2, 0), (td - 1, (td - 1) // 2))  # (B, C, T + Td - 1 + (Td-1)//2)
        return syn(xb).permute(2, 0, 1)  # (T + (Td-1)//2, B, C_out)

    def forward(self, x: Tensor) -> Tensor:
        for syn, bn, lif, drop in zip(self.synapses[:-1], self.norms, self.lifs, self.drops):
            x = drop(lif(bn(self._delay(syn, x))))
        self.readout(self._delay(self.synapses[-1], x))
        return self.readout.v_seq  # (T', B, n_classes)


def reset(model: nn.Module) -> None:
    """SpikingJelly keeps neuron state in the modules: reset it after every batch."""
    from spikingjelly.activation_based import functional

    functional.reset_net(model)
