r"""Study table b, part 2: the balance factor's learning rate, with the infini baseline (its
gate LR is the global LR, 1e-2, on the same schedule).

  python -m infini_jax.sweep --sweep=configs/sweeps/study_b_lr.py --workdir=/tmp/study
  python -m infini_jax.sweep summarize /tmp/study --sweep=configs/sweeps/study_b_lr.py \
      --group=seed --columns='passkey_beyond,passkey_beyond@*,memory_g*'
"""

from study_common import sweep


def get_sweep() -> dict:
    return sweep(
        [{}, {"optimizer.gate_learning_rate": 1e-3}, {"optimizer.gate_learning_rate": 1e-1}]
    )
