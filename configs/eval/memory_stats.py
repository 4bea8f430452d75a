r"""The memory at work: g(b) per layer and head, and ‖M‖ and z growth segment by segment.

  python -m infini_jax.evaluate --config=configs/eval/memory_stats.py --checkpoint=WORKDIR \
      --output=DIR

Streams `samples_per_cell` passkey documents (or corpus documents) of each length; `depths` is
unused. Infini checkpoints only. Presets: "" and "quick".
"""

from infini_jax.eval.config import base_config


def get_config(arg=None):
    c = base_config("memory_stats")
    c.lengths = (8192,)
    c.samples_per_cell = 8
    if arg == "quick":
        c.lengths = (2048,)
        c.samples_per_cell = 4
    elif arg not in (None, ""):
        raise ValueError(f"unknown preset {arg!r} for memory_stats.py: use '' or 'quick'")
    return c
