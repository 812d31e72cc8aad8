#!/usr/bin/env bash
# Train on this machine with every local device (all GPUs, or the CPU): one process, no coordinator.
#
#   launch/local.sh --config motion_synth:1 --workdir runs/synth [--config.a.b=value ...]
#
# Arguments go to `dex-portrait train` unchanged. Run it again with the same --workdir to resume; Ctrl-C or
# SIGTERM writes a checkpoint first. DEX_PORTRAIT overrides the command (default: the one on PATH, else .venv's).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${DEX_PORTRAIT:-$(command -v dex-portrait || echo "$here/.venv/bin/dex-portrait")}"
exec "$cmd" train "$@"
