r"""Study table b: the balance factor, one change at a time from the infini baseline
(hard-sigmoid gate, gate LR = the global LR 1e-2, no gate weight decay, init b = 0).

  python -m infini_jax.sweep --sweep=configs/sweeps/study_b.py --workdir=/tmp/study
  python -m infini_jax.sweep summarize /tmp/study --sweep=configs/sweeps/study_b.py \
      --group=seed --columns='passkey_beyond,passkey@*,memory_g*,val_loss'
"""

from study_common import sweep


def get_sweep() -> dict:
    return sweep(
        [
            {},
            {"model.gate": "sigmoid"},
            {"optimizer.gate_learning_rate": 1e-3},
            {"optimizer.gate_learning_rate": 1e-1},
            {"optimizer.gate_weight_decay": 0.1},
            {"model.balance_init": -3.0},
            {"model.balance_init": 3.0},
        ]
    )
