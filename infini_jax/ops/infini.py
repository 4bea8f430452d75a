"""Infini-attention: one segment step, and the whole sequence as a `jax.lax.scan` over it."""

import jax
import jax.numpy as jnp

from infini_jax.ops.delta_rule import features
from infini_jax.ops.local import (
    group_heads,
    grouped_attention,
    kv_heads_first,
    local_attention,
    ungroup_heads,
)
from infini_jax.ops.memory import InfiniOptions, Memory, init_memory, memory_write, mix
from infini_jax.ops.rope import DEFAULT_ROPE, Rope


def split_segments(x: jax.Array, n: int) -> jax.Array:
    """`[batch, seq, ...]` → `[seq / n, batch, n, ...]`: the scan axis first."""
    b, t = x.shape[:2]
    return jnp.swapaxes(x.reshape(b, t // n, n, *x.shape[2:]), 0, 1)


def merge_segments(x: jax.Array) -> jax.Array:
    """The inverse of `split_segments`: `[segments, batch, n, ...]` → `[batch, seq, ...]`."""
    s, b, n = x.shape[:3]
    return jnp.swapaxes(x, 0, 1).reshape(b, s * n, *x.shape[3:])


def check_args(q, k, v, balance, mask=None, segment_ids=None) -> None:
    """Raises ValueError with one clear line for inconsistent shapes."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            "q, k, v must be [batch, seq, heads, head_dim]; got shapes "
            f"{q.shape}, {k.shape}, {v.shape}"
        )
    b, t, h, d = q.shape
    if k.shape != v.shape or k.shape[:2] != (b, t) or k.shape[3] != d:
        raise ValueError(f"k {k.shape} and v {v.shape} must be [{b}, {t}, kv_heads, {d}]")
    if h % k.shape[2]:
        raise ValueError(f"heads={h} is not a multiple of kv_heads={k.shape[2]}")
    if d % 2:
        raise ValueError(f"head_dim={d} must be even for RoPE")
    if balance is not None and balance.shape != (h,):
        raise ValueError(f"balance has shape {balance.shape}; expected [heads] = ({h},)")
    for name, x in (("mask", mask), ("segment_ids", segment_ids)):
        if x is not None and x.shape != (b, t):
            raise ValueError(f"{name} has shape {x.shape}; expected [batch, seq] = ({b}, {t})")


def infini_segment(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    balance: jax.Array,
    memory: Memory,
    options: InfiniOptions,
    *,
    mask: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    beta: jax.Array | None = None,
    decay: jax.Array | None = None,
) -> tuple[jax.Array, Memory]:
    """One segment of Infini-attention: read memory, attend locally, mix, then write memory.

    Args:
      q: `[batch, n, heads, head_dim]`; k, v: `[batch, n, kv_heads, head_dim]`, before RoPE.
      balance: `[heads]` raw balance factors b.
      memory: state left by the previous segment (`init_memory` for none).
      options: update rule, feature map, gate, empty-memory mode and RoPE base.
      mask, segment_ids: `[batch, n]`, as in `infini_attention`.
      beta: `[batch, n, kv_heads]` write strength per token in (0, 1]; None = 1.
      decay: `[batch, kv_heads]` the segment's decay α ∈ (0, 1] of M and z before the write;
        None = 1.

    Returns:
      `(out [batch, n, heads, head_dim] in q.dtype, memory after this segment)`.
    """
    b, n = q.shape[:2]
    kv = k.shape[2]
    if mask is None:
        mask = jnp.ones((b, n), bool)
    if segment_ids is None:
        segment_ids = jnp.zeros((b, n), jnp.int32)
    # Heads first, once: the local attention, the read and the write all use these copies
    # (on CPU the bench step of local 1.7–2.7% and of infini 2.7–3.5% faster than moving them
    # for each use: docs/performance.md).
    qh, kh, vh = group_heads(q, kv), kv_heads_first(k), kv_heads_first(v)
    if options.attention_impl == "xla":
        a_dot = grouped_attention(qh, kh, vh, mask=mask, segment_ids=segment_ids, rope=options.rope)
    else:  # a fused kernel takes [b, n, heads, d]
        a_dot = local_attention(
            q,
            k,
            v,
            mask=mask,
            segment_ids=segment_ids,
            rope=options.rope,
            impl=options.attention_impl,
            blocks=options.splash_blocks,
        )
        a_dot = group_heads(a_dot, kv).astype(jnp.float32)
    reads = mask & (segment_ids == memory.doc[:, None])
    out = mix(qh, a_dot, balance, memory, reads, options) * mask[:, None, None, :, None]
    new_memory = memory_write(
        features(kh, options.features),
        vh,
        memory,
        mask,
        segment_ids,
        options.update,
        kind=options.features,
        beta=beta,
        decay=decay,
        chunk=options.delta_chunk,
    )
    return ungroup_heads(out).astype(q.dtype), new_memory


def infini_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    balance: jax.Array,
    *,
    segment_len: int,
    update: str = "delta",
    gate: str = "hard_sigmoid",
    rope: Rope = DEFAULT_ROPE,
    memory: Memory | None = None,
    mask: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    empty_memory: str = "gate",
    attention_impl: str = "xla",
    features: str = "elu",
    beta: jax.Array | None = None,
    decay: jax.Array | None = None,
    delta_chunk: int = 32,
) -> tuple[jax.Array, Memory]:
    """Infini-attention over a whole sequence: a `jax.lax.scan` of `infini_segment`.

    Each segment of `segment_len` tokens attends causally to itself (RoPE positions restart at
    0) and reads the compressive memory left by the segments before it; then it is written.

    Args:
      q: `[batch, seq, heads, head_dim]`, before RoPE.
      k, v: `[batch, seq, kv_heads, head_dim]`, before RoPE; `heads % kv_heads == 0`.
      balance: `[heads]` raw balance factors b; out = g(b)·A_mem + (1 − g(b))·A_dot per head.
      segment_len: tokens per segment N; `seq % segment_len == 0`.
      update: `"linear"`, `"delta"` (one batch step per segment, the paper's) or
        `"exact_delta"` (the delta rule token by token, in its chunked form) memory update.
      gate: `"sigmoid"` or `"hard_sigmoid"` (clip(0.2·b + 0.5, 0, 1)).
      rope: RoPE base and scaling of the local attention (the memory path carries no positions).
      memory: state to start from (`None` = empty); float32 m `[batch, kv_heads, d, d]`,
        z `[batch, kv_heads, d]`, doc `[batch]`.
      mask: `[batch, seq]` bool, False = padding: never attended to, never written, output 0.
      segment_ids: `[batch, seq]` int document ids of packed sequences: attention stays inside
        a document, memory is read only by the document that wrote it and is reset when a
        segment ends in a new document.
      empty_memory: for a token whose memory is empty (or of another document): `"gate"` mixes
        A_mem = 0 (the seed study); `"local"` returns A_dot unmixed.
      attention_impl: the kernel of the local attention ("xla", or one of `ops.kernels`).
      features: the memory's feature map of q and k: `"elu"` (σ = ELU+1, read σ(q)M / σ(q)z)
        or `"l2"` (SiLU then L2 norm per head, read q̂M).
      beta: `[batch, seq, kv_heads]` write strength per token in (0, 1]; None = 1.
      decay: the decay α ∈ (0, 1] of M and z at each segment's write: `[kv_heads]` or
        `[batch, seq / segment_len, kv_heads]`; None = 1.
      delta_chunk: tokens per triangular system of `"exact_delta"` (divides segment_len).

    Returns:
      `(out [batch, seq, heads, head_dim] in q.dtype, memory after the last segment)`.
    """
    check_args(q, k, v, balance, mask, segment_ids)
    options = InfiniOptions(
        update, gate, empty_memory, rope, attention_impl, features=features, delta_chunk=delta_chunk
    )
    options.check()
    b, t, h, d = q.shape
    if segment_len <= 0 or t % segment_len:
        raise ValueError(
            f"seq={t} is not a positive multiple of segment_len={segment_len}; "
            "pad the sequence (mask=False) to a multiple of segment_len"
        )
    chunk = min(delta_chunk, segment_len)
    if update == "exact_delta" and (chunk <= 0 or segment_len % chunk):
        raise ValueError(f"delta_chunk={delta_chunk} does not divide segment_len={segment_len}")
    if beta is not None and beta.shape != (b, t, k.shape[2]):
        raise ValueError(f"beta has shape {beta.shape}; expected [batch, seq, kv_heads]")
    if memory is None:
        memory = init_memory(b, k.shape[2], d)
    if mask is None:
        mask = jnp.ones((b, t), bool)
    if segment_ids is None:
        segment_ids = jnp.zeros((b, t), jnp.int32)
    kv = k.shape[2]
    gates = {}
    if beta is not None:
        gates["beta"] = split_segments(jnp.broadcast_to(beta, (b, t, kv)), segment_len)
    if decay is not None:  # one α per segment: [segments, batch, kv]
        gates["decay"] = jnp.swapaxes(jnp.broadcast_to(decay, (b, t // segment_len, kv)), 0, 1)

    def step(mem, xs):
        (qs, ks, vs, ms, ids), g = xs
        out, mem = infini_segment(qs, ks, vs, balance, mem, options, mask=ms, segment_ids=ids, **g)
        return mem, out

    xs = tuple(split_segments(x, segment_len) for x in (q, k, v, mask, segment_ids))
    memory, out = jax.lax.scan(step, memory, (xs, gates))
    return merge_segments(out), memory
