#!/usr/bin/env bash
# The CPU study of docs/study.md, end to end: the data, the sweeps, every table and plot.
#
#   launch/study.sh [--dry-run|--tables-only] [ROOT=/tmp/study] [TABLES...]
#   TABLES: a c e b memory
#   (default: a c); b is its three parts b_init b_lr b_form, each also a table of its own;
#   memory is the memory options' sweep and its long-training part (memory_long).
#
# Re-running skips what is done (finished runs and evaluations). The tables and plots land in
# ROOT/table_*.{md,csv,png} and are copied to docs/results/study/. --dry-run prints the
# training and evaluation commands instead; --tables-only writes the tables of what has landed
# so far (while a sweep is still running on the root, say), training and evaluating nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
launcher=local
if [ "${1:-}" = --dry-run ]; then
  launcher=print
  shift
elif [ "${1:-}" = --tables-only ]; then
  launcher=none
  shift
fi
root=${1:-/tmp/study}
shift || true
[ $# -gt 0 ] || set -- a c
tables=()
for t in "$@"; do  # b is its three parts
  case $t in
    b) tables+=(b_init b_lr b_form) ;;
    memory) tables+=(memory memory_long) ;;
    *) tables+=("$t") ;;
  esac
done
data=~/.cache/infini_jax/study/kjv
if [ $launcher = print ]; then
  echo "python -m infini_jax.data.corpora kjv --output=$data --vocab_size=1024"
elif [ $launcher = local ] && [ ! -f "$data/shards/manifest.json" ]; then
  python -m infini_jax.data.corpora kjv --output="$data" --vocab_size=1024
fi
# The raw results of every run whose training and evaluations are done (its workdir without
# checkpoints, tokenizer, TensorBoard events and plots: ~300 KB) go to docs/results/study/runs/,
# so that the tables can be rebuilt, and the study resumed, from a fresh clone: a run found
# there and missing from ROOT is copied into ROOT first, and the sweep skips it (finished: its
# metrics reached the last step). Delete a run's folder there to train it again.
archived=docs/results/study/runs
archive() {  # TABLES...: copy what is done of these tables' sweeps into $archived
  python - "$root" "$archived" "$@" <<'PY'
import os, shutil, sys
from infini_jax.sweeps.runs import finished, load_sweep, plan_runs
root, dest, tables = sys.argv[1], sys.argv[2], sys.argv[3:]
for t in tables:
    for run in plan_runs(load_sweep(f"configs/sweeps/study_{t}.py"), root):
        done = [os.path.exists(os.path.join(run["workdir"], n, "summary.json")) for n, _ in run["evals"]]
        if os.path.isdir(run["workdir"]) and finished(run) and all(done):
            out = os.path.join(dest, run["name"])
            shutil.rmtree(out, ignore_errors=True)
            skip = shutil.ignore_patterns("checkpoints", "hf_tokenizer", "tensorboard", "*.png")
            shutil.copytree(run["workdir"], out, ignore=skip)
PY
}
if [ $launcher = local ] || [ $launcher = none ]; then
  mkdir -p "$root"
  for run in "$archived"/*/; do
    [ -d "$run" ] && [ ! -e "$root/$(basename "$run")" ] && cp -r "$run" "$root/"
  done
fi
for t in "${tables[@]}"; do
  [ $launcher = none ] && break
  python -m infini_jax.sweep --sweep="configs/sweeps/study_$t.py" --workdir="$root" \
    --launcher=$launcher
done
[ $launcher = print ] && exit 0
summarize() {  # TABLE OUTPUT [summarize flags]
  local t=$1 out=$2
  shift 2
  if [ $launcher = none ]; then  # a table with no runs yet is left out
    python -m infini_jax.sweep summarize "$root" --sweep="configs/sweeps/study_$t.py" \
      --output="$out" "$@" >/dev/null 2>&1 || echo "$out: no runs of study_$t.py yet"
  else
    python -m infini_jax.sweep summarize "$root" --sweep="configs/sweeps/study_$t.py" \
      --output="$out" "$@" >/dev/null
  fi
}
beyond_and_back() {  # TABLE COLUMNS BACK_COLUMNS: passkey beyond the question's segment by
  # length (table_T), and by segments back (table_T_back), grouped over seeds
  summarize "$1" "table_$1" --group=seed --curve=passkey_beyond@ --columns="$2"
  summarize "$1" "table_${1}_back" --group=seed --curve=passkey_back@ --columns="$3"
}
for t in "${tables[@]}"; do
  case $t in
    a)
      summarize a table_a --group=seed --curve=passkey_beyond@ \
        --columns='passkey@*,passkey_beyond@*,passkey_d0@*,passkey_ablated_beyond,minutes'
      summarize a table_a_kjv --group=seed --curve=kjv_seg@ \
        --columns='kjv@*,kjv_nomem@*,kjv_seg@0,kjv_seg@3,kjv_seg@15,kjv_seg@63'
      summarize a table_a_stability --columns='loss,skipped,max_grad_norm,minutes'
      summarize a table_d --group=seed --curve=passkey_back@ \
        --columns='passkey_back@*,passkey4k_back@*'
      summarize a table_d_memory --group=seed --curve=memory_norm@ \
        --columns='memory_norm@0,memory_norm@3,memory_norm@15,memory_norm@63,memory_g*'
      ;;
    b_*)
      beyond_and_back "$t" 'passkey_beyond@*,passkey_beyond,memory_g*,kjv@4096,loss,minutes' \
        'passkey_back@*,passkey@*'
      ;;
    c)
      summarize c table_c --group=seed --curve=passkey_beyond@ \
        --columns='passkey_beyond@*,passkey_beyond,kjv@*,memory_norm@63,loss,minutes'
      ;;
    memory | memory_long)
      beyond_and_back "$t" \
        'passkey_beyond@*,passkey_beyond,passkey_ablated_beyond,kjv@4096,kjv_nomem@4096,loss,minutes' \
        'passkey_back@*,passkey4k_back@*,passkey64x_beyond*'
      summarize "$t" "table_${t}_memory" --group=seed --curve=memory_norm@ \
        --columns='memory_norm@0,memory_norm@3,memory_norm@15,memory_norm@63,memory_g@*,memory_beta@*,memory_alpha@*'
      summarize "$t" "table_${t}_kjv" --group=seed --curve=kjv_seg@ \
        --columns='kjv@*,kjv_nomem@*,kjv_seg@0,kjv_seg@3,kjv_seg@15,kjv_seg@63'
      ;;
    e)
      summarize e table_e --group=seed --curve=passkey_beyond@ \
        --columns='passkey_beyond@*,passkey_beyond,kjv@*,loss,minutes'
      summarize e table_e_back --group=seed --curve=passkey_back@ \
        --columns='passkey_back@*,passkey_ablated_beyond,memory_g*'
      ;;
  esac
done
mkdir -p docs/results/study
cp "$root"/table_*.md "$root"/table_*.csv "$root"/table_*.png docs/results/study/
echo "tables in docs/results/study/"
[ $launcher = local ] || [ $launcher = none ] || exit 0
archive "${tables[@]}"
