#!/usr/bin/env bash
# Run N cooperating JAX processes on this machine's CPU, the way several hosts would run: a local
# coordinator, gloo collectives, one process group. Use it to try multi-host code paths without a cluster.
#
#   launch/cpu_multiprocess.sh N COMMAND [ARGS...]
#   launch/cpu_multiprocess.sh 2 dex-portrait train --config motion_test --workdir /tmp/mp
#
# Each process gets JAX_PLATFORMS=cpu, JAX_NUM_PROCESSES=N, JAX_PROCESS_ID=i and
# JAX_COORDINATOR_ADDRESS=localhost:PORT (PORT: $DEX_COORDINATOR_PORT or a free one), which
# dex_jax.train.distributed reads. DEVICES_PER_PROCESS=k gives each process k CPU devices (default 1).
# Output lines are prefixed with the process id. SIGTERM/Ctrl-C is passed on to every process; the script
# exits with the first non-zero exit status, else 0.
set -uo pipefail
if [ "$#" -lt 2 ]; then
  sed -n '2,13p' "$0" >&2
  exit 2
fi
n="$1"; shift
port="${DEX_COORDINATOR_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}"
per="${DEVICES_PER_PROCESS:-1}"
pids=()
for ((i = 0; i < n; i++)); do
  JAX_PLATFORMS=cpu JAX_NUM_PROCESSES="$n" JAX_PROCESS_ID="$i" JAX_COORDINATOR_ADDRESS="localhost:$port" \
    XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$per" \
    "$@" > >(sed -u "s/^/[$i] /") 2>&1 &
  pids+=("$!")
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
status=0
for pid in "${pids[@]}"; do
  while wait "$pid"; code=$?; kill -0 "$pid" 2>/dev/null; do :; done  # wait again if a signal interrupted it
  if [ "$status" -eq 0 ] && [ "$code" -ne 0 ]; then status="$code"; fi
done
exit "$status"
