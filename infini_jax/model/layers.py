"""Flax linen layers of the LLaMA decoder. Pure: parameters in, outputs (and memory) out.

Every parameter carries logical axis names (`nn.with_logical_partitioning`) that the config's
sharding rules map onto mesh axes: embed, vocab, mlp, heads, kv_heads, head_dim, layers.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from infini_jax import ops
from infini_jax.model.config import REMAT_POLICIES, ModelConfig

partitioned = nn.with_logical_partitioning


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last axis, computed in float32, with a learned scale."""

    eps: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: `[..., features]` → same shape, `self.dtype`."""
        scale = self.param(
            "scale", partitioned(nn.initializers.ones, ("embed",)), (x.shape[-1],), jnp.float32
        )
        xf = x.astype(jnp.float32)
        xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return (xf * scale).astype(self.dtype)


def _dense(model_cfg: ModelConfig, features, axes, name, axis=-1):
    return nn.DenseGeneral(
        features,
        axis=axis,
        use_bias=False,
        dtype=model_cfg.compute_dtype,
        param_dtype=jnp.float32,
        kernel_init=partitioned(nn.initializers.normal(model_cfg.init_std), axes),
        name=name,
    )


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    model_cfg: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: `[batch, seq, d_model]` → `[batch, seq, d_model]`."""
        c = self.model_cfg
        gate = _dense(c, c.mlp_dim, ("embed", "mlp"), "gate")(x)
        up = _dense(c, c.mlp_dim, ("embed", "mlp"), "up")(x)
        return _dense(c, c.d_model, ("mlp", "embed"), "down")(nn.silu(gate) * up)


class Attention(nn.Module):
    """Multi-head / grouped-query attention of one segment: "full", "local" or "infini"."""

    model_cfg: ModelConfig

    def _kernel(self, q: jax.Array) -> str:
        """The attention kernel for windows of `q.shape[1]` tokens (`model.attention_impl`)."""
        return ops.kernels.resolve(self.model_cfg.attention_impl, q.shape[1])[0]

    def _write_gates(self, x: jax.Array) -> tuple[jax.Array | None, jax.Array | None]:
        """The memory's write strength β = sigmoid(W_β x + b_β) and decay logits (b_α, plus
        W_α x when data-dependent), each float32 `[batch, n, kv_heads]` or None when off."""
        c = self.model_cfg
        kv = c.num_kv_heads
        beta = logits = None
        if c.write_strength:
            init = math.log(c.write_strength_init / (1.0 - c.write_strength_init))
            beta = nn.sigmoid(
                nn.DenseGeneral(
                    kv,
                    dtype=jnp.float32,
                    param_dtype=jnp.float32,
                    kernel_init=partitioned(
                        nn.initializers.normal(c.init_std), ("embed", "kv_heads")
                    ),
                    bias_init=partitioned(nn.initializers.constant(init), ("kv_heads",)),
                    name="write_strength",
                )(x)
            )
        if c.decay != "none":
            logits = self.param(
                "decay_bias",
                partitioned(nn.initializers.constant(ops.decay_logit(c.decay_init)), ("kv_heads",)),
                (kv,),
                jnp.float32,
            )
            logits = jnp.broadcast_to(logits, (*x.shape[:2], kv))
            if c.decay == "data":  # zero at init: α starts at decay_init for every input
                logits = logits + nn.DenseGeneral(
                    kv,
                    use_bias=False,
                    dtype=jnp.float32,
                    param_dtype=jnp.float32,
                    kernel_init=partitioned(nn.initializers.zeros, ("embed", "kv_heads")),
                    name="decay",
                )(x)
        return beta, logits

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        memory: ops.Memory | None,
        mask: jax.Array,
        segment_ids: jax.Array,
        cache: ops.KVCache | None = None,
    ) -> tuple[jax.Array, ops.Memory | None, ops.KVCache | None]:
        """One segment (or the whole sequence for "full") of one layer, or with `cache` one
        generated token.

        Args:
          x: `[batch, n, d_model]` normalised hidden states (`n = 1` with a cache).
          memory: this layer's state before the segment (infini), else None.
          mask: `[batch, n]` bool, False = padding. segment_ids: `[batch, n]` int documents.
          cache: this layer's KV cache of the current window (generation), else None.

        Returns:
          `(y [batch, n, d_model], memory after the segment or None, cache or None)`.
        """
        c = self.model_cfg
        q = _dense(c, (c.num_heads, c.head_dim), ("embed", "heads", "head_dim"), "query")(x)
        k = _dense(c, (c.num_kv_heads, c.head_dim), ("embed", "kv_heads", "head_dim"), "key")(x)
        v = _dense(c, (c.num_kv_heads, c.head_dim), ("embed", "kv_heads", "head_dim"), "value")(x)
        balance = None
        if c.attention == "infini":
            balance = self.param(
                "balance",
                partitioned(nn.initializers.constant(c.balance_init), ("heads",)),
                (c.num_heads,),
                jnp.float32,
            )
            beta, decay_logits = self._write_gates(x)
        if cache is not None and balance is not None:
            out, memory, cache = ops.infini_decode(
                q,
                k,
                v,
                balance,
                memory,
                cache,
                c.infini_options,
                beta=beta,
                decay_logits=decay_logits,
            )
        elif cache is not None:
            wrap = c.attention == "local"
            out, cache = ops.local_decode(q, k, v, cache, rope=c.rope, wrap=wrap)
        elif balance is not None:
            options = dataclasses.replace(c.infini_options, attention_impl=self._kernel(q))
            decay = None if decay_logits is None else ops.decay_from_logits(decay_logits, mask)
            # What the memory_stats evaluation reads (`model.segment_gates`); else a no-op.
            for name, value in (("beta", beta), ("alpha", decay)):
                if value is not None:
                    self.sow("intermediates", name, value)
            out, memory = ops.infini_segment(
                q,
                k,
                v,
                balance,
                memory,
                options,
                mask=mask,
                segment_ids=segment_ids,
                beta=beta,
                decay=decay,
            )
        else:
            out = ops.local_attention(
                q,
                k,
                v,
                mask=mask,
                segment_ids=segment_ids,
                rope=c.rope,
                impl=self._kernel(q),
                blocks=c.splash_blocks,
            )
        out = checkpoint_name(out, "attention_out")  # what remat policy "attention_out" keeps
        y = _dense(c, c.d_model, ("heads", "head_dim", "embed"), "out", axis=(-2, -1))(out)
        return y, memory, cache


class Block(nn.Module):
    """Pre-norm decoder block: x + attn(norm(x)), then x + mlp(norm(x))."""

    model_cfg: ModelConfig

    @nn.compact
    def __call__(self, x, state, mask, segment_ids):
        """x: `[batch, n, d_model]`; state: this layer's `(memory, cache)`.

        Returns `(x, (memory, cache))`."""
        c = self.model_cfg
        memory, cache = state
        h, memory, cache = Attention(c, name="attention")(
            RMSNorm(c.norm_eps, c.compute_dtype, name="attention_norm")(x),
            memory,
            mask,
            segment_ids,
            cache,
        )
        x = x + h
        x = x + MLP(c, name="mlp")(RMSNorm(c.norm_eps, c.compute_dtype, name="mlp_norm")(x))
        return x, (memory, cache)


class Transformer(nn.Module):
    """The LLaMA decoder applied to ONE segment: tokens + memory in, logits + memory out.

    The layers are one `nn.scan` (parameters stacked on a leading `layers` axis), so compile
    time does not grow with depth. The loop over segments lives in `infini_jax.model`.
    """

    model_cfg: ModelConfig

    @nn.compact
    def __call__(
        self,
        tokens: jax.Array,
        memory: ops.Memory | None = None,
        mask: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache: ops.KVCache | None = None,
    ):
        """Args: tokens `[batch, n]` int; memory stacked `[layers, batch, ...]` (infini) or None;
        mask `[batch, n]` bool; segment_ids `[batch, n]` int; cache: stacked `[layers, ...]` KV
        caches for generating one token (`n = 1`), else None.

        Returns: `(logits [batch, n, vocab] float32, memory after the segment, cache after
        the token or None)`.
        """
        c = self.model_cfg
        if mask is None:
            mask = jnp.ones(tokens.shape, bool)
        if segment_ids is None:
            segment_ids = jnp.zeros(tokens.shape, jnp.int32)
        embed = nn.Embed(
            c.vocab_size,
            c.d_model,
            dtype=c.compute_dtype,
            param_dtype=jnp.float32,
            embedding_init=partitioned(nn.initializers.normal(c.init_std), ("vocab", "embed")),
            name="embed",
        )
        x = embed(tokens)
        block = Block
        if c.remat_layers:
            policy = REMAT_POLICIES[c.layer_remat_policy]
            block = nn.remat(Block, prevent_cse=False, policy=policy)
        stack = nn.scan(
            block,
            variable_axes={"params": 0, "intermediates": 0},
            split_rngs={"params": True},
            in_axes=(0, nn.broadcast, nn.broadcast),
            length=c.num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        x, (memory, new_cache) = stack(c, name="layers")(x, (memory, cache), mask, segment_ids)
        x = RMSNorm(c.norm_eps, c.compute_dtype, name="final_norm")(x)
        if c.tie_embeddings:
            logits = embed.attend(x)
        else:
            logits = _dense(c, c.vocab_size, ("embed", "vocab"), "unembed")(x)
        return logits.astype(jnp.float32), memory, new_cache
