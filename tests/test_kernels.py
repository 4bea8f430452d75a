"""Every attention kernel equals the "xla" path, outputs and gradients: splash and pallas_gpu
in Pallas interpret mode, cudnn's call through its XLA implementation (no TPU or GPU here);
packed documents, padding and grouped-query heads; sharded over an 8-device mesh; and the whole
Infini-attention op and a training loss with a kernel inside."""

import dataclasses
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infini_jax import model, ops
from infini_jax.config import validate
from infini_jax.errors import ConfigError
from infini_jax.ops import kernels
from tests.conftest import ROOT, small_model

B, T, H, KV, D = 2, 256, 4, 2, 32


def _inputs(dtype=jnp.float32):
    kq, kk, kv_ = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(kq, (B, T, H, D), dtype)
    k = jax.random.normal(kk, (B, T, KV, D), dtype)
    v = jax.random.normal(kv_, (B, T, KV, D), dtype)
    ids = jnp.asarray([[0] * 100 + [1] * 156, [0] * 256], jnp.int32)  # row 0 packs 2 documents
    mask = jnp.asarray([[True] * 256, [True] * 200 + [False] * 56])  # row 1 padded
    return q, k, v, ids, mask


@pytest.mark.slow
@pytest.mark.parametrize(
    "impl, blocks",
    [
        ("splash", kernels.SPLASH_BLOCKS),  # fitted to the 256-token window: one block
        ("splash", (128, 256, 128)),  # two query blocks, kv in two compute steps
        ("pallas_gpu", None),
        ("cudnn", None),
    ],
)
def test_kernel_equals_xla_outputs_and_gradients(impl, blocks):
    q, k, v, ids, mask = _inputs()
    weights = jax.random.normal(jax.random.key(1), (B, T, H, D))
    blocks = blocks or kernels.SPLASH_BLOCKS

    def loss(q, k, v, impl):
        out = ops.local_attention(q, k, v, mask=mask, segment_ids=ids, impl=impl, blocks=blocks)
        return jnp.sum(out * weights), out

    (_, want), want_grads = jax.value_and_grad(loss, (0, 1, 2), has_aux=True)(q, k, v, "xla")
    (_, got), got_grads = jax.value_and_grad(loss, (0, 1, 2), has_aux=True)(q, k, v, impl)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, atol=5e-5, rtol=1e-4)
    assert float(jnp.abs(got[1, 200:]).max()) == 0.0  # padded queries output zeros


def test_infini_op_with_a_kernel_equals_xla():
    q, k, v, ids, mask = _inputs()
    balance = jnp.linspace(-1.0, 1.0, H)
    kw = dict(segment_len=128, mask=mask, segment_ids=ids)
    want, want_memory = ops.infini_attention(q, k, v, balance, **kw)
    got, got_memory = ops.infini_attention(q, k, v, balance, attention_impl="splash", **kw)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(got_memory.m, want_memory.m, atol=1e-5, rtol=1e-5)


def test_auto_resolution():
    assert kernels.resolve("auto", 2048, "tpu") == ("splash", "auto on tpu")
    assert kernels.resolve("auto", 2048, "gpu") == ("pallas_gpu", "auto on gpu")
    assert kernels.resolve("auto", 2048, "cpu") == ("xla", "auto on cpu")
    assert kernels.resolve("auto", 64, "tpu")[0] == "xla"  # not a multiple of 128
    assert kernels.resolve("cudnn", 64, "cpu") == ("cudnn", "chosen")


def test_a_window_the_kernel_cannot_block_is_one_config_line(tiny_config):
    tiny_config.model.attention_impl = "splash"  # tiny.py's segments are 64 tokens
    with pytest.raises(ConfigError, match=r"attention_impl='splash': the splash kernel needs"):
        validate(tiny_config)
    tiny_config.model.attention_impl = "cudnn"  # float32 model
    with pytest.raises(ConfigError, match=r"needs model.dtype='bfloat16'"):
        validate(tiny_config)


@pytest.mark.slow
def test_model_loss_with_a_kernel_equals_xla():
    cfg = small_model(segment_len=128, d_model=64, num_heads=4, num_kv_heads=2, mlp_dim=64)
    params = model.init_params(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 256), 0, cfg.vocab_size)

    def loss(impl):
        c = dataclasses.replace(cfg, attention_impl=impl)
        return jax.value_and_grad(lambda p: model.sequence_loss(c, p, tokens, tokens)[0].sum())(
            params
        )

    (want, want_g), (got, got_g) = loss("xla"), loss("pallas_gpu")
    np.testing.assert_allclose(got, want, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-3), got_g, want_g)


SHARDED = """
import jax, jax.numpy as jnp, numpy as np
from infini_jax import ops
from tests.test_kernels import _inputs
q, k, v, ids, mask = _inputs()
q, k, v = (jnp.concatenate([x, x[::-1]]) for x in (q, k, v))  # batch 4: splits over data x fsdp
ids, mask = jnp.concatenate([ids, ids]), jnp.concatenate([mask, mask])
mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                     axis_types=(jax.sharding.AxisType.Auto,) * 3)
f = lambda impl: jax.jit(lambda *a: ops.local_attention(*a[:3], mask=a[4], segment_ids=a[3],
                                                         impl=impl))
want = f("xla")(q, k, v, ids, mask)
with jax.set_mesh(mesh):
    got = f("splash")(q, k, v, ids, mask)
    text = jax.jit(lambda *a: ops.local_attention(*a[:3], mask=a[4], segment_ids=a[3],
                   impl="splash")).lower(q, k, v, ids, mask).as_text()
np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
assert "shard_map" in text or "sdy.manual_computation" in text or "shmap" in text
print("ok")
"""


@pytest.mark.slow
def test_kernel_under_an_eight_device_mesh_runs_in_shard_map():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    r = subprocess.run(
        [sys.executable, "-c", SHARDED],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
