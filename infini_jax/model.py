"""The model as pure functions: parameters and memory in, outputs and memory out.

`segment_step` runs one segment through the whole decoder stack. `sequence_logits` and
`sequence_loss` run a whole sequence as a `jax.lax.scan` of that same step over segments,
carrying every layer's memory, with the scan body rematerialised (`jax.checkpoint`), so
activation memory is O(segment), not O(sequence). Training, evaluation and generation all use
`segment_step`.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from infini_jax import ops
from infini_jax.layers import Transformer
from infini_jax.model_config import ModelConfig

Params = Any

_POLICIES = {
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def init_params(cfg: ModelConfig, rng: jax.Array) -> Params:
    """float32 parameters from an explicit key (layer parameters stacked on axis 0)."""
    return nn.unbox(_init_boxed(cfg, rng))


def param_logical_axes(cfg: ModelConfig) -> Params:
    """A tree of `PartitionSpec`s of logical axis names, shaped like `init_params`' result."""
    boxed = jax.eval_shape(lambda: _init_boxed(cfg, jax.random.key(0)))
    return nn.get_partition_spec(boxed)


def _init_boxed(cfg, rng):
    n = cfg.segment_len if cfg.attention != "full" else 1
    tokens = jnp.zeros((1, n), jnp.int32)
    return Transformer(cfg).init(rng, tokens, init_memory(cfg, 1))["params"]


def count_params(params: Params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))


def init_memory(cfg: ModelConfig, batch: int) -> ops.Memory | None:
    """Empty memory of every layer, stacked: m `[layers, batch, kv_heads, d, d]`, z
    `[layers, batch, kv_heads, d]`, doc `[layers, batch]`; None unless attention is "infini"."""
    if cfg.attention != "infini":
        return None
    mem = ops.init_memory(batch, cfg.num_kv_heads, cfg.head_dim)
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (cfg.num_layers, *x.shape)), mem)


def segment_step(
    cfg: ModelConfig,
    params: Params,
    tokens: jax.Array,
    memory: ops.Memory | None,
    mask: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
) -> tuple[jax.Array, ops.Memory | None]:
    """One segment through the decoder: tokens `[batch, n]` → logits `[batch, n, vocab]` f32.

    RoPE positions start at 0 in the segment. `memory` is `init_memory`-shaped (or None).
    """
    return Transformer(cfg).apply({"params": params}, tokens, memory, mask, segment_ids)


def init_cache(cfg: ModelConfig, batch: int, max_len: int) -> ops.KVCache:
    """Empty KV caches of every layer, stacked on a leading `[layers]` axis: one segment's
    slots for "infini"/"local", `max_len` (prompt + new tokens) for "full"."""
    window = max_len if cfg.attention == "full" else cfg.segment_len
    cache = ops.init_cache(batch, window, cfg.num_kv_heads, cfg.head_dim, cfg.compute_dtype)
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (cfg.num_layers, *x.shape)), cache)


def decode_step(
    cfg: ModelConfig,
    params: Params,
    token: jax.Array,
    memory: ops.Memory | None,
    cache: ops.KVCache,
) -> tuple[jax.Array, ops.Memory | None, ops.KVCache]:
    """One generated token: `token` `[batch]` int → `(logits [batch, vocab] f32, memory, cache)`.

    Equals `segment_step` on the segment so far at its last position; when the token completes a
    segment, the memory takes it in and the cache starts over (infini / local).
    """
    logits, memory, cache = Transformer(cfg).apply(
        {"params": params}, token[:, None], memory, cache=cache
    )
    return logits[:, 0], memory, cache


def window_len(cfg: ModelConfig, seq_len: int) -> int:
    """Tokens per scan step: the whole sequence for "full", else `segment_len`."""
    if cfg.attention == "full":
        return seq_len
    if seq_len % cfg.segment_len:
        raise ValueError(
            f"sequence length {seq_len} is not a multiple of model.segment_len={cfg.segment_len}"
        )
    return cfg.segment_len


def scan_segments(
    cfg: ModelConfig,
    params: Params,
    per_segment: Callable[[jax.Array, dict], Any],
    tokens: jax.Array,
    extras: dict[str, jax.Array],
    memory: ops.Memory | None = None,
) -> tuple[Any, ops.Memory | None]:
    """`jax.lax.scan` of `segment_step` over the segments of `tokens` `[batch, seq]`.

    `extras` are `[batch, seq, ...]` arrays split like the tokens (keys "mask" and "segment_ids"
    go to the model). `per_segment(logits, extras_of_segment)` maps each segment's logits to
    what is kept (stacked on a leading segment axis), so a loss never holds more than one
    segment's logits. Gradients flow through the memory across all segments unless
    `cfg.bptt_segments = k > 0`, which stops them at every k-th segment boundary.
    """
    b, t = tokens.shape
    n = window_len(cfg, t)
    s = t // n
    if memory is None:
        memory = init_memory(cfg, b)

    def split(x):
        return jnp.swapaxes(x.reshape(b, s, n, *x.shape[2:]), 0, 1)

    def body(mem, xs):
        index, seg_tokens, seg_extras = xs
        if cfg.bptt_segments > 0:
            cut = (index > 0) & (index % cfg.bptt_segments == 0)
            mem = jax.tree.map(lambda x: jnp.where(cut, jax.lax.stop_gradient(x), x), mem)
        logits, mem = segment_step(
            cfg, params, seg_tokens, mem, seg_extras.get("mask"), seg_extras.get("segment_ids")
        )
        return mem, per_segment(logits, seg_extras)

    if cfg.remat_policy != "none":
        body = jax.checkpoint(body, policy=_POLICIES[cfg.remat_policy], prevent_cse=False)
    xs = (jnp.arange(s), split(tokens), {key: split(x) for key, x in extras.items()})
    memory, outs = jax.lax.scan(body, memory, xs)
    return outs, memory


def sequence_logits(
    cfg: ModelConfig,
    params: Params,
    tokens: jax.Array,
    *,
    memory: ops.Memory | None = None,
    mask: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
) -> tuple[jax.Array, ops.Memory | None]:
    """Logits `[batch, seq, vocab]` of a whole sequence (for tests and short evaluations)."""
    extras = {k: x for k, x in (("mask", mask), ("segment_ids", segment_ids)) if x is not None}
    logits, memory = scan_segments(cfg, params, lambda lg, _: lg, tokens, extras, memory)
    b, t = tokens.shape
    return jnp.swapaxes(logits, 0, 1).reshape(b, t, -1), memory


def sequence_loss(
    cfg: ModelConfig,
    params: Params,
    tokens: jax.Array,
    targets: jax.Array,
    *,
    weights: jax.Array | None = None,
    memory: ops.Memory | None = None,
    mask: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, ops.Memory | None]:
    """Summed next-token cross-entropy, computed segment by segment inside the scan.

    Args:
      tokens, targets: `[batch, seq]` int. weights: `[batch, seq]` float (default: `mask`, or 1).

    Returns:
      `(nll_sum [segments] float32, weight_sum [segments] float32, memory)`: per-segment sums,
      so callers can normalise over micro-batches and hosts, or report loss by segment.
    """
    if weights is None:
        weights = jnp.ones(tokens.shape, jnp.float32) if mask is None else mask
    extras = {"targets": targets, "weights": weights.astype(jnp.float32)}
    extras.update(
        {k: x for k, x in (("mask", mask), ("segment_ids", segment_ids)) if x is not None}
    )

    def per_segment(logits, ex):
        logz = jax.nn.logsumexp(logits, axis=-1)
        gold = jnp.take_along_axis(logits, ex["targets"][..., None], axis=-1)[..., 0]
        return jnp.sum((logz - gold) * ex["weights"]), jnp.sum(ex["weights"])

    (nll, count), memory = scan_segments(cfg, params, per_segment, tokens, extras, memory)
    return nll, count, memory
