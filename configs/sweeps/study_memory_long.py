r"""Study table m, part 2: the best arm of study_memory.py trained at 4× the training length
(1,024 tokens = 16 segments of 64): what a memory learns to keep (or to forget) over many
compressions, it learns only from sequences that hold that many.

The best arm is the exact delta with L2 keys (no β, no decay): with both seeds it found 91% and
100% of the needles beyond the question's segment at 16× the training length, and 69% and 100%
at 64×, ahead of every arm trained so far (docs/study.md, table m). Today's memory is trained at
the same length beside it. The synthetic passkey documents grow with the training length
(768–1,024 tokens: one document per row, so a needle can lie up to 15 segments back); the KJV
windows are 1,024 tokens; the evaluations are every study run's.

Two budgets:
- **Same sequences** (2 seeds): 16 sequences × 1,024 tokens per step for the same 3,000 steps,
  so the model sees as many passkey questions as every other arm (7 of 8 rows), with 4× the
  tokens (~4× the time).
- **Same tokens** (seed 0 only, run first): 4 sequences × 1,024 tokens per step, the tokens of
  every other arm's step. It trains on a quarter of the questions, and with this budget
  neither arm learned any retrieval (0% even with the needle in the question's segment;
  docs/study.md), so it stays as that finding, not as the arm.

Its runs share the root of configs/sweeps/study_memory.py:

  python -m infini_jax.sweep --sweep=configs/sweeps/study_memory_long.py --workdir=/tmp/study
"""

from study_common import SEEDS
from study_memory import EVALS, L2

LONG = {
    "data.seq_len": 1024,
    "data.synthetic.min_length": 768,
    "data.synthetic.max_length": 1024,
}
# batch_size second: the runs' names (their workdirs) follow the keys' order.
SAME_TOKENS = {"data.seq_len": 1024, "data.batch_size": 4, **LONG}
ARMS = [L2, {}]  # the best arm, and today's memory at the same length


def get_sweep() -> dict:
    first = [{**arm, **SAME_TOKENS, "seed": 0} for arm in ARMS]
    runs = [{**arm, **LONG, "seed": seed} for seed in SEEDS for arm in ARMS]
    return {"base": "configs/study.py", "runs": first + runs, "evals": EVALS}
