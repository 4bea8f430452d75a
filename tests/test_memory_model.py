"""The memory options inside the model: the segment loop, bf16, gradients through the write
gates, truncated backprop, parameter groups, and config checks that need two fields."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infini_jax import model, sections
from infini_jax.config import validate
from infini_jax.errors import ConfigError
from infini_jax.training import optim
from tests.conftest import small_model
from tests.test_model import bf16_against_f32, packed_extras, segment_loop, tokens_for

GATED = dict(memory_update="exact_delta", memory_features="l2", write_strength=True, decay="data")
OPTION_SETS = {
    "gated_delta": GATED,
    "exact_elu_learned_decay": dict(
        memory_update="exact_delta", write_strength=True, decay="learned", delta_chunk=4
    ),
    "linear_data_decay": dict(memory_update="linear", decay="data"),
}


def gated_model(options, seed=0, **extra):
    """A small model with `options`, its zero-initialised decay projection randomised so
    that the decay really depends on the data."""
    cfg = small_model(**options, **extra)
    params = model.init_params(cfg, jax.random.key(seed))
    attention = params["layers"]["attention"]
    if "decay" in attention:
        shape = attention["decay"]["kernel"].shape
        attention["decay"]["kernel"] = 0.5 * jax.random.normal(jax.random.key(seed + 1), shape)
    return cfg, params


@pytest.mark.slow
@pytest.mark.parametrize("name", OPTION_SETS)
def test_segment_loop_equals_scan_with_packing_and_padding(name):
    cfg, params = gated_model(OPTION_SETS[name])
    tokens = tokens_for(cfg)
    mask, ids = packed_extras(cfg)
    scanned, mem_scan = model.sequence_logits(cfg, params, tokens, mask=mask, segment_ids=ids)
    looped, memory = segment_loop(cfg, params, tokens, mask, ids)
    np.testing.assert_allclose(looped, scanned, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(memory.m, mem_scan.m, atol=1e-5, rtol=1e-5)


def _segment_loss_grads(cfg, params, tokens, j):
    n = cfg.segment_len
    weights = jnp.zeros(tokens.shape).at[:, j * n : (j + 1) * n].set(1.0)

    def loss(p):
        nll, count, _ = model.sequence_loss(cfg, p, tokens, tokens, weights=weights)
        return nll.sum() / count.sum()

    return jax.grad(loss)(params)


@pytest.mark.slow
@pytest.mark.parametrize("name", OPTION_SETS)
def test_write_gates_learn_and_truncation_cuts_the_memory_path(name):
    """The loss of the last segment reaches the write gates' parameters and, through the
    memory, the first segment's tokens; cut at every boundary it reaches neither token."""
    cfg, params = gated_model(OPTION_SETS[name], seed=3)
    half = cfg.vocab_size // 2
    first = tokens_for(cfg, seed=4, segments=1, high=half)
    tokens = jnp.concatenate([first, tokens_for(cfg, seed=5, segments=3, low=half)], axis=1)
    rows = np.unique(np.asarray(first))
    grads = _segment_loss_grads(cfg, params, tokens, 3)
    attention = grads["layers"]["attention"]
    for path, g in jax.tree_util.tree_leaves_with_path(attention):
        if any(key in jax.tree_util.keystr(path) for key in ("write_strength", "decay")):
            assert np.abs(np.asarray(g)).max() > 0, path
    assert np.abs(np.asarray(grads["embed"]["embedding"])[rows]).min() > 0
    cut = _segment_loss_grads(dataclasses.replace(cfg, bptt_segments=1), params, tokens, 3)
    np.testing.assert_array_equal(np.asarray(cut["embed"]["embedding"])[rows], 0.0)


@pytest.mark.slow
def test_bf16_gated_model_over_64_segments_is_finite_and_close_to_f32():
    out, ref = bf16_against_f32(*gated_model(GATED, seed=12, segment_len=4))
    p, p_ref = jax.nn.softmax(out), jax.nn.softmax(ref)
    assert np.abs(p - p_ref).sum(-1).max() < 0.05


def test_gates_start_where_the_config_says():
    cfg, params = gated_model(dict(GATED, write_strength_init=0.3, decay_init=0.97))
    attention = params["layers"]["attention"]
    beta = jax.nn.sigmoid(attention["write_strength"]["bias"])
    alpha = jnp.exp(-jax.nn.softplus(attention["decay_bias"]))
    np.testing.assert_allclose(np.asarray(beta), 0.3, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(alpha), 0.97, rtol=1e-6)
    assert attention["decay_bias"].shape == (cfg.num_layers, cfg.num_kv_heads)


def tiny_optimizer():
    from infini_jax.config import load_config
    from tests.conftest import config_path

    return load_config(config_path("tiny.py")).optimizer


def test_gate_biases_take_no_weight_decay_and_projections_do():
    cfg, params = gated_model(GATED)
    groups = optim.param_groups(params, sections.OptimizerConfig.from_config(tiny_optimizer()))
    attention = groups["layers"]["attention"]
    assert attention["decay_bias"] == "no_decay"
    assert attention["write_strength"]["bias"] == "no_decay"
    assert attention["write_strength"]["kernel"] == "decay"
    assert attention["decay"]["kernel"] == "decay"
    assert attention["balance"] == "balance"


def test_exact_delta_chunk_must_divide_the_segment(tiny_config):
    tiny_config.model.memory_update = "exact_delta"
    tiny_config.model.delta_chunk = 48
    with pytest.raises(ConfigError, match="delta_chunk=48 does not divide .*segment_len=64"):
        validate(tiny_config)
    tiny_config.model.delta_chunk = 32
    tiny_config.model.memory_features = "l2"
    validate(tiny_config)


@pytest.mark.slow  # an evaluation task end to end (16 s)
def test_write_gate_means_read_the_gates_the_model_uses():
    """With the gate projections zeroed, β and α are their init values on any text; with a
    data-dependent decay they move with the text and stay in (0, 1)."""
    from infini_jax.eval import tasks

    cfg, params = gated_model(dict(GATED, write_strength_init=0.3, decay_init=0.9))
    docs = [np.asarray(tokens_for(cfg, seed=s, batch=1, segments=3))[0] for s in range(3)]
    attention = params["layers"]["attention"]
    data = tasks.write_gate_means(cfg, params, docs, batch_size=2)
    assert set(data) == {"beta", "alpha"}
    assert data["alpha"].shape == (cfg.num_layers, cfg.num_kv_heads)
    assert np.all((data["alpha"] > 0) & (data["alpha"] < 1))
    assert np.abs(data["alpha"] - 0.9).max() > 1e-3
    attention["write_strength"]["kernel"] = jnp.zeros_like(attention["write_strength"]["kernel"])
    attention["decay"]["kernel"] = jnp.zeros_like(attention["decay"]["kernel"])
    flat = tasks.write_gate_means(cfg, params, docs, batch_size=2)
    np.testing.assert_allclose(flat["beta"], 0.3, rtol=1e-5)
    np.testing.assert_allclose(flat["alpha"], 0.9, rtol=1e-5)
    plain = small_model()
    assert (
        tasks.write_gate_means(
            plain, model.init_params(plain, jax.random.key(0)), docs, batch_size=2
        )
        == {}
    )


@pytest.mark.parametrize("name", OPTION_SETS)
def test_param_count_formula_counts_the_write_gates(name):
    from infini_jax.model.flops import memory_flops_per_token, param_count

    cfg, params = gated_model(OPTION_SETS[name])
    assert param_count(cfg) == model.count_params(params)
    today = dataclasses.replace(cfg, memory_update="delta", memory_features="elu")
    more = memory_flops_per_token(cfg) > memory_flops_per_token(today)
    assert more == (cfg.memory_update == "exact_delta")
