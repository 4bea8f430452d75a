r"""Study table c: linear vs delta memory update (the baseline is delta).

  python -m infini_jax.sweep --sweep=configs/sweeps/study_c.py --workdir=/tmp/study
  python -m infini_jax.sweep summarize /tmp/study --sweep=configs/sweeps/study_c.py \
      --group=seed --columns='passkey_beyond,passkey@*,kjv@*,memory_norm@63,val_loss'
"""

from study_common import sweep


def get_sweep() -> dict:
    return sweep([{}, {"model.memory_update": "linear"}])
