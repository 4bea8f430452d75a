"""Fused causal attention kernels behind `local_attention` (`model.attention_impl`).

- "xla": the einsum softmax of `ops.local.attend` (any platform; the reference).
- "splash": Pallas TPU splash attention (causal mask + segment ids), one MQA kernel per kv
  head (grouped-query attention without repeating K and V).
- "pallas_gpu": the Pallas GPU (Triton) flash attention `mha` (causal + segment ids); K and V
  are repeated to the query heads.
- "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")`, bf16/f16 only. It has no
  segment-ids argument: a window with packed documents or padding goes through its explicit
  mask, reported to be slow; `auto` never picks it.
- "auto": splash on TPU, pallas_gpu on GPU, xla elsewhere, or xla when the window does not
  split into the kernels' 128-token blocks; `resolve` says what it picked and why.

A padding mask is folded into the segment ids (padded positions get their own id), so every
kernel sees one `[batch, seq]` id array. Where the hardware is absent (tests on CPU), splash and
pallas_gpu run in Pallas interpret mode and cudnn's call runs its XLA implementation: the same
code around the kernel, checked against "xla" for outputs and gradients.

Pallas calls are not partitioned by XLA, so under a mesh of several devices (set with
`jax.set_mesh`, as training and evaluation do) the kernel runs in `jax.shard_map`: batch over
data × fsdp, heads over tensor.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

IMPLS = ("auto", "xla", "cudnn", "splash", "pallas_gpu")
BLOCK = 128  # the kernels' block size along the sequence (a multiple of TPU lanes)
_PLATFORM = {"splash": "tpu", "pallas_gpu": "gpu", "cudnn": "gpu"}
WINDOW_MULTIPLE = {"splash": BLOCK, "pallas_gpu": 16}  # what each kernel's blocks need


def check_window(impl: str, window: int) -> str:
    """ "" if kernel `impl` can run windows of `window` tokens, else why not (one line)."""
    multiple = WINDOW_MULTIPLE.get(impl, 1)
    if window % multiple:
        return f"the {impl} kernel needs windows that are multiples of {multiple} tokens"
    return ""


def resolve(impl: str, window: int, platform: str | None = None) -> tuple[str, str]:
    """`(backend, why)` for `model.attention_impl = impl` on `platform` (default: JAX's) with
    attention windows of `window` tokens."""
    platform = platform or jax.default_backend()
    if impl != "auto":
        return impl, "chosen"
    if window % BLOCK:
        return "xla", f"auto: window {window} is not a multiple of {BLOCK}"
    pick = {"tpu": "splash", "gpu": "pallas_gpu"}.get(platform, "xla")
    return pick, f"auto on {platform}"


def may_fuse(impl: str, platform: str | None = None) -> bool:
    """Whether `impl` runs a fused kernel for some window on `platform`."""
    return resolve(impl, BLOCK, platform)[0] != "xla"


def _interpret(backend: str) -> bool:
    return jax.default_backend() != _PLATFORM[backend]


def fused_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, ids: jax.Array, backend: str
) -> jax.Array:
    """Causal attention inside the window, documents kept apart by `ids`.

    Args:
      q: `[batch, seq, heads, head_dim]` after RoPE; k, v: `[batch, seq, kv_heads, head_dim]`.
      ids: `[batch, seq]` int32 document ids (a query attends to keys of its own id).
      backend: "splash", "pallas_gpu" or "cudnn".

    Returns:
      `[batch, seq, heads, head_dim]` in `q.dtype`, scaled by `1/sqrt(head_dim)`.
    """
    fn = {"splash": _splash, "pallas_gpu": _pallas_gpu, "cudnn": _cudnn}[backend]
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return fn(q, k, v, ids)
    batch = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names) or None
    tensor = "tensor" if "tensor" in mesh.axis_names else None
    if tensor and k.shape[2] % mesh.shape[tensor]:
        tensor = None  # kv heads do not split evenly: heads stay whole on every device
    heads = P(batch, None, tensor, None)
    # check_vma=False: Pallas outputs carry no varying-axes annotation.
    return jax.shard_map(
        fn,
        mesh=mesh,
        in_specs=(heads, heads, heads, P(batch, None)),
        out_specs=heads,
        check_vma=False,
    )(q, k, v, ids)


def _block_sizes(t: int):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk

    b = min(BLOCK, t)
    return sk.BlockSizes(
        block_q=b,
        block_kv=b,
        block_kv_compute=b,
        block_q_dkv=b,
        block_kv_dkv=b,
        block_kv_dkv_compute=b,
        block_q_dq=b,
        block_kv_dq=b,
    )


def _splash(q, k, v, ids):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    b, t, h, d = q.shape
    kv = k.shape[2]
    group = h // kv
    mask = sm.MultiHeadMask([sm.CausalMask((t, t)) for _ in range(group)])
    kernel = sk.make_splash_mqa_single_device(
        mask, block_sizes=_block_sizes(t), interpret=_interpret("splash")
    )
    # [b, kv, group, t, d] queries, pre-scaled (the kernel does not scale); [b, kv, t, d] K, V.
    qs = jnp.moveaxis(q.reshape(b, t, kv, group, d), 1, 3) * (1.0 / np.sqrt(d)).astype(q.dtype)
    ks, vs = jnp.moveaxis(k, 1, 2), jnp.moveaxis(v, 1, 2)

    def one(qh, kh, vh, i):
        return kernel(qh, kh, vh, segment_ids=sk.SegmentIds(q=i, kv=i))

    out = jax.vmap(jax.vmap(one, (0, 0, 0, None)))(qs, ks, vs, ids)  # [b, kv, group, t, d]
    return jnp.moveaxis(out, 3, 1).reshape(b, t, h, d).astype(q.dtype)


def _pallas_gpu(q, k, v, ids):
    from jax.experimental.pallas.ops.gpu import attention

    b, t, h, d = q.shape
    group = h // k.shape[2]
    k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
    bq, bb = min(BLOCK, t), min(32, t)  # forward blocks; backward (dq, dkv) blocks
    sizes = attention.BlockSizes(
        block_q=bq, block_k=bq, block_q_dkv=bb, block_kv_dkv=bb, block_q_dq=bb, block_kv_dq=bb
    )
    out = attention.mha(
        q,
        k,
        v,
        ids,
        sm_scale=1.0 / np.sqrt(d),
        causal=True,
        block_sizes=sizes,
        interpret=_interpret("pallas_gpu"),
    )
    return out.astype(q.dtype)


def _cudnn(q, k, v, ids):
    d = q.shape[-1]
    same_doc = ids[:, None, :, None] == ids[:, None, None, :]  # [b, 1, t, t]
    implementation = "xla" if _interpret("cudnn") else "cudnn"
    out = jax.nn.dot_product_attention(
        q,
        k,
        v,
        mask=same_doc,
        scale=1.0 / np.sqrt(d),
        is_causal=True,
        implementation=implementation,
    )
    return out.astype(q.dtype)
