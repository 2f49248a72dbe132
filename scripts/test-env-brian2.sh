#!/usr/bin/env bash
# Side environment for the Brian2/PyNN cross-check tests (brian2 2.9 needs numpy 2.3.x).
exec bash "$(dirname "$0")/../tests/brian2_env.sh"
