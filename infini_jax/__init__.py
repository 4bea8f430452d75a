"""infini_jax: LLaMA language models with Infini-attention in JAX / Flax linen."""

__version__ = "0.1.0"
