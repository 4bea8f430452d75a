#!/usr/bin/env bash
# Cloud TPU VM pods: create (or queue), install, run on every worker, logs, stop, delete.
#
#   launch/tpu.sh [--dry-run] create|install|run|logs|stop|delete [-- COMMAND...]
#
#   export PROJECT=my-project ZONE=us-east5-a TPU_NAME=infini ACCELERATOR_TYPE=v5p-32 \
#          RUNTIME_VERSION=v2-alpha-tpuv5
#   launch/tpu.sh create                  # QUEUED=1: a queued resource; SPOT=1: spot capacity
#   launch/tpu.sh install                 # this checkout → every worker, pip install -e ".[tpu]"
#   launch/tpu.sh run -- python3 -m infini_jax.train --config=configs/llama_300m_infini.py \
#       --workdir=gs://my-bucket/runs/300m --config.mesh.fsdp=-1
#   launch/tpu.sh logs                    # worker 0's log, followed
#   launch/tpu.sh stop                    # SIGTERM on every worker: checkpoint, then exit
#   launch/tpu.sh delete
#
# `run` starts the same command on --worker=all with INFINI_JAX_DISTRIBUTED=1, so every process
# calls jax.distributed.initialize() and finds the pod's workers itself; output streams back and
# is kept in ~/infini_jax.log on each worker. The workdir is a gs:// URL that every worker writes
# directly (checkpoints, metrics, TensorBoard events, config, report). Prepared data shards are
# read from local disk: with DATA_BUCKET=my-data-bucket, `install` also mounts it read-only at
# $MOUNT (default /mnt/data) with Cloud Storage FUSE, for --config.data.source=/mnt/data/...
# --dry-run (or DRY_RUN=1) prints every gcloud command instead of running it.
#
# Multi-slice: SLICES=N (N > 1) queues N slices of ACCELERATOR_TYPE as one queued resource
# (nodes TPU_NAME-0 .. TPU_NAME-{N-1}, joined over the data-center network); every other action
# then runs on every worker of every slice. The training command must say so too:
# --config.mesh.slices=N (the data axis spans the slices; `train` refuses a mismatch).
set -euo pipefail

dry_run=${DRY_RUN:-0}
if [[ "${1:-}" == "--dry-run" ]]; then
  dry_run=1
  shift
fi
action=${1:-}
[[ -n "$action" ]] || { sed -n '2,27p' "$0" >&2; exit 2; }
shift
if [[ "${1:-}" == "--" ]]; then shift; fi

: "${PROJECT:?set PROJECT (the Google Cloud project)}"
: "${ZONE:?set ZONE (e.g. us-east5-a)}"
: "${TPU_NAME:?set TPU_NAME (the TPU VM / queued resource name)}"
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v5p-8}
RUNTIME_VERSION=${RUNTIME_VERSION:-v2-alpha-tpuv5}
REPO_DIR=${REPO_DIR:-infini_jax}  # on the workers, relative to the home directory
MOUNT=${MOUNT:-/mnt/data}
SLICES=${SLICES:-1}
[[ "$SLICES" =~ ^[1-9][0-9]*$ ]] || { echo "$0: SLICES must be a positive integer" >&2; exit 2; }
if ((SLICES > 1)); then
  QUEUED=1  # multi-slice needs a queued resource
  mapfile -t NODES < <(for ((i = 0; i < SLICES; i++)); do echo "$TPU_NAME-$i"; done)
else
  NODES=("$TPU_NAME")
fi

run() {  # prints the command (dry run) or runs it
  if [[ "$dry_run" == 1 ]]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}

tpu_ssh() {  # tpu_ssh WORKER COMMAND_STRING: on every slice's node at once (worker 0: the first)
  local node nodes=("${NODES[@]}") pids=()
  [[ "$1" == all ]] || nodes=("${NODES[0]}")
  for node in "${nodes[@]}"; do
    if [[ "$dry_run" == 1 ]]; then  # printed in order
      run gcloud compute tpus tpu-vm ssh "$node" --project="$PROJECT" --zone="$ZONE" \
        --worker="$1" --command="$2"
      continue
    fi
    gcloud compute tpus tpu-vm ssh "$node" --project="$PROJECT" --zone="$ZONE" \
      --worker="$1" --command="$2" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
}

case "$action" in
  create)
    spot=()
    [[ "${SPOT:-0}" == 1 ]] && spot=(--spot)
    nodes=(--node-id="$TPU_NAME")
    ((SLICES > 1)) && nodes=(--node-count="$SLICES" --node-prefix="$TPU_NAME")
    if [[ "${QUEUED:-0}" == 1 ]]; then
      run gcloud compute tpus queued-resources create "$TPU_NAME" "${nodes[@]}" \
        --project="$PROJECT" --zone="$ZONE" --accelerator-type="$ACCELERATOR_TYPE" \
        --runtime-version="$RUNTIME_VERSION" "${spot[@]}"
    else
      run gcloud compute tpus tpu-vm create "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" \
        --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "${spot[@]}"
    fi
    ;;
  install)
    archive=$(mktemp -d)/infini_jax.tar.gz
    run git -C "$(dirname "$0")/.." archive --format=tar.gz -o "$archive" HEAD
    for node in "${NODES[@]}"; do
      run gcloud compute tpus tpu-vm scp "$archive" "$node": --project="$PROJECT" \
        --zone="$ZONE" --worker=all
    done
    mount=""
    if [[ -n "${DATA_BUCKET:-}" ]]; then
      mount=" && sudo mkdir -p $MOUNT && (mountpoint -q $MOUNT || \
sudo gcsfuse --implicit-dirs -o ro,allow_other $DATA_BUCKET $MOUNT)"
    fi
    tpu_ssh all "mkdir -p ~/$REPO_DIR && tar xzf ~/infini_jax.tar.gz -C ~/$REPO_DIR && \
pip install -q -e ~/$REPO_DIR'[tpu]'$mount"
    ;;
  run)
    [[ $# -gt 0 ]] || { echo "$0 run: give the command after --" >&2; exit 2; }
    tpu_ssh all "cd ~/$REPO_DIR && INFINI_JAX_DISTRIBUTED=1 $(printf '%q ' "$@") 2>&1 | tee -a ~/infini_jax.log"
    ;;
  logs)
    tpu_ssh 0 "tail -n 100 -f ~/infini_jax.log"
    ;;
  stop)
    tpu_ssh all "pkill -TERM -f 'infini_jax\.(train|evaluate)' || true"
    ;;
  delete)
    if [[ "${QUEUED:-0}" == 1 ]]; then
      run gcloud compute tpus queued-resources delete "$TPU_NAME" --project="$PROJECT" \
        --zone="$ZONE" --force --quiet
    else
      run gcloud compute tpus tpu-vm delete "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" --quiet
    fi
    ;;
  *)
    echo "$0: unknown action '$action' (create, install, run, logs, stop, delete)" >&2
    exit 2
    ;;
esac
