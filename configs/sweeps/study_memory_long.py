r"""Study table m, part 2: the full gated delta memory trained at 4× the training length
(1,024 tokens = 16 segments of 64), since forgetting is learned only from long enough sequences.

Same budget as every study run: 4 sequences × 1,024 tokens per step (the others: 16 × 256), the
same 3,000 steps, data and evaluations. The synthetic passkey documents grow with the training
length (768–1,024 tokens: one document per row, so a needle can lie up to 15 segments back);
the KJV windows are 1,024 tokens. Its runs share the root of configs/sweeps/study_memory.py:

  python -m infini_jax.sweep --sweep=configs/sweeps/study_memory_long.py --workdir=/tmp/study
"""

from study_common import SEEDS
from study_memory import EVALS, GATED

LONG = {
    "data.seq_len": 1024,
    "data.batch_size": 4,
    "data.synthetic.min_length": 768,
    "data.synthetic.max_length": 1024,
}
ARMS = [{**GATED, **LONG}, {**LONG}]  # the gated delta, and today's memory at the same length


def get_sweep() -> dict:
    runs = [{**arm, "seed": seed} for seed in SEEDS for arm in ARMS]
    return {"base": "configs/study.py", "runs": runs, "evals": EVALS}
