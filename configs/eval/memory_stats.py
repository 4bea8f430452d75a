r"""The memory at work: g(b) per layer and head, and ‖M‖ and z growth segment by segment.

  python -m infini_jax.evaluate --config=configs/eval/memory_stats.py --checkpoint=WORKDIR \
      --output=DIR

Streams `samples_per_cell` passkey documents (or corpus documents) of each length; `depths` is
unused. Infini checkpoints only. Presets: "" and "quick".
"""

from infini_jax.eval.config import task_config


def get_config(arg=None):
    defaults = {"lengths": (8192,), "samples_per_cell": 8}
    return task_config(
        "memory_stats", arg, defaults, quick={"lengths": (2048,), "samples_per_cell": 4}
    )
