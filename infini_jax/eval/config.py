"""Evaluation configs: the fields every task shares, and their validation.

`configs/eval/<task>.py` start from `base_config(task)` and set their own defaults.
"""

import ml_collections

from infini_jax.config import ConfigError

TASKS = ("passkey", "niah", "ppl_by_position", "memory_stats")


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


def _fail(message: str) -> None:
    raise ConfigError(message)


def validate_eval(c: ml_collections.ConfigDict) -> None:
    """One `ConfigError` line for the first bad field."""
    if c.task not in TASKS:
        _fail(f"config.task={c.task!r} is not one of {TASKS}")
    lengths = tuple(c.lengths)
    if not lengths or not all(isinstance(n, int) and n > 0 for n in lengths):
        _fail(f"config.lengths={lengths!r} must be positive integers, e.g. '(1024,4096)'")
    depths = tuple(c.depths)
    if not depths or not all(isinstance(d, int) and 0 <= d <= 100 for d in depths):
        _fail(f"config.depths={depths!r} must be integer percentages in [0, 100]")
    for name in ("samples_per_cell", "key_digits", "batch_size", "chunk_segments"):
        value = c[name]
        if not (isinstance(value, int) and value > 0):
            _fail(f"config.{name}={value!r} must be a positive integer")
    if not (isinstance(c.full_context, int) and c.full_context >= 0):
        _fail(f"config.full_context={c.full_context!r} must be 0 (whole sample) or a length")
    for axis in ("data", "fsdp", "tensor"):
        size = c.mesh[axis]
        if not (isinstance(size, int) and (size > 0 or size == -1)):
            _fail(f"config.mesh.{axis}={size!r} must be a positive integer or -1 (the rest)")
