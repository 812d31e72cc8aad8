#!/usr/bin/env bash
# Train on every worker of a Cloud TPU pod slice at once (the same command on all hosts; JAX detects the pod).
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh --config motion_paper \
#       --workdir gs://bucket/runs/paper --config.data.dataset_dir=/mnt/disks/data/pfhq/1.0.0
#
# Needs gcloud, a TPU VM slice whose workers each hold a checkout of dex_jax at $DEX_DIR (default ~/dex_jax)
# with its .venv, and a workdir every worker can write (a GCS bucket, or a shared disk). On preemption the
# TPU runtime sends SIGTERM: a checkpoint is written and the run exits 0; run the same command to resume.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
dir="${DEX_DIR:-~/dex_jax}"
args="$(printf ' %q' "$@")"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all \
  --command "cd $dir && DEX_DISTRIBUTED=auto .venv/bin/dex-portrait train$args"
