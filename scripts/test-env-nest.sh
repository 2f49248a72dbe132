#!/usr/bin/env bash
# Side environment for running SpiNNaker 1 exports (pynn/run_pynn.py) in PyNN on NEST
# (tests/test_export_nest.py, neuromorphic_export/vendor_nest.py).
#
# nest-simulator 3.10.0 is on PyPI as a binary wheel (CPython 3.11 on Linux x86-64), PyNN 0.13.0 as
# pure Python; they pin their own numpy range, so they live apart from the project's venv, with
# numpy and h5py (run_pynn.py needs only PyNN and numpy; h5py is for reading network.h5 by hand).
# Built once into $SNN_DELAYS_ENVS/nest-3.10.0-pynn-0.13.0 (default ~/.cache/snn-delays/envs), outside
# the clone (scripts/_side_env.sh says how).
#     bash scripts/test-env-nest.sh
#     PYTHON311=/path/to/python3.11 SNN_DELAYS_ENVS=/some/dir bash scripts/test-env-nest.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_side_env.sh"
# NEST prints its banner on import; the check must see pyNN.nest build a cell and run a step
side_env "nest-3.10.0-pynn-0.13.0" nest 3.11 pip \
    "import pyNN.nest as sim; sim.setup(timestep=1.0, spike_precision='on_grid'); \
sim.Population(1, sim.IF_curr_delta()); sim.run(2.0); sim.end()" \
    "nest-simulator PyNN numpy h5py" \
    --only-binary nest-simulator "nest-simulator==3.10.0" "PyNN==0.13.0" numpy "h5py>=3.8"
