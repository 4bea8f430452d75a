"""The memory's write options beyond the paper's: key features, the exact delta rule over a
segment (chunked "UT" form), and the per-segment decay (docs/infini_attention.md).

Shapes: `b` batch, `k` kv heads, `n` tokens in the segment, `d` head_dim. Everything float32.
"""

import math

import jax
import jax.numpy as jnp

FEATURES = ("elu", "l2")


def features(x: jax.Array, kind: str) -> jax.Array:
    """The memory path's feature map of queries or keys `[..., d]`, in float32.

    `"elu"`: σ(x) = ELU(x) + 1 (positive; the paper's, read normalised by σ(q)z).
    `"l2"`: SiLU(x) / ‖SiLU(x)‖₂ over the head dimension (DeltaNet; a zero vector stays 0).
    """
    x = x.astype(jnp.float32)
    if kind == "elu":
        return jax.nn.elu(x) + 1.0
    if kind == "l2":
        s = jax.nn.silu(x)
        sq = jnp.sum(s * s, axis=-1, keepdims=True)
        # rsqrt of a floor, not of 0: finite value and gradient for an all-zero row.
        return s * jax.lax.rsqrt(jnp.maximum(sq, 1e-12))
    raise ValueError(f"features={kind!r} is not one of {FEATURES}")


def key_mass(sk: jax.Array, kind: str) -> jax.Array:
    """What one written key adds to the normaliser z: σ(k) for "elu"; k̂² (elementwise, so
    Σz counts writes: ‖k̂‖ = 1) for "l2", where z only marks and measures the memory's use."""
    return sk if kind == "elu" else sk * sk


def decay_from_logits(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """The segment's decay α = exp(−softplus(ā)) ∈ (0, 1), ā the mean of `logits` over the
    tokens that `mask` keeps.

    Args:
      logits: float `[b, n, k]` per-token decay logits (a per-head bias, plus a projection of
        the token's input when the decay is data-dependent).
      mask: bool `[b, n]`, the tokens that count (not padding).

    Returns:
      float32 `[b, k]`; 1 (no decay) for a row with no kept token.
    """
    w = mask.astype(jnp.float32)[..., None]
    count = jnp.sum(w, axis=1)
    mean = jnp.sum(logits.astype(jnp.float32) * w, axis=1) / jnp.maximum(count, 1.0)
    return jnp.where(count > 0, jnp.exp(-jax.nn.softplus(mean)), 1.0)


def decay_logit(alpha: float) -> float:
    """The logit a with exp(−softplus(a)) = alpha: where to start for a decay of `alpha`."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"a decay of {alpha!r} is not in (0, 1)")
    return math.log(math.expm1(-math.log(alpha)))


def unit_lower_inverse(lower: jax.Array) -> jax.Array:
    """(I + L)⁻¹ for strictly lower-triangular L `[..., c, c]`, in matmuls only.

    L is nilpotent (L^c = 0), so (I + L)⁻¹ = Σ_j (−L)^j = Π_i (I + (−L)^(2^i)) over
    ⌈log₂ c⌉ factors: 2·⌈log₂ c⌉ − 2 batched c × c matmuls. On CPU this is 5–14× faster than
    XLA's batched triangular solve (and on TPU a matmul is what the MXU does); it is accurate
    to float32 rounding for the chunk sizes used here (≤ 64; tested).
    """
    c = lower.shape[-1]
    power = -lower
    inverse = jnp.eye(c, dtype=lower.dtype) + power
    span = 2
    while span < c:
        power = power @ power
        inverse = inverse + inverse @ power
        span *= 2
    return inverse


def exact_delta_write(
    sk: jax.Array,
    v: jax.Array,
    m: jax.Array,
    z: jax.Array,
    strength: jax.Array,
    kind: str,
    chunk: int,
) -> jax.Array:
    """M after applying the delta rule token by token, in order, over the segment.

    Per token t (σ(k) = `sk`, w_t = `strength`, 0 for tokens that do not write):
      M_t = M_{t−1} + w_t σ(k_t)ᵀ (v_t − σ(k_t) M_{t−1} / d_t),
    d_t = σ(k_t)·z_{t−1} for "elu" (z_{t−1} = z + Σ_{s<t} w_s σ(k_s); the read is 0 while
    d_t = 0) and d_t = 1 for "l2". The d_t do not depend on M, so a chunk of c tokens is one
    unit lower-triangular system (the WY / UT form of DeltaNet):
      (I + StrictLower(diag(w/d) K Kᵀ)) U = diag(w) (V − diag(1/d) K M₀),   M_c = M₀ + Kᵀ U.
    With T the system's inverse (`unit_lower_inverse`), U = T diag(w) V − T diag(w/d) K M₀:
    both T-products are computed for every chunk at once, and only M₀ ↦ M_c, two c × d × d
    matmuls, runs chunk after chunk in a `lax.scan`.

    Args:
      sk: keys' features `[b, k, n, d]` float32. v: values `[b, k, n, d]`.
      m: `[b, k, d, d]` and z: `[b, k, d]`, the state the segment starts from (decayed).
      strength: `[b, k, n]` float32 write strength per token (β times the write mask).
      kind: the feature map ("elu" or "l2"). chunk: tokens per system (divides n).

    Returns:
      M after the segment, `[b, k, d, d]` float32.
    """
    b, kv, n, d = sk.shape
    if n % chunk:
        raise ValueError(f"delta chunk {chunk} does not divide the segment's {n} tokens")
    v = v.astype(jnp.float32)
    erase = strength  # w_t / d_t: how strongly token t's read is subtracted
    if kind == "elu":
        mass = strength[..., None] * sk
        z_before = z[:, :, None, :] + jnp.cumsum(mass, axis=2) - mass  # z_{t−1}
        den = jnp.sum(sk * z_before, axis=-1)
        erase = strength * jnp.where(den > 0, 1.0 / jnp.where(den > 0, den, 1.0), 0.0)

    def split(x):  # [b, k, n, ...] → [n / c, b, k, c, ...]
        return jnp.moveaxis(x.reshape(b, kv, n // chunk, chunk, *x.shape[3:]), 2, 0)

    kc, vc, wc, ec = split(sk), split(v), split(strength), split(erase)
    gram = jnp.einsum("xbkid,xbkjd->xbkij", kc, kc)
    strict = jnp.tril(jnp.ones((chunk, chunk), bool), -1)
    t = unit_lower_inverse(jnp.where(strict, ec[..., None] * gram, 0.0))
    written = t @ (wc[..., None] * vc)  # T diag(w) V
    erased = t @ (ec[..., None] * kc)  # T diag(w/d) K

    def step(m, xs):
        keys, w_v, e_k = xs
        u = w_v - jnp.einsum("bkid,bkde->bkie", e_k, m)
        return m + jnp.einsum("bkid,bkie->bkde", keys, u), None

    m, _ = jax.lax.scan(step, m, (kc, written, erased))
    return m
