r"""Needle in a haystack: "The special magic number is K." hidden in corpus text.

  python -m infini_jax.evaluate --config=configs/eval/niah.py --checkpoint=WORKDIR \
      --output=DIR --config.corpus='books/*.txt'

Without --config.corpus the haystack is the built-in filler sentence. Presets: "" and "quick".
"""

from infini_jax.eval.config import base_config


def get_config(arg=None):
    c = base_config("niah")
    if arg == "quick":
        c.lengths = (256, 1024, 4096)
        c.depths = (0, 25, 50, 75, 100)
        c.samples_per_cell = 8
    elif arg not in (None, ""):
        raise ValueError(f"unknown preset {arg!r} for niah.py: use '' or 'quick'")
    return c
