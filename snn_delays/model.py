"""DelaySNN: [delay synapse -> BatchNorm -> LIF (or adLIF: model.neuron) -> dropout] x L -> delay-synapse readout.

Time padding: the input (T, B, C) is padded ONCE at the end with ``extra_steps`` zero steps and
every layer runs on T' = T + extra_steps steps (causal left padding inside each synapse). The
reference instead pads (Td - 1) // 2 steps on the right before every layer, so its sequence
grows layer by layer; ``extra_steps`` defaults to the same total, (L + 1) * ((Td - 1) // 2).
A constant length is what hardware does: a chip runs every layer on the same clock.

Variants (ablations) are resolved here into a concrete :class:`ModelConfig`; see
:func:`resolve_variant`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from neuromorphic_export.chip import BN_EPS

from . import quantize
from .adaptive_neuron import AdLIF
from .backends import fast_eval, norm_lif
from .backends.dropout import dropout_product_cm
from .checkpoint import load_checkpoint
from .config import ConfigError, ExperimentConfig, ModelConfig, config_from_dict, load_config
from .conv_model import build_conv_blocks, conv_trainable_count, dense_input_size, frames_of, input_frame
from .data.batches import iterate_batches
from .errors import UserError
from .neuron import LIF
from .recurrent_synapse import RecurrentDelaySynapse
from .synapse import DelaySynapse, DenseConvSynapse, random_fanin_mask

__all__ = ["DelaySNN", "build_model", "load_model", "resolve_variant", "count_trainable", "readout_scores",
           "HiddenBlock", "calibrate_batchnorm", "check_fanin", "dataset_batches", "trained_steps", "InputShapeError"]


class InputShapeError(UserError, ValueError):
    """An input whose shape does not fit the model; the message says "expected ..., got ..."."""


def _generator(seed: int, layer: int, kind: int) -> torch.Generator:
    # Independent, reproducible streams: same seed => same masks/weights/delays in every variant
    # whose shapes agree.
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + layer * 101 + kind)


def readout_scores(membrane: Tensor) -> Tensor:
    """The network's decision scores: the sum over time of the softmax over classes, (T', B, K)
    readout membrane -> (B, K); trained as logits, the class is their argmax (the torch twin of
    :func:`neuromorphic_export.chip.predict_from_readout`)."""
    return membrane.softmax(-1).sum(0)


class TimeSharedDropout(nn.Module):
    """Dropout with one mask per sample and neuron shared by all time steps; (T, B, N).

    ``global_rows = (offset, global_batch)``, set by data-parallel training
    (:func:`snn_delays.distributed.set_dropout_rows`): the rows every call holds, as ``rows`` below."""

    # channel-major: the product as one node (backends/dropout.py); False: the plain ``x * keep`` (the
    # reference formulation the fused node is tested against: the same random draws and values)
    fused: bool = True

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)
        self.global_rows: tuple[int, int] | None = None

    def forward(self, x: Tensor, channel_major: bool = False, rows: tuple[int, int] | None = None) -> Tensor:
        """x (T, B, N), or (T, N, B) if ``channel_major`` (the same mask for the same seed).

        ``rows = (offset, global_batch)``: x holds rows offset .. offset + B of a global batch (one
        rank's shard in data-parallel training); the mask of the whole global batch is drawn and
        these rows kept, so every rank applies the masks one process would."""
        if not self.active:
            return x
        b, n = (x.shape[2], x.shape[1]) if channel_major else (x.shape[1], x.shape[2])
        keep = self._draw(b, n, x, rows)
        if channel_major:
            if self.fused and x.dim() == 3:  # the same values; the mask contiguous (N, B), bytes for the next synapse
                return dropout_product_cm(x, keep[0].t())
            keep = keep.permute(0, 2, 1)
        return x * keep

    @property
    def active(self) -> bool:
        """Whether a forward now multiplies by a mask (training mode, p > 0)."""
        return self.training and self.p != 0.0

    def _draw(self, b: int, n: int, like: Tensor, rows: tuple[int, int] | None) -> Tensor:
        # (1, B, N): 0 or 1 / (1 - p), the same random calls for either layout
        rows = rows if rows is not None else self.global_rows
        lo, total = rows if rows is not None else (0, b)
        keep = torch.empty(1, total, n, device=like.device, dtype=like.dtype).bernoulli_(1 - self.p)
        return keep[:, lo:lo + b] / (1 - self.p)  # one product over x instead of two (s / q, the same values)

    def channel_major_mask(self, x: Tensor) -> Tensor:
        """The mask a channel-major forward on x (T, N, B) would draw, as (N, B) contiguous (the same
        random calls and values), for a node that applies it itself (only when :attr:`active`)."""
        return self._draw(x.shape[2], x.shape[1], x, None)[0].t().contiguous()


class HiddenBlock(nn.Module):
    """delay synapse -> BatchNorm over time and batch -> LIF -> dropout; (T, B, C_in) -> (T, B, H) spikes.

    With a ``recurrent`` synapse the LIF also receives the layer's own spikes (before dropout)
    through it, after delays >= 1 step; that current is added after the BatchNorm.
    ``neuron="adlif"``: adaptive LIF neurons (:class:`~snn_delays.adaptive_neuron.AdLIF`, learned
    parameters per neuron drawn from ``generator``, one fused autograd node) instead of the LIF;
    ``tau`` is then unused.
    Either way the neurons are ``self.lif`` (state-dict keys ``lif.decay_u`` ... for adLIF)."""

    def __init__(self, synapse: nn.Module, hidden: int, tau: float, threshold: float, alpha: float, dropout: float,
                 recurrent: RecurrentDelaySynapse | None = None, chip_layer: "quantize.ChipLayer | None" = None,
                 neuron: str = "lif", generator: torch.Generator | None = None):
        super().__init__()
        self.synapse = synapse
        if neuron == "adlif":
            if recurrent is not None or chip_layer is not None:
                raise ValueError("HiddenBlock: adLIF neurons run feed-forward plain layers only (no recurrent "
                                 "synapse, no chip layer)")
            self.norm = nn.BatchNorm1d(hidden, eps=BN_EPS)
            self.lif = AdLIF(hidden, threshold=threshold, alpha=alpha, generator=generator)
        elif chip_layer is None:
            self.norm = nn.BatchNorm1d(hidden, eps=BN_EPS)
            self.lif = LIF(tau, threshold, alpha)
        else:  # the chip's layer (snn_delays.quantize)
            self.norm = quantize.FrozenNorm(hidden, chip_layer)
            self.lif = quantize.ChipNeuron(chip_layer, tau, threshold, alpha)
            chip_layer.norm = self.norm
        self.dropout = TimeSharedDropout(dropout)
        self.recurrent = recurrent

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (T, B, C_in) -> (spikes after dropout, spikes before dropout), both (T, B, H)."""
        a, s = self.forward_cm(x.permute(0, 2, 1))
        return a.permute(0, 2, 1), s.permute(0, 2, 1)

    def forward_cm(self, x: Tensor, need_spikes: bool = True) -> tuple[Tensor, Tensor | None]:
        """The same on channel-major tensors: x (T, C_in, B) -> two (T, H, B); the second (the spikes
        before dropout) None when not ``need_spikes`` and BatchNorm, LIF and dropout ran as one node."""
        i = self.synapse.forward_cm(x)  # (T, H, B)
        if not need_spikes and self.dropout.active and self.dropout.fused and self.recurrent is None and \
                torch.is_grad_enabled() and norm_lif.supported(self.norm, self.lif) and norm_lif.dropout_fusable(i):
            # BatchNorm, LIF and the dropout product in one node: no spike tensor, the mask applied in place
            return norm_lif.norm_lif_dropout(i, self.norm, self.lif, self.dropout.channel_major_mask(i)), None
        if isinstance(self.lif, AdLIF):
            s = self.lif.forward_cm(self.norm(i))  # BatchNorm, then the adLIF node (channel-major)
        elif self.recurrent is not None:
            s = self.recurrent.run(self.norm(i), self.lif.tau, self.lif.threshold, self.lif.alpha)
        elif torch.is_grad_enabled() and norm_lif.supported(self.norm, self.lif):
            s = norm_lif.norm_lif(i, self.norm, self.lif)  # the same, keeping one tensor less
        else:
            i = self.norm(i)  # BatchNorm1d on (N=T, C=H, L=B): statistics over time and batch
            s = self.lif(i)  # elementwise in time order: any layout
        return self.dropout(s, channel_major=True), s


class DelaySNN(nn.Module):
    """The delay-learning spiking network. Build it with :func:`build_model`.

    ``forward(x)``: x (T, B, C) input counts -> readout membrane (T + extra_steps, B, n_classes).
    ``sigma_init``: the synapses' initial kernel width (default ``kernel_size // 2``), where learned
    widths start (``model.learn_sigma``; the schedule sets the shared width of the others).
    ``predict(x, batch_first=True)`` / ``predict_dataset(ds)`` take data as ``open_dataset`` gives
    it ((N, T, C), any numeric dtype). ``input_steps``: the time length T of the training data when
    known (:func:`load_model` sets it from the checkpoint); ``predict`` checks inputs against it.
    """

    input_steps: int | None = None

    def __init__(self, cfg: ModelConfig, seed: int = 0, sigma_init: float | None = None, target: str | None = None):
        super().__init__()
        cfg.validate()
        chip_target = quantize.check_target(target) if target else None
        if chip_target is not None:
            quantize.refuse_unsupported(cfg, target)
            if cfg.neuron != "lif":
                raise UserError(f"target {target}: the chip model computes LIF neurons; model.neuron = "
                                f"{cfg.neuron!r} has none on any chip")
        if cfg.input_size < 1 or cfg.n_classes < 1:
            raise UserError("model.input_size and model.n_classes must be set (> 0) to build a model")
        if not cfg.match_params:  # (the parameter-matched baselines' fan-in is derived)
            check_fanin(cfg)
        self.config = cfg
        self.target = target or None  # the chip this model computes as (snn_delays.quantize), or None
        self._extra_steps = cfg.resolved_extra_steps
        chips = [quantize.ChipLayer(chip_target, float(cfg.threshold) if k < cfg.n_layers else math.inf)
                 for k in range(cfg.n_layers + 1)] if chip_target is not None else [None] * (cfg.n_layers + 1)
        no_delays = cfg.delays == "none"
        if cfg.conv and chip_target is not None:
            raise UserError(f"target {target}: the chip model has no convolutional layers (model.conv); export "
                            "the plain model instead")
        self.conv = build_conv_blocks(cfg, lambda layer, kind: _generator(seed, layer, kind),
                                      lambda: TimeSharedDropout(cfg.dropout), sigma_init)  # empty without model.conv
        self._frame = input_frame(cfg) if cfg.conv else None
        sizes = [dense_input_size(cfg)] + [cfg.hidden_size] * cfg.n_layers + [cfg.n_classes]
        synapses = []
        for k in range(cfg.n_layers + 1):
            fin, fout = sizes[k], sizes[k + 1]
            mask = random_fanin_mask(fout, fin, cfg.fanin, _generator(seed, k, 0))
            if cfg.dense_kernel:
                syn: nn.Module = DenseConvSynapse(fin, fout, cfg.kernel_size, mask=mask, generator=_generator(seed, k, 1))
            else:
                syn = (DelaySynapse if chips[k] is None else partial(quantize.ChipSynapse, chip_layer=chips[k]))(
                    fin, fout,
                    kernel_size=1 if no_delays else cfg.kernel_size,
                    kernel_count=1 if no_delays else cfg.kernel_count,
                    learn_delays=cfg.delays == "learned",
                    learn_weights=cfg.learn_weights,
                    mask=mask, generator=_generator(seed, k, 1), backend=cfg.backend,
                    sigma=sigma_init, interpolation=cfg.interpolation,
                    learn_sigma=cfg.learn_sigma and not no_delays,
                )
            synapses.append(syn)
        self.hidden = nn.ModuleList(
            HiddenBlock(synapses[k], cfg.hidden_size, cfg.tau_steps, cfg.threshold, cfg.surrogate_alpha, cfg.dropout,
                        recurrent=_recurrent_synapse(cfg, seed, k, sigma_init) if cfg.recurrent else None,
                        chip_layer=chips[k], neuron=cfg.neuron, generator=_generator(seed, k, 4))
            for k in range(cfg.n_layers)
        )
        self.readout = synapses[-1]
        self.readout_lif = LIF(cfg.readout_tau_steps, float("inf")) if chips[-1] is None else \
            quantize.ChipNeuron(chips[-1], cfg.readout_tau_steps, float("inf"))
        self._chips = chips  # one ChipLayer per synapse layer (all None for a plain model)
        if chip_target is not None:
            with torch.no_grad():
                self.clamp_()  # delays within the target's range from the start

    # -- the chip ---------------------------------------------------------------------------------
    @property
    def chip_forward(self) -> bool:
        """Whether the model computes as its target's chip now (always False for a plain model)."""
        return self._chips[0] is not None and self._chips[0].active

    def set_chip_forward(self, on: bool) -> None:
        """Switch a chip model's quantised forward on or off (``train.target``'s schedule); its
        synapses go to eval mode (rounded delays) while it is on."""
        if self.target is None:
            raise ValueError("set_chip_forward: a plain model (built without target=) has no chip forward")
        for c in self._chips:
            c.active = bool(on)
        if on:
            for syn in self.synapses():
                syn.train(False)

    @property
    def chip_target(self) -> str | None:
        """The target whose chip the model computes as now, or None."""
        return self.target if self.chip_forward else None

    @property
    def extra_steps(self) -> int:
        """Zero steps appended to every input: ``model.extra_steps`` (resolved), plus one step per hop
        per layer while the chip forward is on (as the export's simulator runs it)."""
        if not self.chip_forward:
            return self._extra_steps
        return self._extra_steps + self._chips[0].t.hop_latency_steps * len(self._chips)

    @property
    def fast_eval_eligible(self) -> bool:
        """Whether the compiled evaluation (:mod:`.backends.fast_eval`, which computes the plain LIF
        layers) may run this model: not while a chip forward is on, and not with adLIF neurons (their
        layers evaluate on the plain path: rounded-delay synapse, BatchNorm, the compiled adLIF loop)."""
        return not self.chip_forward and self.config.neuron == "lif"

    # -- sigma, clamping ------------------------------------------------------------------------
    def synapses(self) -> list[nn.Module]:
        """The feed-forward synapses, one per layer: hidden layers', then the readout's."""
        return [blk.synapse for blk in self.hidden] + [self.readout]

    def conv_synapses(self) -> list[nn.Module]:
        """The convolutional delay synapses (model.conv), first to last (empty without)."""
        return [blk.synapse for blk in self.conv]

    def recurrent_synapses(self) -> list[RecurrentDelaySynapse]:
        """The hidden layers' recurrent synapses (empty unless ``model.recurrent``)."""
        return [blk.recurrent for blk in self.hidden if blk.recurrent is not None]

    @property
    def sigma(self) -> float:
        return float(self.synapses()[0].sigma) if hasattr(self.synapses()[0], "sigma") else 0.0

    @sigma.setter
    def sigma(self, value: float) -> None:
        for s in self.conv_synapses() + self.synapses() + self.recurrent_synapses():
            s.set_sigma(value)

    def adaptive_neurons(self) -> list[AdLIF]:
        """The hidden layers' adLIF neurons (empty for LIF neurons)."""
        return [blk.lif for blk in self.hidden if isinstance(blk.lif, AdLIF)]

    def clamp_(self) -> None:
        """Delays into their range, and adLIF parameters into theirs (after each optimiser step)."""
        for s in self.conv_synapses() + self.synapses() + self.recurrent_synapses():
            s.clamp_()
        for neurons in self.adaptive_neurons():
            neurons.clamp_()

    # -- forward --------------------------------------------------------------------------------
    def forward(self, x: Tensor, return_spikes: bool = False):
        """x (T, B, C) -> readout membrane (T + extra_steps, B, n_classes)
        (and the list of hidden spike trains (T', B, H), before dropout, if ``return_spikes``)."""
        if self.conv:
            return self._forward_conv(x, return_spikes)
        if x.dim() != 3 or x.shape[-1] != self.config.input_size:
            raise InputShapeError(f"DelaySNN: expected input (T, B, {self.config.input_size}), got {tuple(x.shape)}")
        if fast_eval.applicable(self, x):  # eval, no grad, CPU: compiled, same numbers
            return fast_eval.fast_eval_forward(self, x, return_spikes, extra_steps=self.extra_steps)
        if self.extra_steps:
            x = torch.cat([x, x.new_zeros(self.extra_steps, x.shape[1], x.shape[2])], 0)  # (T', B, C)
        h = x.permute(0, 2, 1).contiguous()  # (T', C, B): channel-major between layers, batch innermost
        del x  # the padded copy is not needed any more (one (T', B, C) tensor less during the step)
        spikes = []
        for blk in self.hidden:
            h, s = blk.forward_cm(h, need_spikes=return_spikes)
            if return_spikes:  # otherwise s is freed as soon as the next layer has read it
                spikes.append(s.permute(0, 2, 1))
            del s
        u = self.readout_lif(self.readout.forward_cm(h)).permute(0, 2, 1).contiguous()  # (T', B, n_classes)
        return (u, spikes) if return_spikes else u

    def _forward_conv(self, x: Tensor, return_spikes: bool):
        """The forward of a model with conv layers: x (T, B, C, H, W) or flattened (T, B, C H W) ->
        readout membrane (T', B, n_classes); spikes (before dropout and pooling) of the conv layers
        flattened C-major (T', B, C H W), then of the dense hidden layers."""
        try:
            x = frames_of(x, self._frame)
        except ValueError as e:
            raise InputShapeError(str(e)) from None
        if self.extra_steps:
            x = torch.cat([x, x.new_zeros(self.extra_steps, *x.shape[1:])], 0)  # (T', B, C, H, W)
        spikes = []
        for blk in self.conv:
            x, s = blk(x)
            if return_spikes:
                spikes.append(s.flatten(2))
        h = x.flatten(2).permute(0, 2, 1).contiguous()  # (T', F, B): channel-major, as the dense layers take it
        for blk in self.hidden:
            h, s = blk.forward_cm(h)
            if return_spikes:
                spikes.append(s.permute(0, 2, 1))
        u = self.readout_lif(self.readout.forward_cm(h)).permute(0, 2, 1).contiguous()  # (T', B, n_classes)
        return (u, spikes) if return_spikes else u

    @staticmethod
    def scores(membrane: Tensor) -> Tensor:
        """:func:`readout_scores`: (T', B, K) readout membrane -> (B, K)."""
        return readout_scores(membrane)

    def prepare_input(self, x: "Tensor | Any", batch_first: bool = False) -> Tensor:
        """Input as the model takes it: x (T, B, C), or (B, T, C) with ``batch_first`` (as
        ``open_dataset(...).x`` holds samples), of any numeric dtype (uint8 spike counts included)
        -> a (T, B, C) tensor of the model's float dtype on its device.

        Raises ValueError when the channel count is not ``model.input_size``, or when the time axis
        looks swapped with the batch axis (T of the training data found on the batch axis); warns
        when T differs from the training data's (``input_steps``, when known)."""
        x = torch.as_tensor(x)
        if self.conv and x.dim() == 5:  # event frames (.., 2, H, W): the model takes them flattened too
            x = x.flatten(2)
        layout = "(B, T, C)" if batch_first else "(T, B, C)"
        c = self.config.input_size
        if x.dim() != 3 or x.shape[-1] != c:
            hint = " (one sample: add a batch axis, x[None] with batch_first=True)" if x.dim() == 2 else ""
            raise InputShapeError(f"DelaySNN: expected input {layout.replace('C', str(c))}, got {tuple(x.shape)}{hint}")
        if batch_first:
            x = x.transpose(0, 1)  # (B, T, C) -> (T, B, C)
        t_trained = self.input_steps
        if t_trained and x.shape[0] != t_trained:
            if x.shape[1] == t_trained:
                other = "batch_first=False" if batch_first else "batch_first=True"
                raise InputShapeError(
                    f"DelaySNN: expected input {layout} with T = {t_trained} steps (the training data's), got "
                    f"{tuple(x.shape if not batch_first else x.transpose(0, 1).shape)}: the time axis looks "
                    f"swapped with the batch axis; pass {other} (open_dataset gives (N, T, C))")
            warnings.warn(f"DelaySNN: input has {x.shape[0]} time steps, the model was trained on {t_trained}",
                          stacklevel=3)
        ref = next(self.parameters())
        dtype = ref.dtype if ref.is_floating_point() else torch.float32
        return x.to(device=ref.device, dtype=dtype)

    @torch.no_grad()
    def predict(self, x: "Tensor | Any", batch_first: bool = False) -> Tensor:
        """x (T, B, C), or (B, T, C) with ``batch_first`` (e.g. ``ds.x[:16]``), any numeric dtype
        -> (B,) predicted classes (argmax of the summed softmax). See :meth:`prepare_input`."""
        return self.scores(self(self.prepare_input(x, batch_first))).argmax(-1)

    @torch.no_grad()
    def predict_dataset(self, dataset, batch_size: int = 256) -> Tensor:
        """(N,) predicted classes of every sample of ``dataset`` (items ``(x (T, C), y)``, as
        ``open_dataset`` returns), in batches of ``batch_size``. Call ``model.eval()`` first
        (:func:`load_model` returns the model in eval mode)."""
        n_steps = getattr(dataset, "n_steps", None)
        if self.input_steps and n_steps and n_steps != self.input_steps:
            warnings.warn(f"DelaySNN: the dataset has {n_steps} time steps per sample, the model was "
                          f"trained on {self.input_steps}", stacklevel=2)
        saved, self.input_steps = self.input_steps, None  # checked once above, not per batch
        try:
            preds = [self.predict(x, batch_first=True) for x, _ in dataset_batches(dataset, batch_size)]
        finally:
            self.input_steps = saved
        return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)

    def trainable_count(self) -> int:
        """Trainable parameters that exist (masked-out synapses and frozen parameters excluded)."""
        n = sum(s.trainable_count() for s in self.conv_synapses() + self.synapses() + self.recurrent_synapses())
        n += sum(p.numel() for blk in self.conv for p in blk.norm.parameters() if p.requires_grad)
        for blk in self.hidden:
            n += sum(p.numel() for p in blk.norm.parameters() if p.requires_grad)
            n += sum(p.numel() for p in blk.lif.parameters() if p.requires_grad)  # adLIF's (H,) x 4
        return n


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, *inputs) -> nn.Module:
    """Set every BatchNorm's running statistics from one training-mode pass of ``model(*inputs)``
    (cumulative average, so the one pass defines them), as after training; returns the model in
    eval mode. An untrained network's default statistics (mean 0, variance 1) leave its hidden
    layers almost silent in eval mode. Works on any module (the benchmark uses it on both stacks)."""
    model.train()
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.momentum = None
            mod.reset_running_stats()
    model(*inputs)
    return model.eval()


def dataset_batches(dataset, batch_size: int = 256) -> Iterator[tuple[Tensor, Tensor]]:
    """Consecutive batches ``(x (B, T, C) as stored, y (B,))`` of a dataset
    (:func:`snn_delays.data.batches.iterate_batches` with ``time_major=False``)."""
    return iterate_batches(dataset, batch_size, time_major=False)


# -- variants ----------------------------------------------------------------------------------
def count_trainable(cfg: ModelConfig) -> int:
    """Trainable parameter count of a *resolved* model config, computed analytically."""
    no_delays = cfg.delays == "none"
    sizes = [dense_input_size(cfg)] + [cfg.hidden_size] * cfg.n_layers + [cfg.n_classes]
    n = conv_trainable_count(cfg)
    for k in range(cfg.n_layers + 1):
        fin, fout = sizes[k], sizes[k + 1]
        fan = fin if cfg.fanin <= 0 or cfg.fanin >= fin else cfg.fanin
        if cfg.dense_kernel:
            n += fout * fan * cfg.kernel_size
            continue
        m = 1 if no_delays else cfg.kernel_count
        per_kind = fout * fan * m
        n += per_kind * (int(cfg.learn_weights) + int(cfg.delays == "learned")
                         + int(cfg.learn_sigma and not no_delays and cfg.kernel_size > 1))
    if cfg.recurrent:
        h = cfg.hidden_size
        fan = h if cfg.recurrent_fanin <= 0 or cfg.recurrent_fanin >= h else cfg.recurrent_fanin
        dr = cfg.resolved_recurrent_kernel_size
        learned = (int(cfg.learn_weights) + int(dr > 1 and cfg.recurrent_delays == "learned")
                   + int(cfg.learn_sigma and dr > 1 and cfg.recurrent_delays == "learned"))
        n += cfg.n_layers * h * fan * learned
    per_neuron = 2 + (4 if cfg.neuron == "adlif" else 0)  # BatchNorm gain and shift; adLIF decay_u, decay_w, a, b
    return n + per_neuron * cfg.hidden_size * cfg.n_layers


def _recurrent_synapse(cfg: ModelConfig, seed: int, layer: int, sigma_init: float | None) -> RecurrentDelaySynapse:
    """Hidden layer ``layer``'s recurrent synapse (its own random streams: the feed-forward
    synapses of a seed are the same with and without recurrence)."""
    h = cfg.hidden_size
    dr = cfg.resolved_recurrent_kernel_size
    mask = random_fanin_mask(h, h, cfg.recurrent_fanin, _generator(seed, layer, 2))
    return RecurrentDelaySynapse(
        h, dr, sigma=sigma_init, learn_delays=cfg.recurrent_delays == "learned",
        learn_weights=cfg.learn_weights, mask=mask, generator=_generator(seed, layer, 3),
        backend=cfg.backend, interpolation=cfg.interpolation, learn_sigma=cfg.learn_sigma,
        delay_init=cfg.recurrent_delay_init)


def check_fanin(cfg: ModelConfig) -> None:
    """ConfigError when ``model.fanin`` asks for more inputs per neuron than a layer has: the
    input size (and the hidden size, the inputs of every later layer)."""
    if cfg.fanin <= 0:
        return
    first = dense_input_size(cfg) if cfg.conv else cfg.input_size  # with model.conv: the conv layers' output
    for what, size in (("input size (model.input_size, from the data; with model.conv its flattened output)", first),
                       ("hidden size (model.hidden_size, the inputs of the later layers)", cfg.hidden_size)):
        if 0 < size < cfg.fanin:
            raise ConfigError(f"model.fanin={cfg.fanin} inputs per neuron is more than the {what}, {size}; "
                              f"use 1..{size}, or 0 for fully connected")


def resolve_variant(cfg: ModelConfig) -> ModelConfig:
    """Turn ``model.match_params`` (``wider``/``deeper``: variants ``no-delays-wider``/``-deeper``)
    into concrete sizes that match the trainable parameter count of the full model with the same
    settings. Other models keep their sizes.
    With sparse fan-in K, ``no-delays-wider`` keeps 2K synapses per neuron instead (a synapse
    without a delay has one parameter instead of two) and ``no-delays-deeper`` keeps K per neuron
    and adds layers. A fan-in larger than a layer's inputs is refused (:func:`check_fanin`)."""
    check_fanin(cfg)
    if not cfg.match_params:
        return cfg
    target = count_trainable(dataclasses.replace(cfg, variant="full"))
    if cfg.match_params == "wider":
        if cfg.fanin > 0:  # same neurons, twice the inputs
            return dataclasses.replace(cfg, fanin=2 * cfg.fanin * cfg.kernel_count, kernel_count=1)
        base = dataclasses.replace(cfg, kernel_count=1)
        best = min(range(1, 8 * cfg.hidden_size + 1),
                   key=lambda h: abs(count_trainable(dataclasses.replace(base, hidden_size=h)) - target))
        return dataclasses.replace(base, hidden_size=best)
    # deeper: the same fan-in per neuron, more hidden layers (at least one more), then the width
    # that matches the count
    base = dataclasses.replace(cfg, kernel_count=1, fanin=cfg.fanin * cfg.kernel_count)
    layers = max(cfg.n_layers + 1, min(range(1, 64), key=lambda n: abs(
        count_trainable(dataclasses.replace(base, n_layers=n)) - target)))
    deeper = dataclasses.replace(base, n_layers=layers)
    best = min(range(1, 8 * cfg.hidden_size + 1),
               key=lambda h: abs(count_trainable(dataclasses.replace(deeper, hidden_size=h)) - target))
    return dataclasses.replace(deeper, hidden_size=best)


def _as_experiment(config: Any) -> ExperimentConfig:
    if isinstance(config, ExperimentConfig):
        return config
    if isinstance(config, ModelConfig):
        return ExperimentConfig(model=config)
    if isinstance(config, dict):
        return config_from_dict(config)
    return load_config(config)


def build_model(config: "ExperimentConfig | ModelConfig | str | os.PathLike | dict", seed: int | None = None,
                target: str | None = None) -> DelaySNN:
    """Build a :class:`DelaySNN` from a config object, a TOML path or a name in ``experiments/``
    (``build_model("shd")``). ``seed`` (default ``train.seed``) fixes masks, weights and delays.
    ``target`` (loihi1, loihi2, spinnaker1, spinnaker2) builds the chip's model: it computes what the
    export runs on that chip (:mod:`snn_delays.quantize`), with the same state dict as the plain one."""
    cfg = _as_experiment(config)
    model = DelaySNN(resolve_variant(cfg.model), seed=cfg.train.seed if seed is None else seed,
                     sigma_init=cfg.sigma_init(), target=target)
    model.sigma = cfg.sigma_init()
    return model


def load_model(run_dir: "str | os.PathLike", checkpoint: str = "best", device: str = "cpu") -> DelaySNN:
    """The trained model of a run folder (``best.pt`` by default, or a .pt path), in eval mode."""
    ckpt = load_checkpoint(run_dir, checkpoint)
    cfg = config_from_dict(ckpt["config"])
    model = DelaySNN(cfg.model, seed=cfg.train.seed)
    model.load_state_dict(ckpt["model"])
    model.input_steps = trained_steps(ckpt)
    return model.to(device).eval()


def trained_steps(ckpt: dict[str, Any]) -> int | None:
    """The time length T of a checkpoint's training data: ``run_info["input_steps"]`` (recorded by
    the trainer), else a fixed ``data.n_steps`` of its config; None when unknown (older runs)."""
    steps = (ckpt.get("run_info") or {}).get("input_steps") or ckpt["config"].get("data", {}).get("n_steps")
    return int(steps) if steps and int(steps) > 0 else None
