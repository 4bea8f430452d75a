#!/usr/bin/env bash
# Runs one infini_jax command as NUM_PROCESSES local processes that form one JAX job, each
# with DEVICES_PER_PROCESS fake CPU devices and gloo collectives on 127.0.0.1: a pod on a laptop.
#
#   launch/local.sh [--dry-run] NUM_PROCESSES DEVICES_PER_PROCESS -- COMMAND...
#   launch/local.sh 2 4 -- python -m infini_jax.train --config=configs/tiny.py \
#       --workdir=/tmp/tiny2x4 --config.mesh.data=2 --config.mesh.fsdp=2 --config.mesh.tensor=2
#
# Each process gets INFINI_JAX_COORDINATOR, INFINI_JAX_NUM_PROCESSES and INFINI_JAX_PROCESS_ID
# (read by infini_jax.train / evaluate), and its output lines are prefixed with "[i] ".
# If one process fails, the others are stopped (SIGTERM, then SIGKILL after LOCAL_GRACE_S
# seconds) and the script exits with that process's status. Ctrl-C / SIGTERM is passed on to
# every process (training saves a checkpoint, then exits).
#
# Environment: LOCAL_PORT (coordinator port; default: a free one), LOCAL_GRACE_S (default 5).
set -euo pipefail

usage() {
  echo "usage: $0 [--dry-run] NUM_PROCESSES DEVICES_PER_PROCESS -- COMMAND..." >&2
  exit 2
}

dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then
  dry_run=1
  shift
fi
[[ $# -ge 4 && "$3" == "--" ]] || usage
num_processes=$1
devices=$2
shift 3
[[ "$num_processes" =~ ^[1-9][0-9]*$ ]] || { echo "$0: NUM_PROCESSES must be a positive integer, got '$num_processes'" >&2; exit 2; }
[[ "$devices" =~ ^[1-9][0-9]*$ ]] || { echo "$0: DEVICES_PER_PROCESS must be a positive integer, got '$devices'" >&2; exit 2; }

port=${LOCAL_PORT:-}
if [[ -z "$port" ]]; then
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
grace=${LOCAL_GRACE_S:-5}

process_env() {  # the environment of process $1
  echo "INFINI_JAX_COORDINATOR=127.0.0.1:$port INFINI_JAX_NUM_PROCESSES=$num_processes" \
    "INFINI_JAX_PROCESS_ID=$1 JAX_PLATFORMS=cpu" \
    "XLA_FLAGS=--xla_force_host_platform_device_count=$devices"
}

if [[ $dry_run == 1 ]]; then
  for ((i = 0; i < num_processes; i++)); do
    printf '%s' "$(process_env "$i")"
    printf ' %q' "$@"
    echo
  done
  exit 0
fi

pids=()
stop_all() {  # SIGTERM every live process, then SIGKILL whatever is left after the grace time
  local pid deadline
  for pid in "${pids[@]}"; do ((pid)) && { kill -TERM "$pid" 2>/dev/null || true; }; done
  deadline=$((SECONDS + grace))
  while ((SECONDS < deadline)); do
    local alive=0
    for pid in "${pids[@]}"; do ((pid)) && kill -0 "$pid" 2>/dev/null && alive=1 || true; done
    ((alive)) || return 0
    sleep 0.2
  done
  for pid in "${pids[@]}"; do ((pid)) && { kill -KILL "$pid" 2>/dev/null || true; }; done
  for pid in "${pids[@]}"; do ((pid)) && { wait "$pid" 2>/dev/null || true; }; done  # reaped
  return 0
}
trap 'echo "local.sh: interrupted; stopping all processes" >&2; stop_all; exit 130' INT TERM

for ((i = 0; i < num_processes; i++)); do
  # shellcheck disable=SC2046  # process_env is split into NAME=VALUE words on purpose
  env $(process_env "$i") "$@" > >(sed -u "s/^/[$i] /") 2> >(sed -u "s/^/[$i] /" >&2) &
  pids+=($!)
done

running=$num_processes
while ((running > 0)); do
  sleep 0.2
  for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    [[ "$pid" == 0 ]] && continue  # already ended
    kill -0 "$pid" 2>/dev/null && continue
    code=0
    wait "$pid" || code=$?
    pids[i]=0
    running=$((running - 1))
    if ((code != 0)); then
      echo "local.sh: process $i exited with status $code; stopping the other processes" >&2
      stop_all
      exit "$code"
    fi
  done
done
