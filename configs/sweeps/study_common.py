"""What every study sweep shares (docs/study.md): the base config, the seeds, the evaluations.

All study sweeps run into one root, so the runs they share (the infini baseline of each seed,
named "seed=S") are trained once; each sweep lists only the runs its table changes.
"""

import os

from infini_jax.config import load_preset

BASE = "configs/study.py"
SEEDS = [0, 1]
HELDOUT = os.path.join(os.path.dirname(load_preset("study").data.tokenizer), "heldout.jsonl")
INFINI = {"model.attention": "infini"}  # the condition of the memory-only evaluations

PASSKEY = {  # 1×, 2×, 4× and 16× the training length, needle depth 0–100%: 160 samples
    "lengths": (256, 512, 1024, 4096),
    "depths": (0, 25, 50, 75, 100),
    "samples_per_cell": 8,
    "key_digits": 2,
}
EVALS = {
    "passkey": ("configs/eval/passkey.py", PASSKEY),
    "passkey_ablated": ("configs/eval/passkey.py", {**PASSKEY, "ablate_memory": True}, INFINI),
    # Accuracy by compressions at a fixed 4,096 tokens (64 segments): depth 0–100% step 10.
    "passkey4k": (
        "configs/eval/passkey.py",
        {**PASSKEY, "lengths": (4096,), "depths": tuple(range(0, 101, 10))},
    ),
    # Held-out KJV books: NLL by segment at 1×, 4× and 16× the training length.
    "kjv": (
        "configs/eval/ppl_by_position.py",
        {"lengths": (256, 1024, 4096), "samples_per_cell": 4, "corpus": HELDOUT},
    ),
    # g(b) per layer and head; ‖M‖ after each of 64 segments of held-out text.
    "memory": (
        "configs/eval/memory_stats.py",
        {"lengths": (4096,), "samples_per_cell": 4, "corpus": HELDOUT},
        INFINI,
    ),
}


def sweep(runs: list[dict]) -> dict:
    """The study sweep of `runs` (each crossed with the seeds), with every evaluation."""
    return {"base": BASE, "runs": runs, "grid": {"seed": SEEDS}, "evals": EVALS}
