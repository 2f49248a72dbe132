"""Benchmarks of snn-delays against the reference stack (dcls + SpikingJelly), same process,
same input tensors. Run them with ``snn-delays bench`` (see ``benchmarks/README.md``)."""

from .measure import BenchConfig, CONFIGS, run_benchmark, run_scaling

__all__ = ["BenchConfig", "CONFIGS", "run_benchmark", "run_scaling"]
