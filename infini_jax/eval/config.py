"""Evaluation configs: the fields every task shares, the shared presets, and their check.

`configs/eval/<task>.py` call `task_config(task, arg, ...)` with their own defaults and the
values of their "quick" CPU preset.
"""

import ml_collections

from infini_jax.config import override, preset
from infini_jax.errors import check, check_choice, check_positive_ints, is_int
from infini_jax.parallel.sharding import MeshConfig

TASKS = ("passkey", "niah", "ppl_by_position", "memory_stats")
QUICK_GRID = {  # the retrieval tasks' "quick" preset: a few minutes on CPU for the tiny model
    "lengths": (256, 1024, 4096),
    "depths": (0, 25, 50, 75, 100),
    "samples_per_cell": 8,
}


def base_config(task: str) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.task = task  # One of passkey, niah, ppl_by_position, memory_stats.
    config.lengths = (1024, 2048, 4096, 8192, 16384, 32768)  # Context lengths in tokens.
    config.depths = tuple(range(0, 101, 10))  # Needle depths in percent (0 = furthest back).
    config.samples_per_cell = 20  # Seeded samples per (length, depth) cell (or per length).
    config.seed = 0  # Every sample is a pure function of (seed, task, length, depth, index).
    config.key_digits = 5  # Digits of passkeys / magic numbers.
    config.batch_size = 8  # Samples streamed together (split over the mesh's data axes).
    config.chunk_segments = 16  # Segments per jitted call; device memory is O(chunk).
    config.ablate_memory = False  # Infini models: hand every segment an empty memory (reads off).
    config.full_context = 0  # "full" models: 0 = the whole sample; C = its last C tokens.
    config.corpus = ""  # niah haystack / ppl documents: globs of text/JSONL/Parquet; "" = built-in.
    config.text_field = "text"  # JSONL / Parquet field holding the text.
    config.corpus_max_tokens = 4_000_000  # Stop reading the corpus after this many tokens.
    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1  # Data-parallel replicas for the sample batch; -1 = all devices.
    config.mesh.fsdp = 1  # Parameter sharding axis (parameters follow the training rules).
    config.mesh.tensor = 1  # Tensor-parallel axis.
    config.mesh.slices = 1  # TPU slices over DCN; the data axis spans them (as in training).
    return config


def task_config(
    task: str, arg: str | None, defaults: dict, quick: dict
) -> ml_collections.ConfigDict:
    """`base_config(task)` with the task's `defaults`, then preset `arg`: "" or "quick"."""
    config = override(base_config(task), defaults)
    return preset(config, arg, {"": {}, "quick": quick}, f"{task}.py")


def validate_eval(config: ml_collections.ConfigDict) -> None:
    """One `ConfigError` line for the first bad field."""
    check_choice(config.task, TASKS, "task")
    lengths = tuple(config.lengths)
    check(
        bool(lengths) and all(is_int(n) and n > 0 for n in lengths),
        f"config.lengths={lengths!r} must be positive integers, e.g. '(1024,4096)'",
    )
    depths = tuple(config.depths)
    check(
        bool(depths) and all(is_int(d) and 0 <= d <= 100 for d in depths),
        f"config.depths={depths!r} must be integer percentages in [0, 100]",
    )
    names = ("samples_per_cell", "key_digits", "batch_size", "chunk_segments")
    check_positive_ints({k: config[k] for k in names}, "")
    check(
        is_int(config.full_context) and config.full_context >= 0,
        f"config.full_context={config.full_context!r} must be 0 (whole sample) or a length",
    )
    MeshConfig.from_config(config.mesh)
