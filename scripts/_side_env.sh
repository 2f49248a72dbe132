# Sourced by scripts/test-env-*.sh: build one side environment for the vendors' software, once.
#
#     side_env NAME LABEL PY_VERSION PIP_SPEC CHECK_CODE STAMP_PACKAGES INSTALL_ARGS...
#
# NAME: the folder under $SNN_DELAYS_ENVS (default ~/.cache/snn-delays/envs), named after the
# versions it holds; LABEL: the word in messages (lava, nest); PY_VERSION: 3.10 or 3.11 (found on
# PATH or in pyenv; $PYTHON310 / $PYTHON311 override); PIP_SPEC: what pip upgrades itself to;
# CHECK_CODE: Python run in the new environment that must succeed; STAMP_PACKAGES: the packages
# whose versions the ".complete" stamp records; INSTALL_ARGS: pip install's arguments.
# A no-op (no Python started) once the stamp is there; two builds started at once wait for each
# other (flock). Without the Python or a reachable registry it prints why and exits 0, so that the
# tests needing it skip with that reason.
side_env() {
    local name="$1" label="$2" pyver="$3" pip_spec="$4" check="$5" stamp_packages="$6"
    shift 6
    local root="${SNN_DELAYS_ENVS:-$HOME/.cache/snn-delays/envs}"
    local env="$root/$name"
    local stamp="$env/.complete"
    if [ -f "$stamp" ] && [ -x "$env/bin/python" ]; then
        echo "$label environment ready: $env"
        return 0
    fi
    local override="PYTHON${pyver/./}"
    local python="${!override:-}"
    is_version() { "$1" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$pyver'.split('.'))))" \
        >/dev/null 2>&1; }
    if [ -z "$python" ]; then   # python3.X on PATH (a pyenv shim may not run), else pyenv's own
        local pyenv_root candidate
        pyenv_root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
        for candidate in "python$pyver" "$pyenv_root"/versions/"$pyver"*/bin/python; do
            if command -v "$candidate" >/dev/null 2>&1 && is_version "$candidate"; then python="$candidate"; break; fi
        done
    fi
    if [ -z "$python" ] || ! is_version "$python"; then
        echo "$label environment NOT built: no Python $pyver found (set $override=...); the $label tests will skip"
        return 0
    fi
    mkdir -p "$root"
    exec 9>"$root/.$name.lock"           # one build at a time (test runs started side by side)
    flock 9
    if [ -f "$stamp" ] && [ -x "$env/bin/python" ]; then
        echo "$label environment ready: $env"
        return 0
    fi
    rm -rf "$env"
    local start
    start=$(date +%s)
    local pip=("$env/bin/python" -m pip install --quiet --no-cache-dir)
    if ! "$python" -m venv "$env"; then side_env_failed "$label" "$env" "python -m venv failed"; return 0; fi
    if ! "${pip[@]}" --upgrade "$pip_spec"; then side_env_failed "$label" "$env" "pip upgrade failed"; return 0; fi
    if ! "${pip[@]}" "$@"; then side_env_failed "$label" "$env" "pip install $* failed"; return 0; fi
    if ! "$env/bin/python" -c "$check" >/dev/null 2>&1; then
        side_env_failed "$label" "$env" "the installed packages do not import or run"; return 0
    fi
    "$env/bin/python" -c "from importlib.metadata import version
print(' '.join(f'{p}=={version(p)}' for p in '$stamp_packages'.split()))" > "$stamp"
    echo "$label environment built in $(( $(date +%s) - start )) s: $env ($(du -sh "$env" | cut -f1)); $(cat "$stamp")"
}

side_env_failed() {
    echo "$1 environment NOT built: $3 (is PyPI reachable?); the $1 tests will skip"
    rm -rf "$2"
}
