r"""Continual pretraining of an imported Llama into Infini-attention (the original paper's route).

The original Infini-attention paper (Munkhdalai et al., 2024) took pretrained 1B and 8B LLMs,
replaced their attention with Infini-attention, and continued pretraining on long inputs: 4K
tokens in segments of 2K for the 1B model (30K steps, batch 64), 8K for the 8B one. Here:

  python -m infini_jax.convert from_hf --hf=LLAMA_DIR --output=IMPORTED
  python -m infini_jax.train --config=configs/continual_infini.py \
      --config.init_from=IMPORTED --workdir=RUN \
      --config.data.source='LONG_DOCS/*.array_record'
  python -m infini_jax.evaluate --config=configs/eval/passkey.py --checkpoint=RUN

The model's shape, norms, RoPE and tokenizer come from the checkpoint (`init_from_model`); the
attention becomes "infini" with a fresh balance factor per head. Cold start: with
`balance_init=-3` and the sigmoid gate, g(b) = 0.047 at step 0: every attention output is
95.3% the pretrained one's (A_dot) and 4.7% memory read, and a segment with nothing in memory
yet gets A_dot unmixed (`empty_memory="local"`), exactly the pretrained model (tested). The
gates open as the memory becomes useful; they have their own, larger learning rate. Presets:
"" (the 1B recipe), "8b" (8K inputs), "cpu" (a minute-long smoke run on synthetic data).
"""

from infini_jax.config import base_config, preset

PRESETS = {
    "": {},
    "8b": {"data.seq_len": 8192, "data.synthetic.max_length": 8192},
    "cpu": {
        "total_steps": 40,
        "log_every_steps": 5,
        "checkpoint_every_steps": 20,
        "model.segment_len": 64,
        "model.dtype": "float32",
        "data.seq_len": 256,
        "data.batch_size": 8,
        "data.synthetic.min_length": 192,
        "data.synthetic.max_length": 256,
        "optimizer.learning_rate": 1e-3,
        "optimizer.end_learning_rate": 1e-4,
        "optimizer.warmup_steps": 5,
        "report.passkey_samples": 2,
    },
}


def get_config(arg=None):
    config = base_config()
    config.init_from_required = True  # --config.init_from=IMPORTED (convert from_hf's output)
    config.init_from_model = True  # shape, norms, RoPE and tokenizer from that checkpoint
    config.total_steps = 30_000  # the paper's 1B continual pretraining length
    config.checkpoint_every_steps = 1_000

    model = config.model
    model.attention = "infini"
    model.segment_len = 2048  # N: the paper's segment length
    model.memory_update = "delta"  # the paper's "Linear + Delta"
    model.gate = "sigmoid"  # the paper's gate; g(b) = sigmoid(b)
    model.balance_init = -3.0  # g = 0.047: start close to the pretrained model
    model.empty_memory = "local"  # before anything is written: the pretrained attention
    model.dtype = "bfloat16"
    model.remat_layers = True  # 1B+ models: keep activations per layer, not per segment

    data = config.data
    data.seq_len = 4096  # the paper's 1B input length: 2 segments
    data.batch_size = 64  # the paper's batch (sequences)
    data.packing = "concat"  # long documents, packed; memory resets at document boundaries
    data.synthetic.min_length = 1024  # only if data.source stays "synthetic"
    data.synthetic.max_length = 4096

    opt = config.optimizer
    opt.learning_rate = 2e-5  # not stated in the paper: small, as for any continued run
    opt.end_learning_rate = 2e-6
    opt.warmup_steps = 500  # not stated: lets the fresh gates settle before the LR peaks
    opt.gate_learning_rate = 1e-2  # the gates start nearly closed and must move
    opt.gate_weight_decay = 0.0
    return preset(config, arg, PRESETS, "continual_infini.py")
