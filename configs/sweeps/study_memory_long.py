r"""Study table m, part 2: the best arm of study_memory.py trained at 4× the training length
(1,024 tokens = 16 segments of 64): what a memory learns to keep (or to forget) over many
compressions, it learns only from sequences that hold that many.

The best arm is the exact delta with L2 keys (no β, no decay): with both seeds it found 91% and
100% of the needles beyond the question's segment at 16× the training length, and 69% and 100%
at 64×, ahead of every arm trained so far (docs/study.md, table m). Today's memory is trained at
the same length beside it.

Same budget as every study run: 4 sequences × 1,024 tokens per step (the others: 16 × 256), the
same 3,000 steps, data and evaluations. The synthetic passkey documents grow with the training
length (768–1,024 tokens: one document per row, so a needle can lie up to 15 segments back);
the KJV windows are 1,024 tokens. Its runs share the root of configs/sweeps/study_memory.py:

  python -m infini_jax.sweep --sweep=configs/sweeps/study_memory_long.py --workdir=/tmp/study
"""

from study_common import SEEDS
from study_memory import EVALS, L2

LONG = {
    "data.seq_len": 1024,
    "data.batch_size": 4,
    "data.synthetic.min_length": 768,
    "data.synthetic.max_length": 1024,
}
ARMS = [{**L2, **LONG}, {**LONG}]  # the best arm, and today's memory at the same length


def get_sweep() -> dict:
    runs = [{**arm, "seed": seed} for seed in SEEDS for arm in ARMS]
    return {"base": "configs/study.py", "runs": runs, "evals": EVALS}
