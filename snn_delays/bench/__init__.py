"""Speed and memory of snn-delays against the reference stack (dcls + SpikingJelly), same process,
same input tensors. Run with ``snn-delays bench``; method and results: ``benchmarks/README.md``
in the source repository (the results stay there; this harness is what gets installed)."""

from .measure import BenchConfig, CONFIGS, run_benchmark, run_scaling

__all__ = ["BenchConfig", "CONFIGS", "run_benchmark", "run_scaling"]
