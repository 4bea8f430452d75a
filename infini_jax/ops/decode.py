"""One-token attention steps for generation: a KV cache inside the current window.

For "infini" and "local" the cache holds the current segment only (`segment_len` slots); when
the segment is full, "infini" writes it into the compressive memory (exactly as the segment step
does) and the cache starts over, so generation runs in constant memory. For "full" the cache is
the whole context. Results equal the segment-at-a-time ops to float tolerance (tested).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from infini_jax.ops.delta_rule import decay_from_logits, features
from infini_jax.ops.local import attend, group_heads, kv_heads_first, ungroup_heads
from infini_jax.ops.memory import InfiniOptions, Memory, memory_write, mix
from infini_jax.ops.rope import Rope, apply_rope


class KVCache(NamedTuple):
    """Keys (before RoPE) and values of the current window, and how many are filled; with the
    memory's write gates, each token's write strength and decay logits too (what the segment's
    write needs when the window is full).

    Attributes:
      k, v: `[batch, window, kv_heads, head_dim]`.
      pos: int32 scalar, tokens already in the window (the next one goes at `pos`).
      beta, decay: float32 `[batch, window, kv_heads]`, or None where the model has none.
    """

    k: jax.Array
    v: jax.Array
    pos: jax.Array
    beta: jax.Array | None = None
    decay: jax.Array | None = None


def init_cache(
    batch: int,
    window: int,
    kv_heads: int,
    head_dim: int,
    dtype,
    *,
    beta: bool = False,
    decay: bool = False,
) -> KVCache:
    """An empty cache; `beta` / `decay`: also keep each token's write strength / decay logits."""
    shape = (batch, window, kv_heads, head_dim)
    gate = lambda on: jnp.zeros((batch, window, kv_heads), jnp.float32) if on else None
    zeros = jnp.zeros((), jnp.int32)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), zeros, gate(beta), gate(decay))


def cached_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, cache: KVCache, rope: Rope
) -> tuple[jax.Array, KVCache]:
    """Causal attention of one new token over the window so far (itself included).

    Args:
      q: `[batch, 1, heads, head_dim]`; k, v: `[batch, 1, kv_heads, head_dim]`, before RoPE.

    Returns:
      `(out [batch, kv_heads, group, 1, head_dim] float32, cache with the token added)`.
    """
    n, kv = cache.k.shape[1], cache.k.shape[2]
    start = (0, cache.pos, 0, 0)
    ck = jax.lax.dynamic_update_slice(cache.k, k.astype(cache.k.dtype), start)
    cv = jax.lax.dynamic_update_slice(cache.v, v.astype(cache.v.dtype), start)
    qr = group_heads(apply_rope(q, cache.pos[None], rope), kv)
    positions = jnp.arange(n)
    kr = kv_heads_first(apply_rope(ck, positions, rope))
    out = attend(qr, kr, kv_heads_first(cv), cache.pos[None], positions, None, None, None)
    return out, cache._replace(k=ck, v=cv, pos=cache.pos + 1)


def infini_decode(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    balance: jax.Array,
    memory: Memory,
    cache: KVCache,
    options: InfiniOptions,
    *,
    beta: jax.Array | None = None,
    decay_logits: jax.Array | None = None,
) -> tuple[jax.Array, Memory, KVCache]:
    """One token of Infini-attention: local attention over the cache, the memory read, the mix;
    when the token completes the segment, the segment is written into memory.

    Shapes as in `cached_attention`; `beta` and `decay_logits` `[batch, 1, kv_heads]` (kept in
    the cache until the segment's write: `decay_from_logits` over its tokens). Returns
    `(out [batch, 1, heads, head_dim] in q.dtype, memory, cache)`.
    """
    b = q.shape[0]
    for name, x in (("beta", beta), ("decay", decay_logits)):
        if x is not None:
            at = (0, cache.pos, 0)
            cache = cache._replace(
                **{name: jax.lax.dynamic_update_slice(getattr(cache, name), x, at)}
            )
    a_dot, cache = cached_attention(q, k, v, cache, options.rope)
    reads = jnp.ones((b, 1), bool)  # one document per row in generation
    out = mix(group_heads(q, k.shape[2]), a_dot, balance, memory, reads, options)
    window = cache.k.shape[1]

    def flush(args):
        mem, c = args
        ones = jnp.ones((b, window), bool)
        zeros = jnp.zeros((b, window), jnp.int32)
        kh, vh = kv_heads_first(c.k), kv_heads_first(c.v)
        mem = memory_write(
            features(kh, options.features),
            vh,
            mem,
            ones,
            zeros,
            options.update,
            kind=options.features,
            beta=c.beta,
            decay=None if c.decay is None else decay_from_logits(c.decay, ones),
            chunk=options.delta_chunk,
        )
        return mem, c._replace(pos=jnp.zeros((), jnp.int32))

    memory, cache = jax.lax.cond(cache.pos == window, flush, lambda args: args, (memory, cache))
    return ungroup_heads(out).astype(q.dtype), memory, cache


def local_decode(
    q: jax.Array, k: jax.Array, v: jax.Array, cache: KVCache, *, rope: Rope, wrap: bool
) -> tuple[jax.Array, KVCache]:
    """One token of "local" (`wrap=True`: the window restarts when full) or "full" attention."""
    out, cache = cached_attention(q, k, v, cache, rope)
    if wrap:
        full = cache.pos == cache.k.shape[1]
        cache = cache._replace(pos=jnp.where(full, 0, cache.pos))
    return ungroup_heads(out).astype(q.dtype), cache
