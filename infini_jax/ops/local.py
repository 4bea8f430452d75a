"""Causal softmax attention inside one window (a segment, or the whole sequence for "full")."""

import jax
import jax.numpy as jnp

from infini_jax.ops import kernels
from infini_jax.ops.rope import DEFAULT_ROPE, Rope, apply_rope


def group_heads(q: jax.Array, kv_heads: int) -> jax.Array:
    """Queries `[b, t, heads, d]` → `[b, kv_heads, group, t, d]`: heads first, grouped by the kv
    head they read (query head `h` uses kv head `h // group`, as Hugging Face's `repeat_kv`)."""
    b, t, h, d = q.shape
    return jnp.einsum("btkgd->bkgtd", q.reshape(b, t, kv_heads, h // kv_heads, d))


def kv_heads_first(x: jax.Array) -> jax.Array:
    """Keys or values `[b, t, kv_heads, d]` → `[b, kv_heads, t, d]`."""
    return jnp.einsum("btkd->bktd", x)


def ungroup_heads(x: jax.Array) -> jax.Array:
    """The inverse of `group_heads`: `[b, kv_heads, group, t, d]` → `[b, t, heads, d]`."""
    b, kv, g, t, d = x.shape
    return jnp.einsum("bkgtd->btkgd", x).reshape(b, t, kv * g, d)


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
    blocks: tuple[int, int, int] = kernels.SPLASH_BLOCKS,
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
      query_block: as in `grouped_attention`.
      impl: "xla" (`grouped_attention`, the einsum softmax), or a fused kernel of `ops.kernels`
        ("splash", "pallas_gpu", "cudnn"; already resolved from "auto").
      blocks: the splash kernel's (q, kv, kv_compute) blocks (`model.splash_block_*`).

    Returns:
      `[batch, seq, heads, head_dim]` in `q.dtype`. Logits and softmax are float32, scaled by
      `1/sqrt(head_dim)`.
    """
    b, t = q.shape[:2]
    if impl != "xla":
        positions = jnp.arange(t)
        ids = segment_ids if segment_ids is not None else jnp.zeros((b, t), jnp.int32)
        if mask is not None:  # padded tokens: a document of their own, zeroed below
            ids = jnp.where(mask, ids, jnp.iinfo(jnp.int32).min)
        qr, kr = apply_rope(q, positions, rope), apply_rope(k, positions, rope)
        out = kernels.fused_attention(qr, kr, v, ids, impl, blocks)
        if mask is not None:
            out = out * mask[:, :, None, None].astype(out.dtype)
        return out.astype(q.dtype)
    out = grouped_attention(
        group_heads(q, k.shape[2]),
        kv_heads_first(k),
        kv_heads_first(v),
        mask=mask,
        segment_ids=segment_ids,
        rope=rope,
        query_block=query_block,
    )
    return ungroup_heads(out).astype(q.dtype)


def grouped_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mask: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    rope: Rope = DEFAULT_ROPE,
    query_block: int = 2048,
) -> jax.Array:
    """`local_attention`'s einsum path with heads first, the layout Infini-attention's segment
    works in, so that its memory read and write share the queries, keys and values moved once.

    Args:
      q: `[batch, kv_heads, group, seq, head_dim]` (`group_heads`), before RoPE.
      k, v: `[batch, kv_heads, seq, head_dim]` (`kv_heads_first`), before RoPE.
      mask, segment_ids, rope: as in `local_attention`.
      query_block: windows longer than this (a multiple of it) are computed one block of
        queries at a time, rematerialised in the backward pass: same result, memory linear in
        the window instead of quadratic.

    Returns:
      `[batch, kv_heads, group, seq, head_dim]` float32; padded query positions are 0.
    """
    b, kv, g, t, d = q.shape
    positions = jnp.arange(t)
    qr = apply_rope(q, positions, rope, seq_axis=3)
    kr = apply_rope(k, positions, rope, seq_axis=2)
    if t > query_block and t % query_block == 0:
        ids = segment_ids if segment_ids is not None else jnp.zeros((b, t), jnp.int32)
        # Long windows ("full" attention): query blocks in a scan, each rematerialised, so
        # the float32 logits held at once are [query_block, t] instead of [t, t].
        n = t // query_block

        def block(_, xs):
            qb, pos, ids_q = xs
            return None, attend(qb, kr, v, pos, positions, ids_q, ids, mask)

        xs = (
            jnp.moveaxis(qr.reshape(b, kv, g, n, query_block, d), 3, 0),
            positions.reshape(n, query_block),
            jnp.moveaxis(ids.reshape(b, n, query_block), 1, 0),
        )
        _, out = jax.lax.scan(jax.checkpoint(block, prevent_cse=False), None, xs)
        out = jnp.moveaxis(out, 0, 3).reshape(b, kv, g, t, d)
    else:
        out = attend(qr, kr, v, positions, positions, segment_ids, segment_ids, mask)
    if mask is not None:
        out = out * mask[:, None, None, :, None]
    return out


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
      qr: queries after RoPE, heads first: `[b, kv_heads, group, tq, d]`.
      kr, v: keys after RoPE and values, `[b, kv_heads, s, d]`.
      q_pos, k_pos: positions `[tq]`, `[s]`: a query attends to keys at positions <= its own.
      q_ids, k_ids: document ids `[b, tq]`, `[b, s]`; None = one document.
      keys_ok: `[b, s]` bool, False = padded key; None = none padded.

    Returns:
      `[b, kv_heads, group, tq, d]` float32; logits and softmax in float32, scaled by
      `1/sqrt(d)`.
    """
    d = qr.shape[-1]
    logits = jnp.einsum("bkgtd,bksd->bkgts", qr, kr, preferred_element_type=jnp.float32)
    logits = logits * (1.0 / jnp.sqrt(jnp.float32(d)))
    allowed = (q_pos[:, None] >= k_pos[None, :])[None]  # [1, tq, s]
    if q_ids is not None:
        allowed = allowed & (q_ids[:, :, None] == k_ids[:, None, :])
    if keys_ok is not None:
        allowed = allowed & keys_ok[:, None, :]
    logits = jnp.where(allowed[:, None, None], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum(
        "bkgts,bksd->bkgtd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32
    )
