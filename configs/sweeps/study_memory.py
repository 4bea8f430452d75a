r"""Study table m: compressive memories beyond the paper's (docs/study.md, issue 33).

Arms, one change at a time from today's memory (the delta rule in one step per segment, ELU+1
features), each with 2 seeds, in one root with the other study tables:

  python -m infini_jax.sweep --sweep=configs/sweeps/study_memory.py --workdir=/tmp/study
  python -m infini_jax.sweep summarize /tmp/study --sweep=configs/sweeps/study_memory.py \
      --group=seed --curve=passkey_beyond@ --columns='passkey_beyond@*,passkey_back@*'

Runs are listed seed-major (seed 0 of every arm first), so a sweep stopped half-way already
has one seed of each arm. The longer training length (16 segments) is
configs/sweeps/study_memory_long.py.
"""

from study_common import EVALS, SEEDS

EXACT = {"model.memory_update": "exact_delta"}
L2 = {**EXACT, "model.memory_features": "l2"}
BETA = {**L2, "model.write_strength": True}
GATED = {**BETA, "model.decay": "data"}  # the full gated delta rule, α once per segment
ARMS = [
    GATED,
    L2,
    BETA,
    EXACT,
    {"model.memory_update": "linear", "model.decay": "data"},  # decay only: the control
    {},  # today's infini (the other tables' baseline: seed=S)
    {"model.attention": "local"},
    {"model.attention": "full"},
]


def get_sweep() -> dict:
    runs = [{**arm, "seed": seed} for seed in SEEDS for arm in ARMS]
    return {"base": "configs/study.py", "runs": runs, "evals": EVALS}
