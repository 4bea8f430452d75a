r"""The seed study's 300M baseline: the same model without compressive memory.

Presets: "full" (default; causal attention over the whole 8192 tokens, as the seed's baseline)
or "local" (the same 1024-token segments as Infini-attention, no memory). The seed trained the
baseline at LR 1.2e-4. There are no balance factors, so the gate fields are unused.

  python -m infini_jax.train --config=configs/llama_300m_baseline.py:local --workdir=DIR
"""

from infini_jax.config import load_preset, preset

PRESETS = {
    "": {"model.attention": "full"},
    "full": {"model.attention": "full"},
    "local": {"model.attention": "local"},
}


def get_config(arg=None):
    config = load_preset("llama_300m_infini")
    config.optimizer.learning_rate = 1.2e-4  # the seed's baseline LR
    config.optimizer.end_learning_rate = 1.2e-5  # cosine to a tenth, as the Infini run
    return preset(config, arg, PRESETS, "llama_300m_baseline.py")
