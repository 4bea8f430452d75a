r"""Study table e: full backprop through the memory vs cut at every segment boundary (the baseline
backpropagates through all 4 segments of a training sequence).

  python -m infini_jax.sweep --sweep=configs/sweeps/study_e.py --workdir=/tmp/study
  python -m infini_jax.sweep summarize /tmp/study --sweep=configs/sweeps/study_e.py \
      --group=seed --columns='passkey_beyond,passkey@*,kjv@*,val_loss'
"""

from study_common import sweep


def get_sweep() -> dict:
    return sweep([{}, {"model.bptt_segments": 1}])
