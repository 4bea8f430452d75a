"""Causal softmax attention inside one window (a segment, or the whole sequence for "full")."""

import jax
import jax.numpy as jnp

from infini_jax.ops import kernels
from infini_jax.ops.rope import DEFAULT_ROPE, Rope, apply_rope


def local_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mask: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    rope: Rope = DEFAULT_ROPE,
    query_block: int = 2048,
    impl: str = "xla",
) -> jax.Array:
    """Causal dot-product attention with RoPE positions `0 .. seq-1` inside the window.

    Args:
      q: `[batch, seq, heads, head_dim]`, before RoPE.
      k, v: `[batch, seq, kv_heads, head_dim]`, before RoPE; query head `h` uses kv head
        `h // (heads // kv_heads)` (grouped-query attention, as Hugging Face's `repeat_kv`).
      mask: `[batch, seq]` bool, False = padding. Padded keys are never attended to and
        padded query positions output zeros.
      segment_ids: `[batch, seq]` int document ids; a query attends only to keys of its document.
      rope: RoPE base and scaling.
      query_block: windows longer than this (a multiple of it) are computed one block of
        queries at a time, rematerialised in the backward pass: same result, memory linear in
        the window instead of quadratic.
      impl: "xla" (the einsum softmax below), or a fused kernel of `ops.kernels`
        ("splash", "pallas_gpu", "cudnn"; already resolved from "auto").

    Returns:
      `[batch, seq, heads, head_dim]` in `q.dtype`. Logits and softmax are float32, scaled by
      `1/sqrt(head_dim)`.
    """
    b, t, h, d = q.shape
    kv = k.shape[2]
    positions = jnp.arange(t)
    kr = apply_rope(k, positions, rope)
    if impl != "xla":
        ids = segment_ids if segment_ids is not None else jnp.zeros((b, t), jnp.int32)
        if mask is not None:  # padded tokens: a document of their own, zeroed below
            ids = jnp.where(mask, ids, jnp.iinfo(jnp.int32).min)
        out = kernels.fused_attention(apply_rope(q, positions, rope), kr, v, ids, impl)
        if mask is not None:
            out = out * mask[:, :, None, None].astype(out.dtype)
        return out.astype(q.dtype)
    qr = apply_rope(q, positions, rope).reshape(b, t, kv, h // kv, d)
    if t > query_block and t % query_block == 0:
        ids = segment_ids if segment_ids is not None else jnp.zeros((b, t), jnp.int32)
        # Long windows ("full" attention): query blocks in a scan, each rematerialised, so
        # the float32 logits held at once are [query_block, t] instead of [t, t].
        n = t // query_block

        def block(_, xs):
            qb, pos, ids_q = xs
            return None, attend(qb, kr, v, pos, positions, ids_q, ids, mask)

        xs = (
            jnp.moveaxis(qr.reshape(b, n, query_block, kv, h // kv, d), 1, 0),
            positions.reshape(n, query_block),
            jnp.moveaxis(ids.reshape(b, n, query_block), 1, 0),
        )
        _, out = jax.lax.scan(jax.checkpoint(block, prevent_cse=False), None, xs)
        out = jnp.moveaxis(out, 0, 1).reshape(b, t, kv, h // kv, d)
    else:
        out = attend(qr, kr, v, positions, positions, segment_ids, segment_ids, mask)
    if mask is not None:
        out = out * mask[:, :, None, None, None]
    return out.reshape(b, t, h, d).astype(q.dtype)


def attend(
    qr: jax.Array,
    kr: jax.Array,
    v: jax.Array,
    q_pos: jax.Array,
    k_pos: jax.Array,
    q_ids: jax.Array | None,
    k_ids: jax.Array | None,
    keys_ok: jax.Array | None,
) -> jax.Array:
    """The one softmax attention of the project (windows, query blocks, decoding).

    Args:
      qr: queries after RoPE, grouped by kv head: `[b, tq, kv_heads, group, d]`.
      kr, v: keys after RoPE and values, `[b, s, kv_heads, d]`.
      q_pos, k_pos: positions `[tq]`, `[s]`: a query attends to keys at positions <= its own.
      q_ids, k_ids: document ids `[b, tq]`, `[b, s]`; None = one document.
      keys_ok: `[b, s]` bool, False = padded key; None = none padded.

    Returns:
      `[b, tq, kv_heads, group, d]` float32; logits and softmax in float32, scaled by
      `1/sqrt(d)`.
    """
    d = qr.shape[-1]
    logits = jnp.einsum("btkgd,bskd->bkgts", qr, kr, preferred_element_type=jnp.float32)
    logits = logits * (1.0 / jnp.sqrt(jnp.float32(d)))
    allowed = (q_pos[:, None] >= k_pos[None, :])[None]  # [1, tq, s]
    if q_ids is not None:
        allowed = allowed & (q_ids[:, :, None] == k_ids[:, None, :])
    if keys_ok is not None:
        allowed = allowed & keys_ok[:, None, :]
    logits = jnp.where(allowed[:, None, None], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum(
        "bkgts,bskd->btkgd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32
    )
