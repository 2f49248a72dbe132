#!/usr/bin/env bash
# Install everything the tests need into .venv and run the test suite (what .ci/run calls).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
for extra in scripts/test-env-*.sh; do   # optional side environments (e.g. Brian2), if any
    [ -e "$extra" ] && bash "$extra"
done
exec .venv/bin/python -m pytest -q "$@"
