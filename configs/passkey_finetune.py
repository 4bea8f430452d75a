r"""The seed study's passkey fine-tune: continue a pretrained checkpoint on passkey documents.

500 steps, batch 64, LR 7.5e-5, gate LR 1.5e-4, at the base config's training length; only
the parameters are taken from the checkpoint (fresh optimizer, step 0). Then evaluate:

  python -m infini_jax.train --config=configs/passkey_finetune.py:llama_300m_infini \
      --config.init_from=PRETRAIN_WORKDIR --workdir=FT_WORKDIR
  python -m infini_jax.evaluate --config=configs/eval/passkey.py --checkpoint=FT_WORKDIR \
      --output=FT_WORKDIR/eval_passkey

The preset names the base config in configs/ (default "tiny"); its model must match the
checkpoint's (checked at start-up, differing fields named).
"""

import importlib.util
import os

import ml_collections


def _base(name: str) -> ml_collections.ConfigDict:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    if not os.path.isfile(path):
        raise ValueError(f"passkey_finetune.py:{name}: there is no configs/{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = _base(arg or "tiny")  # Every other field as in the base config, commented there.
    c.init_from = ""  # Required: the pretrained checkpoint, WORKDIR[/STEP].
    c.init_from_required = True  # Start-up error if init_from is empty.
    c.total_steps = 500  # The seed: 500 fine-tuning steps.
    c.checkpoint_every_steps = 100  # Checkpoint every this many steps.
    c.data.batch_size = 64  # The seed: batch 64 at the training length.
    c.data.source = "synthetic"  # Passkey documents only (below).
    c.data.packing = "padding"  # One document per row, question at its end.
    c.data.synthetic.passkey_weight = 1.0  # Passkey only.
    c.data.synthetic.kv_recall_weight = 0.0  # No key-value recall.
    c.data.synthetic.min_length = c.data.seq_len // 2  # Documents of half to the full length.
    c.data.synthetic.max_length = c.data.seq_len  # At most the training length.
    c.optimizer.learning_rate = 7.5e-5  # The seed's fine-tune LR.
    c.optimizer.end_learning_rate = 7.5e-6  # Cosine to a tenth.
    c.optimizer.warmup_steps = 50  # Short warmup.
    c.optimizer.gate_learning_rate = 1.5e-4  # The seed's fine-tune gate LR.
    return c
