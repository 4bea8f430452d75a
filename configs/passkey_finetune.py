r"""The seed study's passkey fine-tune: continue a pretrained checkpoint on passkey documents.

500 steps, batch 64, LR 7.5e-5, gate LR 1.5e-4, at the base config's training length; only
the parameters are taken from the checkpoint (fresh optimizer, step 0). Then evaluate:

  python -m infini_jax.train --config=configs/passkey_finetune.py:llama_300m_infini \
      --config.init_from=PRETRAIN_WORKDIR --workdir=FT_WORKDIR
  python -m infini_jax.evaluate --config=configs/eval/passkey.py --checkpoint=FT_WORKDIR \
      --output=FT_WORKDIR/eval_passkey

The preset names the config in configs/ it continues (default "tiny"); its model must match
the checkpoint's (checked at start-up, differing fields named).
"""

import os

from infini_jax.config import REPO, load_preset
from infini_jax.errors import check


def get_config(arg=None):
    name = arg or "tiny"
    path = os.path.join(REPO, "configs", f"{name}.py")
    check(os.path.isfile(path), f"passkey_finetune.py:{name}: there is no configs/{name}.py")
    config = load_preset(name)
    config.init_from_required = True  # pass --config.init_from=PRETRAIN_WORKDIR[/STEP]
    config.total_steps = 500
    config.checkpoint_every_steps = 100
    config.data.batch_size = 64
    config.data.source = "synthetic"  # passkey documents only, one per row
    config.data.packing = "padding"
    config.data.synthetic.passkey_weight = 1.0
    config.data.synthetic.kv_recall_weight = 0.0
    config.data.synthetic.min_length = config.data.seq_len // 2  # half to the full length
    config.data.synthetic.max_length = config.data.seq_len
    config.optimizer.learning_rate = 7.5e-5
    config.optimizer.end_learning_rate = 7.5e-6
    config.optimizer.warmup_steps = 50
    config.optimizer.gate_learning_rate = 1.5e-4
    return config
