r"""Next-token NLL per segment index, with the memory and with its reads ablated.

  python -m infini_jax.evaluate --config=configs/eval/ppl_by_position.py --checkpoint=WORKDIR \
      --output=DIR --config.corpus='pg19/*.jsonl'

Each of `samples_per_cell` documents of at least `length` tokens is cut to `length`; `depths`
is unused. Without a corpus: built-in synthetic passkey / key-value documents of that length.
Does memory help later segments? Compare the two curves. Presets: "" and "quick".
"""

from infini_jax.eval.config import task_config


def get_config(arg=None):
    defaults = {"lengths": (8192,), "samples_per_cell": 16}
    return task_config(
        "ppl_by_position", arg, defaults, quick={"lengths": (2048,), "samples_per_cell": 8}
    )
