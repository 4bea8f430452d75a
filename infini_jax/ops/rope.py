"""Rotary position embeddings in the LLaMA / Hugging Face "rotate-half" convention.

`Rope` carries the base and an optional frequency scaling: "none", or "llama3" (Llama 3.1's
long-context rule: long wavelengths divided by `factor`, short ones kept, a smooth ramp between).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

ROPE_SCALINGS = ("none", "llama3")


@dataclasses.dataclass(frozen=True)
class Rope:
    """RoPE settings (hashable: a static argument of jitted functions).

    theta: the base (10000.0 in LLaMA 1/2, 500000.0 in Llama 3).
    scaling: "none" or "llama3"; the other fields are used by "llama3" only:
    factor: how much the lowest frequencies are slowed down.
    low_freq_factor, high_freq_factor: wavelengths above `original_max_len / low_freq_factor`
      are scaled by 1/factor, below `original_max_len / high_freq_factor` kept, ramped between.
    original_max_len: the context length the base model was trained at.
    """

    theta: float = 10000.0
    scaling: str = "none"
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_len: int = 8192

    def inv_frequencies(self, head_dim: int) -> np.ndarray:
        """float32 `[head_dim // 2]` angular frequencies; feature `i` pairs with `i + D/2`."""
        exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
        inv = (1.0 / (np.float32(self.theta) ** exponents)).astype(np.float32)
        if self.scaling == "none":
            return inv
        if self.scaling != "llama3":
            raise ValueError(f"RoPE scaling {self.scaling!r} is not one of {ROPE_SCALINGS}")
        wavelength = 2 * math.pi / inv
        long_edge = self.original_max_len / self.low_freq_factor  # slower than this: divided
        short_edge = self.original_max_len / self.high_freq_factor  # faster than this: kept
        ramp = (self.original_max_len / wavelength - self.low_freq_factor) / (
            self.high_freq_factor - self.low_freq_factor
        )
        blended = (1 - ramp) * inv / self.factor + ramp * inv
        out = np.where(wavelength > long_edge, inv / self.factor, inv)
        between = (wavelength >= short_edge) & (wavelength <= long_edge)
        return np.where(between, blended, out).astype(np.float32)


DEFAULT_ROPE = Rope()  # base 10000, no scaling (LLaMA 1/2)


def rope_angles(positions: jax.Array, head_dim: int, rope: Rope) -> tuple[jax.Array, jax.Array]:
    """Cosines and sines of the rotation angles.

    Args:
      positions: `[seq]` integer positions.
      head_dim: even feature size `D`.
      rope: base and scaling.

    Returns:
      `(cos, sin)`, each float32 `[seq, head_dim // 2]`.
    """
    inv_freq = jnp.asarray(rope.inv_frequencies(head_dim))
    angles = positions.astype(jnp.float32)[:, None] * inv_freq[None, :]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, positions: jax.Array, rope: Rope, seq_axis: int = 1) -> jax.Array:
    """Rotates `x` by `positions` `[seq]`; computed in float32.

    `x` is `[batch, seq, heads, head_dim]`, or any layout with head_dim last and the sequence on
    `seq_axis` (e.g. `[batch, kv_heads, group, seq, head_dim]` with `seq_axis=3`).
    Returns an array of the same shape and dtype as `x`.
    """
    half = x.shape[-1] // 2
    cos, sin = rope_angles(positions, x.shape[-1], rope)
    shape = [1] * x.ndim
    shape[seq_axis], shape[-1] = positions.shape[0], half
    cos, sin = cos.reshape(shape), sin.reshape(shape)
    xf = x.astype(jnp.float32)
    x1, x2 = xf[..., :half], xf[..., half:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)
