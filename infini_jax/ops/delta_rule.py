"""The memory's write options beyond the paper's: key features, the exact delta rule over a
segment (chunked "UT" form), and the per-segment decay (docs/infini_attention.md).

Shapes: `b` batch, `k` kv heads, `n` tokens in the segment, `d` head_dim. Everything float32.
"""

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
    import math

    if not 0.0 < alpha < 1.0:
        raise ValueError(f"a decay of {alpha!r} is not in (0, 1)")
    return math.log(math.expm1(-math.log(alpha)))


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
    unit lower-triangular solve (the WY / UT form of DeltaNet):
      (I + StrictLower(diag(w/d) K Kᵀ)) U = diag(w) (V − diag(1/d) K M₀),   M_c = M₀ + Kᵀ U,
    and chunks follow one another in a `lax.scan`.

    Args:
      sk: keys' features `[b, k, n, d]` float32. v: values `[b, k, n, d]`.
      m: `[b, k, d, d]` and z: `[b, k, d]`, the state the segment starts from (decayed).
      strength: `[b, k, n]` float32 write strength per token (β times the write mask).
      kind: the feature map ("elu" or "l2"). chunk: tokens per solve (divides n).

    Returns:
      M after the segment, `[b, k, d, d]` float32.
    """
    b, kv, n, d = sk.shape
    if n % chunk:
        raise ValueError(f"delta chunk {chunk} does not divide the segment's {n} tokens")
    v = v.astype(jnp.float32)
    if kind == "elu":
        mass = strength[..., None] * sk
        z_before = z[:, :, None, :] + jnp.cumsum(mass, axis=2) - mass  # z_{t−1}
        den = jnp.sum(sk * z_before, axis=-1)
        inv = jnp.where(den > 0, 1.0 / jnp.where(den > 0, den, 1.0), 0.0)
    else:
        inv = jnp.ones((b, kv, n), jnp.float32)

    def split(x):  # [b, k, n, ...] → [n / c, b, k, c, ...]
        x = x.reshape(b, kv, n // chunk, chunk, *x.shape[3:])
        return jnp.moveaxis(x, 2, 0)

    strict = jnp.tril(jnp.ones((chunk, chunk), bool), -1)
    eye = jnp.eye(chunk, dtype=jnp.float32)

    def step(m, xs):
        kc, vc, wc, ic = xs
        gram = jnp.einsum("bkid,bkjd->bkij", kc, kc)
        lower = jnp.where(strict, (wc * ic)[..., None] * gram, 0.0)
        rhs = wc[..., None] * (vc - ic[..., None] * jnp.einsum("bkid,bkde->bkie", kc, m))
        u = jax.lax.linalg.triangular_solve(
            eye + lower, rhs, left_side=True, lower=True, unit_diagonal=True
        )
        return m + jnp.einsum("bkid,bkie->bkde", kc, u), None

    if n == chunk:  # one solve: no scan around it
        return step(m, (sk, v, strength, inv))[0]
    m, _ = jax.lax.scan(step, m, tuple(split(x) for x in (sk, v, strength, inv)))
    return m
