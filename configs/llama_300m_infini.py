r"""The seed study's 300M LLaMA with Infini-attention (arXiv 2512.23862), exactly.

302,015,584 parameters; 8 segments of 1024 tokens per 8192-token sequence; delta update,
hard-sigmoid gate with its own learning rate (the base config's). Train on your prepared
FineWeb shards (--config.data.source='DIR/*.array_record', --config.data.tokenizer=...).
Presets: "" (delta, the seed), "linear", "delta_l2" (the exact delta rule with L2 keys) or
"gated" (the gated delta rule's memory).

  python -m infini_jax.train --config=configs/llama_300m_infini.py --workdir=DIR
"""

from infini_jax.config import base_config, preset
from infini_jax.defaults import DELTA_L2, GATED_DELTA

# "delta_l2" (the study's best arm) and "gated": memories that beat the seed's at 16x the
# training length in the CPU study (docs/study.md, table m); not trained at this scale yet.
PRESETS = {
    "": {},
    "linear": {"model.memory_update": "linear"},
    "delta_l2": DELTA_L2,
    "gated": GATED_DELTA,
}


def get_config(arg=None):
    config = base_config()
    config.total_steps = 30_000  # ≈ 983M tokens

    model = config.model
    model.vocab_size = 49_152
    model.num_layers = 12
    model.d_model = 1024  # head_dim 128
    model.num_heads = 8
    model.num_kv_heads = 8
    model.mlp_dim = 4096
    model.segment_len = 1024
    model.dtype = "bfloat16"

    config.data.seq_len = 8192  # 8 segments
    config.data.batch_size = 4
    config.data.validation_fraction = 0.001
    config.data.synthetic.min_length = 1024
    config.data.synthetic.max_length = 8192

    config.optimizer.learning_rate = 6e-5
    config.optimizer.end_learning_rate = 6e-6
    return preset(config, arg, PRESETS, "llama_300m_infini.py")
