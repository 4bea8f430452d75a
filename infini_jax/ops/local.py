"""Causal softmax attention inside one window (a segment, or the whole sequence for "full")."""

import jax
import jax.numpy as jnp

from infini_jax.ops.rope import apply_rope


def local_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mask: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    rope_theta: float = 10000.0,
) -> jax.Array:
    """Causal dot-product attention with RoPE positions `0 .. seq-1` inside the window.

    Args:
      q: `[batch, seq, heads, head_dim]`, before RoPE.
      k, v: `[batch, seq, kv_heads, head_dim]`, before RoPE; query head `h` uses kv head
        `h // (heads // kv_heads)` (grouped-query attention, as Hugging Face's `repeat_kv`).
      mask: `[batch, seq]` bool, False = padding. Padded keys are never attended to and
        padded query positions output zeros.
      segment_ids: `[batch, seq]` int document ids; a query attends only to keys of its document.
      rope_theta: RoPE base.

    Returns:
      `[batch, seq, heads, head_dim]` in `q.dtype`. Logits and softmax are float32, scaled by
      `1/sqrt(head_dim)`.
    """
    b, t, h, d = q.shape
    kv = k.shape[2]
    positions = jnp.arange(t)
    qr = apply_rope(q, positions, rope_theta).reshape(b, t, kv, h // kv, d)
    kr = apply_rope(k, positions, rope_theta)
    logits = jnp.einsum("btkgd,bskd->bkgts", qr, kr, preferred_element_type=jnp.float32)
    logits = logits * (1.0 / jnp.sqrt(jnp.float32(d)))
    allowed = jnp.tril(jnp.ones((t, t), dtype=bool))[None]  # [1, t, s]
    if segment_ids is not None:
        allowed = allowed & (segment_ids[:, :, None] == segment_ids[:, None, :])
    if mask is not None:
        allowed = allowed & mask[:, None, :]
    logits = jnp.where(allowed[:, None, None], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum(
        "bkgts,bskd->btkgd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32
    )
    if mask is not None:
        out = out * mask[:, :, None, None, None]
    return out.reshape(b, t, h, d).astype(q.dtype)
