#!/usr/bin/env bash
# The accelerator check of the performance issue, in a few minutes on one GPU (or TPU chip):
# the 300M config at 8K tokens for full, local and infini attention, with the fused kernel that
# `auto` picks, with the plain XLA path for comparison, and with the remat / batch settings
# that fit one H100 by the CPU compiler's estimate (`python -m infini_jax.plan --search`; no
# recomputed forward pass: remat_policy=none, batch 8 in 4 micro-batches; and dots_saveable at
# batch 4). Records tokens/s, MFU against the bf16 matmul measured in the same run and against
# the datasheet, and compiled memory. Then the memory path alone (`bench.memory_path`): its MFU
# next to the step's, which says how much of infini's cost over local is the memory's products.
#
#   launch/gpu_bench.sh OUT_DIR [extra flags for python -m infini_jax.bench]
#
# Writes OUT_DIR/{auto,xla,none_b8_m4,dots_b4}/results.json and OUT_DIR/memory_path/
# memory_path.json (docs/performance.md reads them).
set -euo pipefail
out=${1:?usage: launch/gpu_bench.sh OUT_DIR [bench flags]}
shift
bench() {  # NAME ATTENTION_IMPL [--set=...]
  local name=$1 impl=$2
  shift 2
  python -m infini_jax.bench --config=configs/llama_300m_infini.py --attention_impl="$impl" \
    --lengths=8192 --full_lengths=8192 --memory_lengths=8192 \
    --skip=compile,eval_memory,data,memory_path \
    --output="$out/$name" "$@"
}
bench auto auto "$@"
bench xla xla "$@"
bench none_b8_m4 auto --set=model.remat_policy=none,optimizer.micro_batches=4,data.batch_size=8 "$@"
bench dots_b4 auto --set=model.remat_policy=dots_saveable "$@"
python -m infini_jax.bench.memory_path --config=configs/llama_300m_infini.py --lengths=8192 \
  --output="$out/memory_path"
