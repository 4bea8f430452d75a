r"""Study table m: compressive memories beyond the paper's (docs/study.md, issue 33).

Arms, one change at a time from today's memory (the delta rule in one step per segment, ELU+1
features), each with 2 seeds, in one root with the other study tables:

  python -m infini_jax.sweep --sweep=configs/sweeps/study_memory.py --workdir=/tmp/study
  python -m infini_jax.sweep summarize /tmp/study --sweep=configs/sweeps/study_memory.py \
      --group=seed --curve=passkey_beyond@ --columns='passkey_beyond@*,passkey_back@*'

Runs are listed in the order the verdict needs them (the sweep resumes, so the study spans
several sittings): today's memory and the local bound (seed 0), then one seed of each other
arm, then the second seed of the arm that led on the first (the exact delta with L2 keys) and
of the two it is compared with (today's memory, the local bound), then the rest, and the full
gated delta last: its two seeds were trained first
(2026-12-07, tables in docs/results/study/) in a root that did not survive, and run again so
that every table comes from one root. The longer training length (16 segments) is
configs/sweeps/study_memory_long.py.
"""

from study_common import EVALS as COMMON_EVALS
from study_common import PASSKEY, SEEDS

from infini_jax.defaults import DELTA_L2, GATED_DELTA

# The study's evaluations, and passkey at 64× the training length (16,384 tokens = 256
# segments, 40 samples: under a minute per run on CPU, so every arm gets it, not only the
# best two).
EVALS = {
    **COMMON_EVALS,
    "passkey64x": ("configs/eval/passkey.py", {**PASSKEY, "lengths": (16384,)}),
}

EXACT = {"model.memory_update": "exact_delta"}
L2 = {**EXACT, "model.memory_features": "l2"}
BETA = {**L2, "model.write_strength": True}
GATED = {**BETA, "model.decay": "data"}  # the full gated delta rule, α once per segment
assert GATED == GATED_DELTA  # the presets named "gated" are this arm
assert {**DELTA_L2, **L2} == DELTA_L2  # and those named "delta_l2" this one (defaults aside)
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


TODAY, LOCAL = ARMS[5], ARMS[6]
FIRST = [(TODAY, 0), (LOCAL, 0), (L2, 0), (BETA, 0), (EXACT, 0), (L2, 1), (TODAY, 1), (LOCAL, 1)]
LAST = [(GATED, 0), (GATED, 1)]


def get_sweep() -> dict:
    rest = [(arm, seed) for seed in SEEDS for arm in ARMS if (arm, seed) not in FIRST + LAST]
    runs = [{**arm, "seed": seed} for arm, seed in FIRST + rest + LAST]
    return {"base": "configs/study.py", "runs": runs, "evals": EVALS}
