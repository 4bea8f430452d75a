"""The model as pure functions: parameters and memory in, outputs and memory out.

`segment_step` runs one segment through the whole decoder stack. `sequence_logits` and
`sequence_loss` run a whole sequence as a `jax.lax.scan` of that same step over segments,
carrying every layer's memory, with the scan body rematerialised (`jax.checkpoint`), so
activation memory is O(segment), not O(sequence). Training, evaluation and generation all use
`segment_step`, through the one segment loop `scan_segments`.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from infini_jax import ops
from infini_jax.model.config import REMAT_POLICIES, ModelConfig
from infini_jax.model.layers import Transformer

Params = Any


@functools.partial(jax.jit, static_argnums=0)
def init_params(model_cfg: ModelConfig, rng: jax.Array) -> Params:
    """float32 parameters from an explicit key (layer parameters stacked on axis 0). Compiled
    once per config: run eagerly, the forward pass that initialisation traces would dispatch
    op by op (seconds); compiled, XLA drops it and keeps the random draws, bit for bit the same.
    """
    return nn.unbox(_init_boxed(model_cfg, rng))


def seed_params(model_cfg: ModelConfig, seed: int) -> Params:
    """A run's fresh parameters: `init_params` with the first key of `seed`'s split."""
    return init_params(model_cfg, jax.random.split(jax.random.key(seed))[0])


def param_logical_axes(model_cfg: ModelConfig) -> Params:
    """A tree of `PartitionSpec`s of logical axis names, shaped like `init_params`' result."""
    boxed = jax.eval_shape(lambda: _init_boxed(model_cfg, jax.random.key(0)))
    return nn.get_partition_spec(boxed)


def _init_boxed(model_cfg, rng):
    n = model_cfg.segment_len if model_cfg.attention != "full" else 1
    tokens = jnp.zeros((1, n), jnp.int32)
    return Transformer(model_cfg).init(rng, tokens, init_memory(model_cfg, 1))["params"]


def count_params(params: Params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))


def init_memory(model_cfg: ModelConfig, batch: int) -> ops.Memory | None:
    """Empty memory of every layer, stacked: m `[layers, batch, kv_heads, d, d]`, z
    `[layers, batch, kv_heads, d]`, doc `[layers, batch]`; None unless attention is "infini"."""
    if model_cfg.attention != "infini":
        return None
    return _per_layer(model_cfg, ops.init_memory(batch, model_cfg.num_kv_heads, model_cfg.head_dim))


def _per_layer(model_cfg: ModelConfig, tree):
    """One copy of `tree` per layer, stacked on a leading `[layers]` axis (as `nn.scan` wants)."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (model_cfg.num_layers, *x.shape)), tree)


def segment_step(
    model_cfg: ModelConfig,
    params: Params,
    tokens: jax.Array,
    memory: ops.Memory | None,
    mask: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
) -> tuple[jax.Array, ops.Memory | None]:
    """One segment through the decoder: tokens `[batch, n]` → logits `[batch, n, vocab]` f32.

    RoPE positions start at 0 in the segment. `memory` is `init_memory`-shaped (or None).
    """
    logits, memory, _ = Transformer(model_cfg).apply(
        {"params": params}, tokens, memory, mask, segment_ids
    )
    return logits, memory


def segment_gates(
    model_cfg: ModelConfig,
    params: Params,
    tokens: jax.Array,
    memory: ops.Memory | None,
) -> tuple[ops.Memory | None, dict[str, jax.Array]]:
    """`segment_step` without padding that also returns the memory's write gates of every
    layer: "beta" (write strength) `[layers, batch, n, kv_heads]` and "alpha" (decay)
    `[layers, batch, kv_heads]`, those the model has ({} for none). Returns `(memory after the
    segment, gates)`."""
    (_, memory, _), state = Transformer(model_cfg).apply(
        {"params": params}, tokens, memory, mutable=["intermediates"]
    )
    sown = state.get("intermediates", {}).get("layers", {}).get("attention", {})
    return memory, {name: values[0] for name, values in sown.items()}


def init_cache(model_cfg: ModelConfig, batch: int, max_len: int) -> ops.KVCache:
    """Empty KV caches of every layer, stacked on a leading `[layers]` axis: one segment's
    slots for "infini"/"local", `max_len` (prompt + new tokens) for "full"."""
    c = model_cfg
    window = max_len if c.attention == "full" else c.segment_len
    infini = c.attention == "infini"
    gates = {"beta": infini and c.write_strength, "decay": infini and c.decay != "none"}
    cache = ops.init_cache(batch, window, c.num_kv_heads, c.head_dim, c.compute_dtype, **gates)
    return _per_layer(c, cache)


def decode_step(
    model_cfg: ModelConfig,
    params: Params,
    token: jax.Array,
    memory: ops.Memory | None,
    cache: ops.KVCache,
) -> tuple[jax.Array, ops.Memory | None, ops.KVCache]:
    """One generated token: `token` `[batch]` int → `(logits [batch, vocab] f32, memory, cache)`.

    Equals `segment_step` on the segment so far at its last position; when the token completes a
    segment, the memory takes it in and the cache starts over (infini / local).
    """
    logits, memory, cache = Transformer(model_cfg).apply(
        {"params": params}, token[:, None], memory, cache=cache
    )
    return logits[:, 0], memory, cache


def token_logprob(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log p(target) under `logits` `[..., vocab]` (float32): `[...]`. The one NLL formula."""
    logz = jax.nn.logsumexp(logits, axis=-1)
    return jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0] - logz


def scan_segments(
    model_cfg: ModelConfig,
    params: Params,
    per_segment: Callable[[jax.Array, dict, ops.Memory | None], Any],
    tokens: jax.Array,
    extras: dict[str, jax.Array],
    memory: ops.Memory | None = None,
    *,
    reset_memory: bool = False,
) -> tuple[Any, ops.Memory | None]:
    """The segment loop: a `jax.lax.scan` of `segment_step` over the segments of `tokens`.

    Training, validation, evaluation and generation's prompt all run through it.

    Args:
      tokens: `[batch, seq]` int; `seq` a multiple of the window (`model_cfg.window_len`).
      extras: `[batch, seq, ...]` arrays split like the tokens; keys "mask" and "segment_ids"
        go to the model.
      per_segment: `(logits [batch, n, vocab], extras of the segment, memory after it)` → what
        is kept, stacked on a leading segment axis; a loss never holds more than one segment's
        logits.
      memory: the state to start from (None = empty).
      reset_memory: every segment starts from an empty memory (the memory-read ablation).

    Returns:
      `(stacked per_segment outputs, memory after the last segment)`. Gradients flow through
      the memory across all segments unless `model_cfg.bptt_segments = k > 0`, which stops them at
      every k-th segment boundary. The body is rematerialised per `model_cfg.remat_policy`.
    """
    b, t = tokens.shape
    n = model_cfg.window_len(t)
    if memory is None:
        memory = init_memory(model_cfg, b)

    def body(mem, xs):
        index, seg_tokens, seg_extras = xs
        if reset_memory:
            mem = init_memory(model_cfg, b)
        elif model_cfg.bptt_segments > 0:
            cut = (index > 0) & (index % model_cfg.bptt_segments == 0)
            mem = jax.tree.map(lambda x: jnp.where(cut, jax.lax.stop_gradient(x), x), mem)
        logits, mem = segment_step(
            model_cfg,
            params,
            seg_tokens,
            mem,
            seg_extras.get("mask"),
            seg_extras.get("segment_ids"),
        )
        return mem, per_segment(logits, seg_extras, mem)

    if model_cfg.remat_policy != "none":
        body = jax.checkpoint(
            body, policy=REMAT_POLICIES[model_cfg.remat_policy], prevent_cse=False
        )
    split = {key: ops.split_segments(x, n) for key, x in extras.items()}
    xs = (jnp.arange(t // n), ops.split_segments(tokens, n), split)
    memory, outs = jax.lax.scan(body, memory, xs)
    return outs, memory


def sequence_logits(
    model_cfg: ModelConfig,
    params: Params,
    tokens: jax.Array,
    *,
    memory: ops.Memory | None = None,
    mask: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
) -> tuple[jax.Array, ops.Memory | None]:
    """Logits `[batch, seq, vocab]` of a whole sequence (for tests and short evaluations)."""
    extras = {k: x for k, x in (("mask", mask), ("segment_ids", segment_ids)) if x is not None}
    logits, memory = scan_segments(model_cfg, params, lambda lg, *_: lg, tokens, extras, memory)
    return ops.merge_segments(logits), memory


def sequence_loss(
    model_cfg: ModelConfig,
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

    def per_segment(logits, ex, _):
        nll = -token_logprob(logits, ex["targets"])
        return jnp.sum(nll * ex["weights"]), jnp.sum(ex["weights"])

    (nll, count), memory = scan_segments(model_cfg, params, per_segment, tokens, extras, memory)
    return nll, count, memory
