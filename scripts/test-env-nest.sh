#!/usr/bin/env bash
# Side environment for running SpiNNaker 1 exports (pynn/run_pynn.py) in PyNN on NEST
# (tests/test_export_nest.py, neuromorphic_export/vendor_nest.py).
#
# nest-simulator 3.10.0 is on PyPI as a binary wheel (CPython 3.11 on Linux x86-64), PyNN 0.13.0 as
# pure Python; they pin their own numpy range, so they live apart from the project's venv, with
# numpy and h5py (run_pynn.py needs only PyNN and numpy; h5py is for reading network.h5 by hand).
#
# Built once into $SNN_DELAYS_ENVS/nest-3.10.0-pynn-0.13.0 (default ~/.cache/snn-delays/envs),
# outside the clone; a no-op (no Python started) once the ".complete" stamp is there. Without a
# Python 3.11 or a reachable registry it prints why and exits 0: the NEST tests then skip with that
# reason.
#     bash scripts/test-env-nest.sh
#     PYTHON311=/path/to/python3.11 SNN_DELAYS_ENVS=/some/dir bash scripts/test-env-nest.sh
set -euo pipefail
name="nest-3.10.0-pynn-0.13.0"
root="${SNN_DELAYS_ENVS:-$HOME/.cache/snn-delays/envs}"
env="$root/$name"
stamp="$env/.complete"
if [ -f "$stamp" ] && [ -x "$env/bin/python" ]; then
    echo "nest environment ready: $env"
    exit 0
fi

is311() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1; }
python="${PYTHON311:-}"
if [ -z "$python" ]; then   # python3.11 on PATH (a pyenv shim may not run), else pyenv's own
    pyenv_root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
    for candidate in python3.11 "$pyenv_root"/versions/3.11*/bin/python; do
        if command -v "$candidate" >/dev/null 2>&1 && is311 "$candidate"; then python="$candidate"; break; fi
    done
fi
if [ -z "$python" ] || ! is311 "$python"; then
    echo "nest environment NOT built: no Python 3.11 found (set PYTHON311=...); the NEST tests will skip"
    exit 0
fi

mkdir -p "$root"
exec 9>"$root/.$name.lock"           # one build at a time (test runs started side by side)
flock 9
if [ -f "$stamp" ] && [ -x "$env/bin/python" ]; then
    echo "nest environment ready: $env"
    exit 0
fi
rm -rf "$env"
start=$(date +%s)
fail() {
    echo "nest environment NOT built: $1 (is PyPI reachable?); the NEST tests will skip"
    rm -rf "$env"
    exit 0
}
"$python" -m venv "$env" || fail "python -m venv failed"
pip=("$env/bin/python" -m pip install --quiet --no-cache-dir)
"${pip[@]}" --upgrade pip || fail "pip upgrade failed"
"${pip[@]}" --only-binary nest-simulator "nest-simulator==3.10.0" "PyNN==0.13.0" numpy "h5py>=3.8" \
    || fail "pip install nest-simulator==3.10.0 PyNN==0.13.0 failed"
# NEST prints its banner on import; the check must see pyNN.nest build a cell and run a step
"$env/bin/python" -c "import pyNN.nest as sim; sim.setup(timestep=1.0, spike_precision='on_grid'); \
sim.Population(1, sim.IF_curr_delta()); sim.run(2.0); sim.end()" >/dev/null 2>&1 \
    || fail "the installed packages do not import or run (python -c 'import pyNN.nest')"
"$env/bin/python" - > "$stamp" <<'PY'
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in ("nest-simulator", "PyNN", "numpy", "h5py")))
PY
echo "nest environment built in $(( $(date +%s) - start )) s: $env ($(du -sh "$env" | cut -f1)); $(cat "$stamp")"
