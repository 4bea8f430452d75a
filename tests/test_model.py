"""The model: scan vs step loop, limits against the baselines, gradients through memory."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infini_jax import model
from tests.conftest import small_model

# Compiled once per config (run eagerly, each call dispatches op by op: seconds apiece).
sequence_logits = jax.jit(model.sequence_logits, static_argnums=0)
sequence_loss = jax.jit(model.sequence_loss, static_argnums=0)


def tokens_for(cfg, seed=0, batch=2, segments=4, low=0, high=None):
    rng = np.random.default_rng(seed)
    return jnp.asarray(
        rng.integers(low, high or cfg.vocab_size, size=(batch, segments * cfg.segment_len)),
        jnp.int32,
    )


def packed_extras(cfg, batch=2, segments=4):
    t = segments * cfg.segment_len
    ids = np.ones((batch, t), np.int32)
    ids[0, t // 3 :] = 2  # a document boundary inside a segment
    ids[1, -5:] = 0  # trailing padding
    return jnp.asarray(ids > 0), jnp.asarray(ids)


def segment_loop(cfg, params, tokens, mask, ids):
    """`segment_step` in a Python loop over the segments: (logits, memory after the last)."""
    memory = model.init_memory(cfg, tokens.shape[0])
    n, looped = cfg.segment_len, []
    for lo in range(0, tokens.shape[1], n):
        sl = slice(lo, lo + n)
        logits, memory = model.segment_step(
            cfg, params, tokens[:, sl], memory, mask[:, sl], ids[:, sl]
        )
        looped.append(logits)
    return jnp.concatenate(looped, 1), memory


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["infini", "local"])
def test_step_loop_equals_scan(attention):
    cfg = small_model(attention=attention)
    params = model.init_params(cfg, jax.random.key(0))
    tokens = tokens_for(cfg)
    mask, ids = packed_extras(cfg)
    scanned, mem_scan = sequence_logits(cfg, params, tokens, mask=mask, segment_ids=ids)
    looped, memory = segment_loop(cfg, params, tokens, mask, ids)
    np.testing.assert_allclose(looped, scanned, atol=1e-5, rtol=1e-5)
    if attention == "infini":
        for a, b in zip(memory, mem_scan, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
        assert memory.m.shape == (cfg.num_layers, 2, cfg.num_kv_heads, 8, 8)
        assert memory.m.dtype == jnp.float32


def test_all_local_gate_equals_local_model():
    cfg = small_model()
    params = model.init_params(cfg, jax.random.key(1))
    local_cfg = dataclasses.replace(cfg, attention="local")
    local_params = jax.tree.map(lambda x: x, params)
    del local_params["layers"]["attention"]["balance"]
    params["layers"]["attention"]["balance"] = jnp.full_like(
        params["layers"]["attention"]["balance"], -2.5
    )
    tokens = tokens_for(cfg)
    infini, _ = sequence_logits(cfg, params, tokens)
    local, _ = sequence_logits(local_cfg, local_params, tokens)
    np.testing.assert_allclose(infini, local, atol=1e-5, rtol=1e-5)
    params["layers"]["attention"]["balance"] += 0.5  # g = 0.1: memory now matters
    assert not np.allclose(sequence_logits(cfg, params, tokens)[0], local, atol=1e-3)


def test_one_segment_with_local_empty_memory_equals_full():
    cfg = small_model(empty_memory="local", segment_len=32)
    params = model.init_params(cfg, jax.random.key(2))
    full_cfg = dataclasses.replace(cfg, attention="full")
    full_params = jax.tree.map(lambda x: x, params)
    del full_params["layers"]["attention"]["balance"]
    tokens = tokens_for(cfg, segments=1)
    infini, _ = sequence_logits(cfg, params, tokens)
    full, _ = sequence_logits(full_cfg, full_params, tokens)
    np.testing.assert_allclose(infini, full, atol=1e-5, rtol=1e-5)


def _weighted_loss(cfg, params, tokens, weights):
    nll, count, _ = sequence_loss(cfg, params, tokens, jnp.roll(tokens, -1, 1), weights=weights)
    return nll.sum() / count.sum()


_weighted_grads = jax.jit(jax.grad(_weighted_loss, argnums=1), static_argnums=0)


def _grads(cfg, params, tokens, j=-1):
    """Gradient of the mean next-token loss of segment j only (default: the last); one
    compile per config, the segment chosen by traced weights."""
    n = cfg.segment_len
    j = j % (tokens.shape[1] // n)
    weights = jnp.zeros(tokens.shape).at[:, j * n : (j + 1) * n].set(1.0)
    return _weighted_grads(cfg, params, tokens, weights)


def _first_segment_case(cfg):
    half = cfg.vocab_size // 2
    first = tokens_for(cfg, seed=4, segments=1, high=half)  # ids only used in segment 0
    rest = tokens_for(cfg, seed=5, segments=3, low=half)
    return jnp.concatenate([first, rest], axis=1), np.unique(np.asarray(first))


def test_gradient_reaches_first_segment_through_memory():
    cfg = small_model()
    params = model.init_params(cfg, jax.random.key(3))
    tokens, first_rows = _first_segment_case(cfg)
    full = _grads(cfg, params, tokens)["embed"]["embedding"]
    assert np.abs(np.asarray(full)[first_rows]).min() > 0  # every first-segment token is reached

    local = dataclasses.replace(cfg, attention="local")
    local_params = jax.tree.map(lambda x: x, params)
    del local_params["layers"]["attention"]["balance"]
    g_local = _grads(local, local_params, tokens)["embed"]["embedding"]
    np.testing.assert_array_equal(np.asarray(g_local)[first_rows], 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("j", [1, 2, 3])
def test_truncation_cuts_exactly_at_every_kth_boundary(j):
    """Loss on segment j, cut every k segments: segment 0 is reached iff no cut in 1..j,
    i.e. iff k > j; when it is reached the gradient equals full backprop's."""
    cfg = small_model()
    params = model.init_params(cfg, jax.random.key(3))
    tokens, first_rows = _first_segment_case(cfg)
    full = np.asarray(_grads(cfg, params, tokens, j)["embed"]["embedding"])
    for k in (1, 2, 3, 4):
        got = np.asarray(
            _grads(dataclasses.replace(cfg, bptt_segments=k), params, tokens, j)["embed"][
                "embedding"
            ]
        )
        if k <= j:
            np.testing.assert_array_equal(got[first_rows], 0.0)
        else:
            np.testing.assert_allclose(got, full, atol=1e-7)


@pytest.mark.slow
def test_truncation_equals_a_constant_memory_for_parameters():
    """With a cut before the last segment, its parameter gradient equals the gradient of one
    segment step whose incoming memory is a constant; with full BPTT it does not."""
    cfg = small_model(bptt_segments=3)
    params = model.init_params(cfg, jax.random.key(6))
    tokens = tokens_for(cfg, seed=7)
    n = cfg.segment_len
    _, memory = sequence_logits(cfg, params, tokens[:, : 3 * n])

    def step_loss(params):
        logits, _ = model.segment_step(cfg, params, tokens[:, 3 * n :], memory)
        targets = jnp.roll(tokens, -1, 1)[:, 3 * n :]
        return jnp.mean(
            jax.nn.logsumexp(logits, -1)
            - jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
        )

    expected = jax.grad(step_loss)(params)
    cut = _grads(cfg, params, tokens)
    full = _grads(dataclasses.replace(cfg, bptt_segments=0), params, tokens)
    wk = ("layers", "attention", "key", "kernel")

    def get(tree):
        for key in wk:
            tree = tree[key]
        return np.asarray(tree)

    np.testing.assert_allclose(get(cut), get(expected), atol=1e-6, rtol=1e-5)
    assert not np.allclose(get(full), get(expected), atol=1e-6, rtol=1e-4)


def test_loss_equals_cross_entropy_of_logits():
    cfg = small_model()
    params = model.init_params(cfg, jax.random.key(8))
    tokens = tokens_for(cfg, seed=9)
    mask, ids = packed_extras(cfg)
    targets = jnp.roll(tokens, -1, 1)
    nll, count, _ = sequence_loss(cfg, params, tokens, targets, mask=mask, segment_ids=ids)
    assert nll.shape == (4,)
    logits, _ = sequence_logits(cfg, params, tokens, mask=mask, segment_ids=ids)
    lg = np.asarray(logits, np.float64)
    logp = (
        lg
        - np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - lg.max(-1, keepdims=True)
    )
    ce = -np.take_along_axis(logp, np.asarray(targets)[..., None], -1)[..., 0]
    m = np.asarray(mask)
    np.testing.assert_allclose(nll.sum() / count.sum(), (ce * m).sum() / m.sum(), rtol=1e-5)


def test_model_is_causal_through_memory():
    cfg = small_model()
    params = model.init_params(cfg, jax.random.key(10))
    tokens = tokens_for(cfg, seed=11, batch=1)
    base, _ = sequence_logits(cfg, params, tokens)
    for t in (3, 8, 20):
        changed, _ = sequence_logits(cfg, params, tokens.at[0, t].add(1))
        np.testing.assert_array_equal(changed[:, :t], base[:, :t])
        assert not np.allclose(changed[:, 24:], base[:, 24:])  # reaches the last segment


def bf16_against_f32(cfg, params, segments: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Logits of `segments` segments in bfloat16 and in float32, `(bf16, f32)`, after checking
    that the bf16 run is finite and keeps its memory in float32."""
    tokens = tokens_for(cfg, seed=13, batch=1, segments=segments)
    ref, _ = sequence_logits(cfg, params, tokens)
    out, mem = sequence_logits(dataclasses.replace(cfg, dtype="bfloat16"), params, tokens)
    assert mem.m.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(out))) and np.all(np.isfinite(np.asarray(mem.m)))
    return np.asarray(out), np.asarray(ref)


@pytest.mark.slow
def test_bf16_model_over_64_segments_is_finite_and_close_to_f32():
    cfg = small_model(segment_len=4)
    out, ref = bf16_against_f32(cfg, model.init_params(cfg, jax.random.key(12)))
    err = np.abs(out - ref).mean()
    assert err < 0.05 * np.abs(ref).mean(), err
    p, p_ref = jax.nn.softmax(out), jax.nn.softmax(ref)
    assert np.abs(p - p_ref).sum(-1).max() < 0.05  # next-token distributions agree


@pytest.mark.slow
def test_remat_policies_give_identical_gradients():
    cfg = small_model()
    params = model.init_params(cfg, jax.random.key(14))
    tokens = tokens_for(cfg, seed=15)
    ref = _grads(dataclasses.replace(cfg, remat_policy="none"), params, tokens)
    cases = (
        ("nothing_saveable", True, "nothing_saveable"),
        ("dots_saveable", False, "nothing_saveable"),
        ("attention_out", True, "attention_out"),
        ("nothing_saveable", True, "dots_saveable"),
    )
    for policy, layers, layer_policy in cases:
        c = dataclasses.replace(
            cfg, remat_policy=policy, remat_layers=layers, layer_remat_policy=layer_policy
        )
        chex.assert_trees_all_close(_grads(c, params, tokens), ref, atol=1e-6, rtol=1e-5)
