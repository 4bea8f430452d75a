"""The op against the float64 reference, and its properties (causality, splitting, limits)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infini_jax import ops
from tests.reference import infini_reference

ATOL = RTOL = 1e-5


def make_inputs(seed, b=2, t=12, h=4, kv=2, d=8, balance_scale=2.0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(b, t, h, d)).astype(np.float32)
    k = rng.normal(size=(b, t, kv, d)).astype(np.float32)
    v = rng.normal(size=(b, t, kv, d)).astype(np.float32)
    balance = (balance_scale * rng.normal(size=(h,))).astype(np.float32)
    return q, k, v, balance


def run_both(q, k, v, balance, **kw):
    out, mem = ops.infini_attention(*(jnp.asarray(x) for x in (q, k, v, balance)), **kw)
    ref_kw = dict(kw)
    if "rope" in ref_kw:
        ref_kw["rope_theta"] = ref_kw.pop("rope").theta
    if kw.get("memory") is not None:
        ref_kw["memory"] = tuple(np.asarray(x) for x in kw["memory"])
    ref_out, ref_mem = infini_reference(q, k, v, balance, **ref_kw)
    return (out, mem), (ref_out, ref_mem)


def assert_matches(got, ref):
    (out, mem), (ref_out, ref_mem) = got, ref
    np.testing.assert_allclose(np.asarray(out), ref_out, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(np.asarray(mem.m), ref_mem[0], atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(np.asarray(mem.z), ref_mem[1], atol=ATOL, rtol=RTOL)
    np.testing.assert_array_equal(np.asarray(mem.doc), ref_mem[2])


CASES = list(
    itertools.product(
        ["linear", "delta"], ["sigmoid", "hard_sigmoid"], [4, 2, 1], ["gate", "local"]
    )
)


@pytest.mark.parametrize("update,gate,kv,empty", CASES)
def test_matches_reference(update, gate, kv, empty):
    q, k, v, balance = make_inputs(100 + CASES.index((update, gate, kv, empty)), kv=kv)
    kw = dict(update=update, gate=gate, empty_memory=empty, rope=ops.Rope(100.0))
    got, ref = run_both(q, k, v, balance, segment_len=4, **kw)
    assert_matches(got, ref)


@pytest.mark.parametrize("update", ["linear", "delta"])
def test_padding_matches_reference(update):
    q, k, v, balance = make_inputs(1, b=3, t=12)
    mask = np.ones((3, 12), bool)
    mask[0, 9:] = False  # ragged end inside the last segment
    mask[1, 4:8] = False  # a whole padded segment in the middle
    mask[2, [1, 6, 11]] = False  # scattered holes
    got, ref = run_both(q, k, v, balance, segment_len=4, update=update, mask=mask)
    assert_matches(got, ref)
    out = np.asarray(got[0])
    assert np.all(out[~mask] == 0.0)


@pytest.mark.parametrize(
    "update,empty", list(itertools.product(["linear", "delta"], ["gate", "local"]))
)
def test_packed_documents_match_reference(update, empty):
    q, k, v, balance = make_inputs(2, b=3, t=16)
    ids = np.array(
        [
            [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2],  # doc 2 starts mid-segment, spans 3
            [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4, 4, 4, 4, 4],  # boundaries at and inside segments
            [5, 5, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 0, 0, 0, 0],  # then padding (id 0, mask False)
        ]
    )
    mask = ids > 0
    kw = dict(update=update, mask=mask, segment_ids=ids, empty_memory=empty)
    got, ref = run_both(q, k, v, balance, segment_len=4, **kw)
    assert_matches(got, ref)


def test_packed_documents_never_exchange_information():
    q, k, v, balance = make_inputs(3, b=1, t=16)
    ids = np.array([[1] * 6 + [2] * 10])

    def out_of(q, k, v):
        return np.asarray(ops.infini_attention(q, k, v, balance, segment_len=4, segment_ids=ids)[0])

    base = out_of(q, k, v)
    q2, k2, v2 = q.copy(), k.copy(), v.copy()
    for x in (q2, k2, v2):
        x[:, :6] += 3.0  # change everything in document 1
    changed = out_of(q2, k2, v2)
    np.testing.assert_array_equal(changed[:, 6:], base[:, 6:])
    assert not np.allclose(changed[:, :6], base[:, :6])


@pytest.mark.parametrize("update", ["linear", "delta"])
def test_passed_in_memory_matches_reference(update):
    q, k, v, balance = make_inputs(4)
    rng = np.random.default_rng(5)
    memory = ops.Memory(
        m=jnp.asarray(rng.normal(size=(2, 2, 8, 8)), jnp.float32),
        z=jnp.asarray(rng.uniform(1.0, 3.0, size=(2, 2, 8)), jnp.float32),
        doc=jnp.asarray([0, 3], jnp.int32),  # row 1's memory belongs to another document
    )
    got, ref = run_both(q, k, v, balance, segment_len=6, update=update, memory=memory)
    assert_matches(got, ref)


@pytest.mark.parametrize("update", ["linear", "delta"])
def test_two_calls_equal_one(update):
    q, k, v, balance = (jnp.asarray(x) for x in make_inputs(6, t=24))
    ids = jnp.asarray(np.repeat([[1] * 10 + [2] * 14], 2, axis=0))
    kw = dict(segment_len=4, update=update)
    whole, mem = ops.infini_attention(q, k, v, balance, segment_ids=ids, **kw)
    a, mem_a = ops.infini_attention(
        q[:, :8], k[:, :8], v[:, :8], balance, segment_ids=ids[:, :8], **kw
    )
    b, mem_b = ops.infini_attention(
        q[:, 8:], k[:, 8:], v[:, 8:], balance, memory=mem_a, segment_ids=ids[:, 8:], **kw
    )
    np.testing.assert_allclose(np.concatenate([a, b], 1), whole, atol=1e-6, rtol=1e-6)
    for x, y in zip(mem_b, mem, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("update", ["linear", "delta"])
def test_causal_through_memory(update):
    q, k, v, balance = make_inputs(7, b=1, t=16)
    base = np.asarray(ops.infini_attention(q, k, v, balance, segment_len=4, update=update)[0])
    for t in (0, 3, 5, 9, 15):
        q2, k2, v2 = q.copy(), k.copy(), v.copy()
        for x in (q2, k2, v2):
            x[:, t] += 1.0
        out = np.asarray(ops.infini_attention(q2, k2, v2, balance, segment_len=4, update=update)[0])
        np.testing.assert_array_equal(out[:, :t], base[:, :t])
        assert not np.allclose(out[:, t:], base[:, t:])  # the perturbation is seen
        if t < 12:  # ... and reaches later segments only through memory
            assert not np.allclose(out[:, 12:], base[:, 12:])


@pytest.mark.parametrize("empty", ["gate", "local"])
def test_empty_memory_has_no_nan_in_values_or_gradients(empty):
    q, k, v, balance = (jnp.asarray(x) for x in make_inputs(8, t=8))
    mask = jnp.asarray(np.array([[True] * 8, [False] * 4 + [True] * 4]))

    def loss(q, k, v, balance):
        out, mem = ops.infini_attention(
            q, k, v, balance, segment_len=4, mask=mask, empty_memory=empty
        )
        return jnp.sum(out**2) + jnp.sum(mem.m) + jnp.sum(mem.z)

    value, grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(q, k, v, balance)
    assert np.isfinite(value)
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))
    assert np.any(np.asarray(grads[3]) != 0)  # the gate learns from the mixed segment


def test_gate_all_local_equals_local_attention():
    q, k, v, _ = make_inputs(9, t=12)
    balance = np.full((4,), -2.5, np.float32)  # hard_sigmoid(-2.5) = 0
    out, _ = ops.infini_attention(q, k, v, balance, segment_len=4, gate="hard_sigmoid")
    for s in range(3):
        sl = slice(4 * s, 4 * s + 4)
        local = ops.local_attention(q[:, sl], k[:, sl], v[:, sl])
        np.testing.assert_allclose(out[:, sl], local, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("b,moves", [(-3.0, False), (3.0, False), (-2.0, True), (2.0, True)])
def test_hard_sigmoid_gate_past_its_clip_gets_no_gradient(b, moves):
    # Why config validation refuses |model.balance_init| >= 2.5 with the hard-sigmoid gate.
    q, k, v, _ = make_inputs(13, t=12)
    balance = np.full((4,), b, np.float32)

    def loss(balance):
        out, _ = ops.infini_attention(q, k, v, balance, segment_len=4, gate="hard_sigmoid")
        return jnp.sum(out**2)

    grad = np.asarray(jax.grad(loss)(balance))
    assert np.all(grad != 0) if moves else np.all(grad == 0)


def test_one_segment_with_local_empty_memory_equals_full():
    q, k, v, balance = make_inputs(10, t=12)
    out, _ = ops.infini_attention(q, k, v, balance, segment_len=12, empty_memory="local")
    full = ops.local_attention(q, k, v)
    np.testing.assert_allclose(out, full, atol=1e-6, rtol=1e-6)


def test_linear_memory_read_is_a_convex_combination_of_values():
    # With the linear rule A_mem = Σ_t w_t v_t with w_t = σ(q)·σ(k_t) / Σ_j σ(q)·σ(k_j) > 0.
    q, k, v, _ = make_inputs(11, b=1, t=16, kv=4)
    balance = np.full((4,), 2.5, np.float32)  # hard_sigmoid(2.5) = 1: memory only
    out, _ = ops.infini_attention(q, k, v, balance, segment_len=8, update="linear")
    later = np.asarray(out[:, 8:])
    lo, hi = v[:, :8].min(axis=1), v[:, :8].max(axis=1)  # [1, kv, d]
    assert np.all(later >= lo[:, None] - 1e-5) and np.all(later <= hi[:, None] + 1e-5)


def test_bf16_over_64_segments_is_finite_and_close_to_f32():
    q, k, v, balance = make_inputs(12, b=1, t=64 * 8, h=4, kv=2, d=16)
    kw = dict(segment_len=8, update="delta")
    ref, ref_mem = ops.infini_attention(q, k, v, balance, **kw)
    out, mem = ops.infini_attention(
        *(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)), balance, **kw
    )
    assert out.dtype == jnp.bfloat16 and mem.m.dtype == jnp.float32
    out = np.asarray(out.astype(jnp.float32))
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(np.asarray(mem.m)))
    err = np.abs(out - np.asarray(ref))
    scale = np.abs(np.asarray(ref)).mean()
    assert err.mean() < 0.02 * scale, (err.mean(), scale)
    np.testing.assert_allclose(mem.z, ref_mem.z, rtol=2e-2)


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(segment_len=5), "not a positive multiple of segment_len=5"),
        (dict(segment_len=4, update="hebb"), "update='hebb'"),
        (dict(segment_len=4, gate="relu"), "gate='relu'"),
        (dict(segment_len=4, empty_memory="zero"), "empty_memory='zero'"),
    ],
)
def test_bad_arguments_raise_one_clear_error(kw, msg):
    q, k, v, balance = make_inputs(13)
    with pytest.raises(ValueError, match=msg.replace("(", r"\(")):
        ops.infini_attention(q, k, v, balance, **kw)


def test_bad_gqa_shapes_raise():
    q, k, v, balance = make_inputs(14, h=4, kv=3)
    with pytest.raises(ValueError, match="heads=4 is not a multiple of kv_heads=3"):
        ops.infini_attention(q, k, v, balance, segment_len=4)


@pytest.mark.slow
def test_query_blocks_give_the_same_attention_and_gradients():
    """Long windows are computed in query blocks: identical outputs and gradients to dense."""
    rng = np.random.default_rng(3)
    b, t, h, kv, d = 2, 32, 4, 2, 8
    q = jnp.asarray(rng.normal(size=(b, t, h, d)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(b, t, kv, d)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(b, t, kv, d)), jnp.float32)
    ids = jnp.asarray(np.repeat([[1, 2, 3, 0]], 8, axis=1).reshape(1, t).repeat(b, 0))
    mask = ids > 0

    def loss(q, k, v, block):
        out = ops.local_attention(q, k, v, mask=mask, segment_ids=ids, query_block=block)
        return jnp.sum(out**2), out

    (_, dense), g_dense = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, 64)
    (_, blocked), g_block = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, 8)
    np.testing.assert_allclose(blocked, dense, rtol=1e-5, atol=1e-6)
    for a, c in zip(g_block, g_dense, strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-5)
    # And the dense result is a real attention: each document attends only to itself.
    k2 = k.at[:, 16:].set(0.0)
    v2 = v.at[:, 16:].set(0.0)
    (_, early), _ = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k2, v2, 8)
    np.testing.assert_allclose(early[:, :16], blocked[:, :16], rtol=1e-5, atol=1e-6)
