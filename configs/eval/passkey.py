r"""Passkey retrieval (the Landmark template) over a length × depth grid.

  python -m infini_jax.evaluate --config=configs/eval/passkey.py --checkpoint=WORKDIR \
      --output=DIR [--config.lengths="(8192,131072)"]

Presets: "" (the seed study's grid: 1K–32K × depths 0–100% step 10 × 20 samples) and "quick"
(256–4K × 5 depths × 8 samples: a few minutes on CPU for the tiny model).
"""

from infini_jax.eval.config import QUICK_GRID, task_config


def get_config(arg=None):
    return task_config("passkey", arg, defaults={}, quick=QUICK_GRID)
