"""snn-delays: learn synaptic delays in spiking neural networks (DCLS) and export them.

Public API (time-major shapes (T, B, C) everywhere, times in steps)::

    DelaySynapse   weights + learnable delays as a causal temporal convolution
    RecurrentDelaySynapse  a layer's own spikes back to it after learnable delays >= 1 step
    LIF            leaky integrate-and-fire neuron, arctan surrogate gradient
    DelaySNN       the network; build_model(config) / load_model(run_dir); predict(x, batch_first=True)
                   and predict_dataset(ds) take data as open_dataset gives it
    load_config    typed configs from experiments/*.toml with overrides
    train          the training loop writing a run folder
"""

from .config import ConfigError, DataConfig, ExperimentConfig, ModelConfig, TrainConfig, load_config
from .errors import UserError
from .model import (DelaySNN, InputShapeError, build_model, calibrate_batchnorm, count_trainable, dataset_batches,
                    load_model, resolve_variant)
from .neuron import LIF
from .recurrent_synapse import RecurrentDelaySynapse
from .synapse import DelaySynapse, DenseConvSynapse, gaussian_kernel, rounded_kernel


def train(*args, **kwargs):
    """See :func:`snn_delays.train.train` (imported lazily to keep ``import snn_delays`` light)."""
    from .train import train as _train

    return _train(*args, **kwargs)


__all__ = [
    "DelaySynapse",
    "DenseConvSynapse",
    "RecurrentDelaySynapse",
    "gaussian_kernel",
    "rounded_kernel",
    "LIF",
    "DelaySNN",
    "InputShapeError",
    "dataset_batches",
    "build_model",
    "load_model",
    "resolve_variant",
    "count_trainable",
    "calibrate_batchnorm",
    "load_config",
    "ExperimentConfig",
    "ModelConfig",
    "DataConfig",
    "TrainConfig",
    "ConfigError",
    "UserError",
    "train",
]
__version__ = "0.1.0"
