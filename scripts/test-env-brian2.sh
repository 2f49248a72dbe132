#!/usr/bin/env bash
# Side environment for the Brian2 and PyNN-on-Brian2 cross-checks (tests/test_export_brian2.py,
# tests/test_export_recurrent.py): brian2 2.9.0 is the last release for Python 3.11 and fails to
# import with numpy >= 2.4, so it cannot share the project's venv.
# Built once into $SNN_DELAYS_ENVS/brian2-2.9.0-pynn-0.13.0 (default ~/.cache/snn-delays/envs), outside
# the clone (scripts/_side_env.sh says how).
#     bash scripts/test-env-brian2.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_side_env.sh"
side_env "brian2-2.9.0-pynn-0.13.0" brian2 3.11 pip "import brian2, h5py, pyNN" "brian2 numpy h5py PyNN" \
    "brian2==2.9.0" "numpy>=2.3,<2.4" "h5py>=3.8" "PyNN==0.13.0"
