r"""Next-token NLL per segment index, with the memory and with its reads ablated.

  python -m infini_jax.evaluate --config=configs/eval/ppl_by_position.py --checkpoint=WORKDIR \
      --output=DIR --config.corpus='pg19/*.jsonl'

Each of `samples_per_cell` documents of at least `length` tokens is cut to `length`; `depths`
is unused. Without a corpus: built-in synthetic passkey / key-value documents of that length.
Does memory help later segments? Compare the two curves. Presets: "" and "quick".
"""

from infini_jax.eval.config import base_config


def get_config(arg=None):
    c = base_config("ppl_by_position")
    c.lengths = (8192,)
    c.samples_per_cell = 16
    if arg == "quick":
        c.lengths = (2048,)
        c.samples_per_cell = 8
    elif arg not in (None, ""):
        raise ValueError(f"unknown preset {arg!r} for ppl_by_position.py: use '' or 'quick'")
    return c
