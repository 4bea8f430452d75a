r"""Study table b, part 3: the gate's form (the paper's sigmoid vs our hard-sigmoid default) and
weight decay on b (which pulls it toward 0, an even mix), with the infini baseline.

  python -m infini_jax.sweep --sweep=configs/sweeps/study_b_form.py --workdir=/tmp/study
  python -m infini_jax.sweep summarize /tmp/study --sweep=configs/sweeps/study_b_form.py \
      --group=seed --columns='passkey_beyond,passkey_beyond@*,memory_g*'
"""

from study_common import sweep


def get_sweep() -> dict:
    return sweep([{}, {"model.gate": "sigmoid"}, {"optimizer.gate_weight_decay": 0.1}])
