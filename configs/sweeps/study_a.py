r"""Study table a: infini vs local vs full attention at the same parameters, data and steps.

  python -m infini_jax.sweep --sweep=configs/sweeps/study_a.py --workdir=/tmp/study
  python -m infini_jax.sweep summarize /tmp/study --sweep=configs/sweeps/study_a.py \
      --group=seed --columns='passkey@*,passkey_beyond,kjv@*,val_loss,minutes' --curve=passkey@

Also table d (accuracy by compressions: the `passkey4k_back@*` columns) and the ‖M‖ growth.
"""

from study_common import sweep


def get_sweep() -> dict:
    return sweep([{}, {"model.attention": "local"}, {"model.attention": "full"}])
