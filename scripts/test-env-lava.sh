#!/usr/bin/env bash
# Side environment for running Loihi exports (netx.h5) in Intel Lava (tests/test_export_lava.py,
# neuromorphic_export/vendor_lava.py).
#
# lava-nc 0.10.0 and lava-dl 0.6.0 install for Python 3.10 only, and lava-dl imports torch
# (>= 2.3.1, < 2.4: torch 2.3.1 is the only release it accepts). PyPI's Linux torch wheels are
# CUDA builds that pull the nvidia-* libraries (several GB); PyPI has no CPU-only Linux wheel, so
# the environment holds that build (Lava itself runs on the CPU).
#
# Built once into $SNN_DELAYS_ENVS/lava-0.10.0-dl-0.6.0 (default ~/.cache/snn-delays/envs), outside
# the clone (scripts/_side_env.sh says how).
#     bash scripts/test-env-lava.sh
#     PYTHON310=/path/to/python3.10 SNN_DELAYS_ENVS=/some/dir bash scripts/test-env-lava.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_side_env.sh"
side_env "lava-0.10.0-dl-0.6.0" lava 3.10 "pip<25" \
    "import lava.lib.dl.netx, lava.magma, torch, h5py, numpy" \
    "lava-nc lava-dl torch numpy h5py" \
    "lava-nc==0.10.0" "lava-dl==0.6.0" "torch==2.3.1" "numpy>=1.24.4,<2" "h5py>=3.7,<4"
