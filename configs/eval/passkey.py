r"""Passkey retrieval (the Landmark template) over a length × depth grid.

  python -m infini_jax.evaluate --config=configs/eval/passkey.py --checkpoint=WORKDIR \
      --output=DIR [--config.lengths="(8192,131072)"]

Presets: "" (the seed study's grid: 1K–32K × depths 0–100% step 10 × 20 samples) and "quick"
(256–4K × 5 depths × 8 samples: a few minutes on CPU for the tiny model).
"""

from infini_jax.eval.config import base_config


def get_config(arg=None):
    c = base_config("passkey")
    if arg == "quick":
        c.lengths = (256, 1024, 4096)
        c.depths = (0, 25, 50, 75, 100)
        c.samples_per_cell = 8
    elif arg not in (None, ""):
        raise ValueError(f"unknown preset {arg!r} for passkey.py: use '' or 'quick'")
    return c
