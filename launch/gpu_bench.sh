#!/usr/bin/env bash
# The accelerator check of the performance issue, in a few minutes on one GPU (or TPU chip):
# the 300M config at 8K tokens for full, local and infini attention, with the fused kernel that
# `auto` picks and with the plain XLA path for comparison. Records tokens/s, MFU against the
# bf16 matmul measured in the same run and against the datasheet, and compiled memory.
#
#   launch/gpu_bench.sh OUT_DIR [extra flags for python -m infini_jax.bench]
#
# Writes OUT_DIR/auto/results.json and OUT_DIR/xla/results.json (docs/performance.md reads them).
set -euo pipefail
out=${1:?usage: launch/gpu_bench.sh OUT_DIR [bench flags]}
shift
for impl in auto xla; do
  python -m infini_jax.bench --config=configs/llama_300m_infini.py --attention_impl="$impl" \
    --lengths=8192 --full_lengths=8192 --memory_lengths=8192 --skip=compile,eval_memory,data \
    --output="$out/$impl" "$@"
done
