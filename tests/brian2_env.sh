#!/usr/bin/env bash
# Create the separate environment the Brian2 and PyNN checks (tests/test_export_brian2.py) run in.
#
# brian2 2.9.0 is the last release for Python 3.11 and fails to import with numpy >= 2.4, so it
# cannot share the project's venv. Usage (idempotent; a no-op once the venv imports brian2):
#     bash tests/brian2_env.sh            # creates .venv-brian2 next to this repo's .venv
#     BRIAN2_VENV=/some/dir bash tests/brian2_env.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${BRIAN2_VENV:-$here/.venv-brian2}"
python="${PYTHON:-python3.11}"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import brian2, h5py, pyNN" >/dev/null 2>&1; then
    echo "brian2 environment ready: $venv"
    exit 0
fi
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "brian2==2.9.0" "numpy>=2.3,<2.4" "h5py>=3.8" "pyNN==0.13.0"
"$venv/bin/python" -c "import brian2, numpy; print('brian2', brian2.__version__, 'numpy', numpy.__version__)"
echo "brian2 environment ready: $venv"
