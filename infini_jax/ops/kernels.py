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

The platform is the target's, not the host's: the devices of the mesh set with `jax.set_mesh`
around the trace (`target_platform`). A train step lowered on a CPU host for a compile-only TPU
mesh (`infini_jax.plan --topology`) therefore gets the real Mosaic splash kernel, not its
interpreter; without a mesh it is JAX's default backend.

A padding mask is folded into the segment ids (padded positions get their own id), so every
kernel sees one `[batch, seq]` id array. Where the target is not the kernel's platform (tests
on CPU), splash and pallas_gpu run in Pallas interpret mode and cudnn's call runs its XLA
implementation: the same code around the kernel, checked against "xla" for outputs and
gradients.

Pallas calls are not partitioned by XLA, so under a mesh of several devices (set with
`jax.set_mesh`, as training and evaluation do) the kernel runs in `jax.shard_map`: batch over
data × fsdp, heads over tensor.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

IMPLS = ("auto", "xla", "cudnn", "splash", "pallas_gpu")
BLOCK = 128  # the kernels' block size along the sequence (a multiple of TPU lanes)
# Splash blocks (q, kv, kv_compute) before fitting to the window: MaxText's 512 defaults.
SPLASH_BLOCKS = (512, 512, 512)
_PLATFORM = {"splash": "tpu", "pallas_gpu": "gpu", "cudnn": "gpu"}
WINDOW_MULTIPLE = {"splash": BLOCK, "pallas_gpu": 16}  # what each kernel's blocks need


def check_window(impl: str, window: int) -> str:
    """ "" if kernel `impl` can run windows of `window` tokens, else why not (one line)."""
    multiple = WINDOW_MULTIPLE.get(impl, 1)
    if window % multiple:
        return f"the {impl} kernel needs windows that are multiples of {multiple} tokens"
    return ""


def target_platform() -> str:
    """The platform the code being traced is compiled for: that of the mesh set with
    `jax.set_mesh` (compile-only TPU devices included), else JAX's default backend."""
    device = getattr(jax.sharding.get_abstract_mesh(), "abstract_device", None)
    return device.platform if device is not None else jax.default_backend()


def mesh_platform(mesh: jax.sharding.Mesh | None) -> str:
    """The platform of a concrete mesh's devices (JAX's default backend for None)."""
    return jax.default_backend() if mesh is None else mesh.devices.flat[0].platform


def resolve(impl: str, window: int, platform: str | None = None) -> tuple[str, str]:
    """`(backend, why)` for `model.attention_impl = impl` on `platform` (default:
    `target_platform()`) with attention windows of `window` tokens."""
    platform = platform or target_platform()
    if impl != "auto":
        return impl, "chosen"
    if window % BLOCK:
        return "xla", f"auto: window {window} is not a multiple of {BLOCK}"
    pick = {"tpu": "splash", "gpu": "pallas_gpu"}.get(platform, "xla")
    return pick, f"auto on {platform}"


def _interpret(backend: str) -> bool:
    """Pallas interpret mode (or cudnn's XLA path) where the target lacks the hardware."""
    return target_platform() != _PLATFORM[backend]


def fit_block(block: int, window: int) -> int:
    """The largest multiple of `BLOCK` that is at most `block` and divides `window` (a
    multiple of `BLOCK`): a configured splash block fitted to the window."""
    fitted = max(BLOCK, min(block, window) // BLOCK * BLOCK)
    while window % fitted:
        fitted -= BLOCK
    return fitted


def splash_block_sizes(blocks: tuple[int, int, int], window: int) -> tuple[int, int, int]:
    """`(q, kv, kv_compute)` blocks of `model.splash_block_*` fitted to the window: each
    divides it, and kv_compute divides kv."""
    q, kv = fit_block(blocks[0], window), fit_block(blocks[1], window)
    return q, kv, fit_block(blocks[2], kv)


def fused_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    ids: jax.Array,
    backend: str,
    blocks: tuple[int, int, int] = SPLASH_BLOCKS,
) -> jax.Array:
    """Causal attention inside the window, documents kept apart by `ids`.

    Args:
      q: `[batch, seq, heads, head_dim]` after RoPE; k, v: `[batch, seq, kv_heads, head_dim]`.
      ids: `[batch, seq]` int32 document ids (a query attends to keys of its own id).
      backend: "splash", "pallas_gpu" or "cudnn".
      blocks: splash's (q, kv, kv_compute) block sizes before `splash_block_sizes` fits them.

    Returns:
      `[batch, seq, heads, head_dim]` in `q.dtype`, scaled by `1/sqrt(head_dim)`.
    """
    fn = {
        "splash": functools.partial(_splash, blocks=blocks),
        "pallas_gpu": _pallas_gpu,
        "cudnn": _cudnn,
    }[backend]
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


def _block_sizes(blocks: tuple[int, int, int], t: int):
    """Splash's forward and backward blocks: q for queries, kv for keys, kv_compute for the
    keys' inner loop, the same in the forward, dkv and dq passes."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk

    q, kv, kvc = splash_block_sizes(blocks, t)
    return sk.BlockSizes(
        block_q=q,
        block_kv=kv,
        block_kv_compute=kvc,
        block_q_dkv=q,
        block_kv_dkv=kv,
        block_kv_dkv_compute=kvc,
        block_q_dq=q,
        block_kv_dq=kv,
    )


def _splash(q, k, v, ids, blocks):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    b, t, h, d = q.shape
    kv = k.shape[2]
    group = h // kv
    mask = sm.MultiHeadMask([sm.CausalMask((t, t)) for _ in range(group)])
    kernel = sk.make_splash_mqa_single_device(
        mask, block_sizes=_block_sizes(blocks, t), interpret=_interpret("splash")
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
