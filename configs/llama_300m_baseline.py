r"""The seed study's 300M baseline: the same model without compressive memory.

Presets: "full" (default; causal attention over the whole 8192 tokens, as the seed's baseline)
or "local" (the same 1024-token segments as Infini-attention, no memory). The seed trained the
baseline at LR 1.2e-4. There are no balance factors, so the gate fields are unused.

  python -m infini_jax.train --config=configs/llama_300m_baseline.py:local --workdir=DIR
"""

import importlib.util
import os

import ml_collections


def _infini_config() -> ml_collections.ConfigDict:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llama_300m_infini.py")
    spec = importlib.util.spec_from_file_location("llama_300m_infini", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = _infini_config()  # Every field as in the Infini config, with its comment there.
    kind = arg or "full"
    if kind not in ("full", "local"):
        raise ValueError(f"unknown preset {arg!r} for llama_300m_baseline.py: 'full' or 'local'")
    c.model.attention = kind  # "full": one window of data.seq_len; "local": model.segment_len.
    c.optimizer.learning_rate = 1.2e-4  # The seed's baseline LR.
    c.optimizer.end_learning_rate = 1.2e-5  # Cosine to a tenth of the peak, as the Infini run.
    return c
