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
# the clone; a no-op (no Python started) once the ".complete" stamp is there. Without a Python 3.10
# or a reachable registry it prints why and exits 0: the Lava tests then skip with that reason.
#     bash scripts/test-env-lava.sh
#     PYTHON310=/path/to/python3.10 SNN_DELAYS_ENVS=/some/dir bash scripts/test-env-lava.sh
set -euo pipefail
name="lava-0.10.0-dl-0.6.0"
root="${SNN_DELAYS_ENVS:-$HOME/.cache/snn-delays/envs}"
env="$root/$name"
stamp="$env/.complete"
if [ -f "$stamp" ] && [ -x "$env/bin/python" ]; then
    echo "lava environment ready: $env"
    exit 0
fi

is310() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; }
python="${PYTHON310:-}"
if [ -z "$python" ]; then   # python3.10 on PATH (a pyenv shim may not run), else pyenv's own
    pyenv_root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
    for candidate in python3.10 "$pyenv_root"/versions/3.10*/bin/python; do
        if command -v "$candidate" >/dev/null 2>&1 && is310 "$candidate"; then python="$candidate"; break; fi
    done
fi
if [ -z "$python" ] || ! is310 "$python"; then
    echo "lava environment NOT built: no Python 3.10 found (set PYTHON310=...); the Lava tests will skip"
    exit 0
fi

mkdir -p "$root"
exec 9>"$root/.$name.lock"           # one build at a time (test runs started side by side)
flock 9
if [ -f "$stamp" ] && [ -x "$env/bin/python" ]; then
    echo "lava environment ready: $env"
    exit 0
fi
rm -rf "$env"
start=$(date +%s)
fail() {
    echo "lava environment NOT built: $1 (is PyPI reachable?); the Lava tests will skip"
    rm -rf "$env"
    exit 0
}
"$python" -m venv "$env" || fail "python -m venv failed"
pip=("$env/bin/python" -m pip install --quiet --no-cache-dir)
"${pip[@]}" --upgrade "pip<25" || fail "pip upgrade failed"
"${pip[@]}" "lava-nc==0.10.0" "lava-dl==0.6.0" "torch==2.3.1" "numpy>=1.24.4,<2" "h5py>=3.7,<4" \
    || fail "pip install lava-nc==0.10.0 lava-dl==0.6.0 failed"
"$env/bin/python" -c "import lava.lib.dl.netx, lava.magma, torch, h5py, numpy" \
    || fail "the installed packages do not import"
"$env/bin/python" - > "$stamp" <<'PY'
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in ("lava-nc", "lava-dl", "torch", "numpy", "h5py")))
PY
echo "lava environment built in $(( $(date +%s) - start )) s: $env ($(du -sh "$env" | cut -f1)); $(cat "$stamp")"
