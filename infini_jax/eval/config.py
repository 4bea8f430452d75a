"""Evaluation configs: the fields every task shares, the shared presets, and their check.

`configs/eval/<task>.py` call `task_config(task, arg, ...)` with their own defaults and the
values of their "quick" CPU preset.
"""

import ml_collections

from infini_jax.config import override, preset
from infini_jax.errors import check, check_choice, check_positive_ints, is_int
from infini_jax.sharding import MeshConfig

TASKS = ("passkey", "niah", "ppl_by_position", "memory_stats")
QUICK_GRID = {  # the retrieval tasks' "quick" preset: a few minutes on CPU for the tiny model
    "lengths": (256, 1024, 4096),
    "depths": (0, 25, 50, 75, 100),
    "samples_per_cell": 8,
}


def base_config(task: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = task  # One of passkey, niah, ppl_by_position, memory_stats.
    c.lengths = (1024, 2048, 4096, 8192, 16384, 32768)  # Context lengths in tokens.
    c.depths = tuple(range(0, 101, 10))  # Needle depths in percent (0 = furthest back).
    c.samples_per_cell = 20  # Seeded samples per (length, depth) cell (per length if no depth).
    c.seed = 0  # Every sample is a pure function of (seed, task, length, depth, index).
    c.key_digits = 5  # Digits of passkeys / magic numbers.
    c.batch_size = 8  # Samples streamed together (split over the mesh's data axes).
    c.chunk_segments = 16  # Segments per jitted call; device memory is O(chunk), not O(length).
    c.ablate_memory = False  # Infini models: hand every segment an empty memory (reads off).
    c.full_context = 0  # "full" models: 0 = attend over the whole sample; C = its last C tokens.
    c.corpus = ""  # niah haystack / ppl documents: globs of text/JSONL/Parquet; "" = built-in.
    c.text_field = "text"  # JSONL / Parquet field holding the text.
    c.corpus_max_tokens = 4_000_000  # Stop reading the corpus after this many tokens.
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # Data-parallel replicas for the sample batch; -1 = all devices.
    c.mesh.fsdp = 1  # Parameter sharding axis (parameters follow the training rules).
    c.mesh.tensor = 1  # Tensor-parallel axis.
    return c


def task_config(
    task: str, arg: str | None, defaults: dict, quick: dict
) -> ml_collections.ConfigDict:
    """`base_config(task)` with the task's `defaults`, then preset `arg`: "" or "quick"."""
    config = override(base_config(task), defaults)
    return preset(config, arg, {"": {}, "quick": quick}, f"{task}.py")


def validate_eval(c: ml_collections.ConfigDict) -> None:
    """One `ConfigError` line for the first bad field."""
    check_choice(c.task, TASKS, "task")
    lengths = tuple(c.lengths)
    check(
        bool(lengths) and all(is_int(n) and n > 0 for n in lengths),
        f"config.lengths={lengths!r} must be positive integers, e.g. '(1024,4096)'",
    )
    depths = tuple(c.depths)
    check(
        bool(depths) and all(is_int(d) and 0 <= d <= 100 for d in depths),
        f"config.depths={depths!r} must be integer percentages in [0, 100]",
    )
    names = ("samples_per_cell", "key_digits", "batch_size", "chunk_segments")
    check_positive_ints({k: c[k] for k in names}, "")
    check(
        is_int(c.full_context) and c.full_context >= 0,
        f"config.full_context={c.full_context!r} must be 0 (whole sample) or a length",
    )
    MeshConfig.from_config(c.mesh)
