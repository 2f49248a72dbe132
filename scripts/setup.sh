#!/usr/bin/env bash
# Create .venv and install snn-delays (editable) with every extra (plot, tune, nir, audio) and the
# pins of constraints.txt (CPU torch 2.13 on the project's machines).
# Usage: bash scripts/setup.sh [test]   ("test" adds the test tools and the reference stack)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/pip install -q --disable-pip-version-check -c constraints.txt"
if [ "${1:-}" = "test" ]; then
    $PIP -e '.[all,test]'
    # SpikingJelly 2.0 declares torchvision/torchaudio as hard requirements, which do not load beside
    # this torch: install it without dependencies (its neuron/surrogate/layer modules need neither).
    # Norse 1.1.0 (a NIR consumer the tests run) likewise declares torchvision, which norse.torch never
    # imports; its other requirements (torch, numpy, nir, nirtorch) are already installed.
    $PIP --no-deps 'spikingjelly==2.0.0' 'norse==1.1.0'
else
    $PIP -e '.[all]'
fi
