"""Rotary position embeddings in the LLaMA / Hugging Face "rotate-half" convention."""

import jax
import jax.numpy as jnp


def rope_angles(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """Cosines and sines of the rotation angles.

    Args:
      positions: `[seq]` integer positions.
      head_dim: even feature size `D`; feature `i` pairs with feature `i + D/2`.
      theta: RoPE base (10000.0 in LLaMA).

    Returns:
      `(cos, sin)`, each float32 `[seq, head_dim // 2]`.
    """
    half = head_dim // 2
    inv_freq = 1.0 / (theta ** (jnp.arange(half, dtype=jnp.float32) * 2.0 / head_dim))
    angles = positions.astype(jnp.float32)[:, None] * inv_freq[None, :]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotates `x` `[batch, seq, heads, head_dim]` by `positions` `[seq]`; computed in float32.

    Returns an array of the same shape and dtype as `x`.
    """
    half = x.shape[-1] // 2
    cos, sin = rope_angles(positions, x.shape[-1], theta)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    xf = x.astype(jnp.float32)
    x1, x2 = xf[..., :half], xf[..., half:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)
