r"""Needle in a haystack: "The special magic number is K." hidden in corpus text.

  python -m infini_jax.evaluate --config=configs/eval/niah.py --checkpoint=WORKDIR \
      --output=DIR --config.corpus='books/*.txt'

Without --config.corpus the haystack is the built-in filler sentence. Presets: "" (the
passkey grid) and "quick" (as passkey's).
"""

from infini_jax.eval.config import QUICK_GRID, task_config


def get_config(arg=None):
    return task_config("niah", arg, defaults={}, quick=QUICK_GRID)
