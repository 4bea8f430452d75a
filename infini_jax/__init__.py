"""infini_jax: LLaMA language models with Infini-attention in JAX / Flax linen."""

from infini_jax.parallel.tpu import quiet_libtpu

__version__ = "0.1.0"

# With libtpu installed (the tpu and test extras) on a host without TPU chips, JAX's first
# backend start would print libtpu's ~6 lines of warnings; give it what it asks for first.
quiet_libtpu()
