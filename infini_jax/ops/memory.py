"""The compressive memory of Infini-attention: state, retrieval, update (all float32), and the
gated mix of its retrieval with the local attention (`mix`), with the options carried together.

Shapes: `b` batch, `n` tokens in the segment, `k` kv heads, `g` query heads per kv head,
`d` head_dim. One memory per layer and per kv head; every query head of a group reads it.
Heads come first (`[b, k, g, n, d]`, `[b, k, n, d]`: `ops.local.group_heads`), so (b, k) lead
as the batch of every matmul and XLA moves no data around them (docs/performance.md).
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from infini_jax.ops.delta_rule import FEATURES, exact_delta_write, features, key_mass
from infini_jax.ops.rope import Rope

UPDATE_RULES = ("linear", "delta", "exact_delta")
GATES = ("sigmoid", "hard_sigmoid")
EMPTY_MEMORY_MODES = ("gate", "local")


class Memory(NamedTuple):
    """State of the compressive memory of one layer (stacked layers add a leading axis).

    Attributes:
      m: float32 `[batch, kv_heads, head_dim, head_dim]`, the associative matrix M.
      z: float32 `[batch, kv_heads, head_dim]`, the normaliser z (sum of σ(k) written; with
        "l2" features the sum of k̂², so Σz counts the writes: the read does not use it).
      doc: int32 `[batch]`, the document (segment id) whose keys the memory holds.
    """

    m: jax.Array
    z: jax.Array
    doc: jax.Array


def init_memory(batch: int, kv_heads: int, head_dim: int) -> Memory:
    """Empty memory: M = 0, z = 0 (so it reads as empty), document 0."""
    return Memory(
        m=jnp.zeros((batch, kv_heads, head_dim, head_dim), jnp.float32),
        z=jnp.zeros((batch, kv_heads, head_dim), jnp.float32),
        doc=jnp.zeros((batch,), jnp.int32),
    )


def sigma(x: jax.Array) -> jax.Array:
    """σ(x) = ELU(x) + 1 in float32: the positive feature map of the memory path."""
    return jax.nn.elu(x.astype(jnp.float32)) + 1.0


def gate_value(balance: jax.Array, gate: str) -> jax.Array:
    """g(b): `"sigmoid"` → sigmoid(b); `"hard_sigmoid"` → clip(0.2·b + 0.5, 0, 1). float32."""
    b = balance.astype(jnp.float32)
    if gate == "sigmoid":
        return jax.nn.sigmoid(b)
    if gate == "hard_sigmoid":
        return jnp.clip(0.2 * b + 0.5, 0.0, 1.0)
    raise ValueError(f"gate={gate!r} is not one of {GATES}")


def _safe_ratio(num: jax.Array, den: jax.Array, ok: jax.Array) -> jax.Array:
    """num / den[..., None] where `ok & den > 0`, else 0; no NaN in values or gradients."""
    ok = ok & (den > 0)
    return jnp.where(ok[..., None], num / jnp.where(ok, den, 1.0)[..., None], 0.0)


def memory_read(
    sq: jax.Array, memory: Memory, reads: jax.Array, kind: str = "elu"
) -> tuple[jax.Array, jax.Array]:
    """A_mem = σ(q) M / (σ(q) z) ("elu"), or q̂ M ("l2"), from the state left by the previous
    segment.

    Args:
      sq: σ(q) or q̂ (`delta_rule.features`), float32 `[b, k, g, n, d]`.
      memory: the state before this segment.
      reads: bool `[b, n]`, tokens allowed to read it (same document, not padding).
      kind: the feature map, "elu" or "l2".

    Returns:
      `(a_mem [b, k, g, n, d], has_memory [b, k, g, n])`; A_mem is 0 where the memory is
      empty (z all zero) or not readable by that token.
    """
    nonempty = jnp.any(memory.z > 0, axis=-1)  # [b, k]
    has = reads[:, None, None, :] & nonempty[:, :, None, None]
    # One matmul gives numerator and denominator: σ(q) [M | z] → [..., d + 1], with (g, n) as
    # one row axis: two contracted axes in its gradient cost XLA a copy (docs/performance.md).
    b, k, g, n, d = sq.shape
    rows = sq.reshape(b, k, g * n, d)
    if kind == "l2":  # unit-norm queries: a stored key's read returns its value, unscaled
        read = jnp.einsum("bkrd,bkde->bkre", rows, memory.m).reshape(b, k, g, n, d)
        has = jnp.broadcast_to(has, read.shape[:-1])
        return jnp.where(has[..., None], read, 0.0), has
    both = jnp.einsum("bkrd,bkde->bkre", rows, _with_z(memory.m, memory.z))
    both = both.reshape(b, k, g, n, d + 1)
    has = jnp.broadcast_to(has, both.shape[:-1])
    return _safe_ratio(both[..., :-1], both[..., -1], has), has


def _with_z(m: jax.Array, z: jax.Array) -> jax.Array:
    """[M | z]: `[b, k, d, d + 1]`, so σ(x)[M | z] yields σ(x)M and σ(x)z in one matmul."""
    return jnp.concatenate([m, z[..., None]], axis=-1)


def memory_write(
    sk: jax.Array,
    v: jax.Array,
    memory: Memory,
    mask: jax.Array,
    segment_ids: jax.Array,
    update: str,
    *,
    kind: str = "elu",
    beta: jax.Array | None = None,
    decay: jax.Array | None = None,
    chunk: int = 32,
) -> Memory:
    """Writes one segment into the memory (after it was read).

    The memory follows the document of the segment's last non-padded token: if that document
    differs from `memory.doc`, M and z are reset first. Only non-padded keys of that document
    are written. A segment of padding only leaves the memory unchanged.

    Args:
      sk: the keys' features σ(k) or k̂ (`delta_rule.features`), float32 `[b, k, n, d]`.
      v: values `[b, k, n, d]`.
      memory: the state before this segment.
      mask: bool `[b, n]`, False = padding.
      segment_ids: int `[b, n]` document ids.
      update: `"linear"`: M += σ(K)ᵀV; `"delta"`: M += σ(K)ᵀ(V − σ(K)M / (σ(K)z)), one batch
        step from the state before the segment; `"exact_delta"`: that rule token by token, in
        order (`delta_rule.exact_delta_write`). Every token's row is scaled by its β. z += Σ
        β·σ(k) ("elu") or Σ β·k̂² ("l2"). With "l2" the read in the delta terms is k̂M.
      kind: the feature map of `sk`, "elu" or "l2".
      beta: float `[b, n, k]` write strength per token and kv head in (0, 1]; None = 1.
      decay: float `[b, k]` α ∈ (0, 1] applied to M and z once, before the segment's write
        (none on a segment of padding only); None = 1.
      chunk: tokens per triangular system of "exact_delta" (the result does not depend on it).
    """
    n = mask.shape[1]
    any_valid = jnp.any(mask, axis=1)
    last = n - 1 - jnp.argmax(mask[:, ::-1], axis=1)
    last_doc = jnp.take_along_axis(segment_ids, last[:, None], axis=1)[:, 0].astype(jnp.int32)
    doc = jnp.where(any_valid, last_doc, memory.doc)
    keep = doc == memory.doc
    m = jnp.where(keep[:, None, None, None], memory.m, 0.0)
    z = jnp.where(keep[:, None, None], memory.z, 0.0)
    if decay is not None:
        alpha = jnp.where(any_valid[:, None], decay.astype(jnp.float32), 1.0)
        m, z = m * alpha[..., None, None], z * alpha[..., None]
    write = (mask & (segment_ids == doc[:, None])).astype(jnp.float32)[:, None, :]  # [b, 1, n]
    if beta is not None:
        write = write * jnp.swapaxes(beta.astype(jnp.float32), 1, 2)  # [b, k, n]
    write = jnp.broadcast_to(write, sk.shape[:-1])
    vt = v.astype(jnp.float32)
    if update == "exact_delta" or kind == "l2":
        z_new = z + jnp.einsum("bkn,bknd->bkd", write, key_mass(sk, kind))
    if update == "exact_delta":
        m_new = exact_delta_write(sk, vt, m, z, write, kind, min(chunk, n))
        return Memory(m=m_new, z=z_new, doc=doc)
    if update == "delta" and kind == "l2":
        vt = vt - jnp.einsum("bknd,bkde->bkne", sk, m)
    elif update == "delta":
        both = jnp.einsum("bknd,bkde->bkne", sk, _with_z(m, z))
        vt = vt - _safe_ratio(both[..., :-1], both[..., -1], jnp.ones(both.shape[:-1], bool))
    elif update != "linear":
        raise ValueError(f"update={update!r} is not one of {UPDATE_RULES}")
    skw = sk * write[..., None]
    if kind == "l2":
        return Memory(m=m + jnp.einsum("bknd,bkne->bkde", skw, vt), z=z_new, doc=doc)
    # One matmul writes both: σ(K)ᵀ[V | 1] = [ΔM | Δz].
    ones = jnp.ones(vt.shape[:-1] + (1,), jnp.float32)
    delta = jnp.einsum("bknd,bkne->bkde", skw, jnp.concatenate([vt, ones], axis=-1))
    return Memory(m=m + delta[..., :-1], z=z + delta[..., -1], doc=doc)


def memory_stats(memory: Memory) -> tuple[jax.Array, jax.Array]:
    """‖M‖_F and Σz of every memory, each averaged over kv heads: two arrays shaped like
    `memory.doc` (`[batch]`, or `[layers, batch]` when stacked)."""
    norm = jnp.sqrt(jnp.sum(memory.m**2, axis=(-2, -1)))
    return jnp.mean(norm, axis=-1), jnp.mean(jnp.sum(memory.z, axis=-1), axis=-1)


@dataclasses.dataclass(frozen=True)
class InfiniOptions:
    """The choices of the op, carried together (see `infini_attention` for each)."""

    update: str = "delta"
    gate: str = "hard_sigmoid"
    empty_memory: str = "gate"
    rope: Rope = Rope()
    attention_impl: str = "xla"  # the local attention's kernel (`ops.kernels`), resolved
    splash_blocks: tuple[int, int, int] = (512, 512, 512)  # its (q, kv, kv_compute) blocks
    features: str = "elu"  # the memory path's feature map: "elu" (σ = ELU+1, z) or "l2"
    delta_chunk: int = 32  # exact_delta: tokens per triangular system

    def check(self) -> None:
        """One ValueError line for an unknown option."""
        for name, options in (
            ("update", UPDATE_RULES),
            ("gate", GATES),
            ("empty_memory", EMPTY_MEMORY_MODES),
            ("features", FEATURES),
        ):
            value = getattr(self, name)
            if value not in options:
                raise ValueError(f"{name}={value!r} is not one of {options}")


def mix(
    q: jax.Array,
    a_dot: jax.Array,
    balance: jax.Array,
    memory: Memory,
    reads: jax.Array,
    options: InfiniOptions,
) -> jax.Array:
    """A = g(b)·A_mem + (1 − g(b))·A_dot, with A_mem = σ(q)M / σ(q)z (or q̂M) read from `memory`.

    Args:
      q: `[b, kv_heads, group, n, d]` queries (`group_heads`; before RoPE: the memory carries
        no positions).
      a_dot: `[b, kv_heads, group, n, d]` float32 local attention output.
      balance: `[heads]` raw balance factors b.
      memory: the state left by the previous segment.
      reads: `[b, n]` bool, tokens allowed to read it (same document, not padding).
      options: `gate` picks g; `empty_memory="local"` returns A_dot where nothing can be read.

    Returns:
      `[b, kv_heads, group, n, d]` float32.
    """
    kv, group = a_dot.shape[1:3]
    a_mem, has_memory = memory_read(features(q, options.features), memory, reads, options.features)
    g = gate_value(balance, options.gate).reshape(kv, group, 1, 1)
    out = g * a_mem + (1.0 - g) * a_dot
    if options.empty_memory == "local":
        out = jnp.where(has_memory[..., None], out, a_dot)
    return out
