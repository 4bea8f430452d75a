r"""Study table b, part 1: the balance factor's initial value b, with the infini baseline
(hard-sigmoid gate, gate LR = the global LR 1e-2, no gate weight decay, b = 0 at step 0).
b = −2 starts leaning on local attention (g = 0.1), b = +2 on the memory (g = 0.9). ±3, the
usual range for a sigmoid gate, is past the hard sigmoid's clip: clip(0.2·b + 0.5, 0, 1) is
flat beyond |b| = 2.5, where b gets no gradient and never moves (config validation refuses
it), so ±2 is the widest start that can still learn.

  python -m infini_jax.sweep --sweep=configs/sweeps/study_b_init.py --workdir=/tmp/study
  python -m infini_jax.sweep summarize /tmp/study --sweep=configs/sweeps/study_b_init.py \
      --group=seed --columns='passkey_beyond,passkey_beyond@*,memory_g*'
"""

from study_common import sweep


def get_sweep() -> dict:
    return sweep([{}, {"model.balance_init": -2.0}, {"model.balance_init": 2.0}])
