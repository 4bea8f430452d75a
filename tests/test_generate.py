"""Generation: the KV-cache decode path equals the segment-at-a-time model, and greedy
generation equals the argmax of a full forward pass token by token."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infini_jax import model
from infini_jax.generate import generate, sample_token
from tests.conftest import small_model

KINDS = [
    dict(attention="infini", memory_update="delta"),
    dict(attention="infini", memory_update="linear", empty_memory="local", gate="sigmoid"),
    dict(attention="local"),
    dict(attention="full"),
    # the memory options: each token's β and decay logits wait in the cache for the write
    dict(
        attention="infini",
        memory_update="exact_delta",
        memory_features="l2",
        write_strength=True,
        decay="data",
    ),
    dict(
        attention="infini",
        memory_update="exact_delta",
        write_strength=True,
        decay="learned",
        delta_chunk=4,
    ),
]


def _model(kind, **extra):
    cfg = small_model(init_std=0.3, balance_init=1.0, **kind, **extra)
    params = model.init_params(cfg, jax.random.key(3))
    attention = params["layers"]["attention"]
    if "decay" in attention:  # zero at init: randomised, so the decay depends on the tokens
        shape = attention["decay"]["kernel"].shape
        attention["decay"]["kernel"] = jax.random.normal(jax.random.key(4), shape)
    return cfg, params


_logits = jax.jit(model.sequence_logits, static_argnums=0)


def _full_logits(cfg, params, tokens):
    """Logits of one forward pass over `tokens` `[b, t]`, padded to whole segments."""
    b, t = tokens.shape
    pad = -t % cfg.segment_len if cfg.attention != "full" else 0
    x = jnp.pad(jnp.asarray(tokens), ((0, 0), (0, pad)))
    mask = jnp.arange(t + pad)[None] < t
    logits, _ = _logits(cfg, params, x, mask=jnp.broadcast_to(mask, x.shape))
    return np.asarray(logits[:, :t])


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(map(str, k.values())))
def test_decode_steps_equal_the_segment_model(kind):
    cfg, params = _model(kind)
    tokens = np.asarray(jax.random.randint(jax.random.key(1), (2, 29), 0, cfg.vocab_size))
    want = _full_logits(cfg, params, tokens)
    memory = model.init_memory(cfg, 2)
    cache = model.init_cache(cfg, 2, tokens.shape[1])
    step = jax.jit(lambda p, t, m, c: model.decode_step(cfg, p, t, m, c))
    for t in range(tokens.shape[1]):  # crosses three segment boundaries (segment_len 8)
        logits, memory, cache = step(params, jnp.asarray(tokens[:, t]), memory, cache)
        np.testing.assert_allclose(np.asarray(logits), want[:, t], atol=2e-4, rtol=2e-4)


# Prompts ending inside, at and past a segment for the paper's memory and local attention; full
# attention (no segments) and the memory options once, with a prompt that crosses three
# segments (the decode test above checks every option at every step).
GREEDY = [
    (kind, n)
    for kind in KINDS
    for n in (5, 16, 27)
    if n == 27 or (kind["attention"] != "full" and kind.get("memory_update") != "exact_delta")
]


@pytest.mark.parametrize(
    "kind, prompt_len", GREEDY, ids=[f"{n}-" + "-".join(map(str, k.values())) for k, n in GREEDY]
)
def test_greedy_generation_equals_full_forward_argmax(kind, prompt_len):
    cfg, params = _model(kind)
    prompt = np.asarray(jax.random.randint(jax.random.key(2), (2, prompt_len), 0, cfg.vocab_size))
    new = generate(cfg, params, prompt, max_new_tokens=20)
    assert new.shape == (2, 20)
    seq = np.concatenate([prompt, new], axis=1)
    logits = _full_logits(cfg, params, seq)
    np.testing.assert_array_equal(new, logits[:, prompt_len - 1 : -1].argmax(-1))


@pytest.mark.slow
def test_sampling_is_seeded_and_top_p_keeps_the_nucleus():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    key = jax.random.key(0)
    draws = [int(sample_token(logits, jax.random.fold_in(key, i), 1.0, 0.7)[0]) for i in range(300)]
    assert set(draws) == {0, 1}  # 0.5 + 0.3 ≥ 0.7: only the two best
    assert 0.5 < draws.count(0) / 300 < 0.75  # renormalised 0.5 / 0.8 = 0.625
    full = [int(sample_token(logits, jax.random.fold_in(key, i), 1.0, 1.0)[0]) for i in range(300)]
    assert set(full) == {0, 1, 2, 3}
    assert int(sample_token(logits, key, 0.0, 1.0)[0]) == 0
    cfg, params = _model(KINDS[0])
    prompt = np.ones((1, 9), np.int32)
    a = generate(cfg, params, prompt, max_new_tokens=12, seed=4, temperature=1.0, top_p=0.9)
    b = generate(cfg, params, prompt, max_new_tokens=12, seed=4, temperature=1.0, top_p=0.9)
    c = generate(cfg, params, prompt, max_new_tokens=12, seed=5, temperature=1.0, top_p=0.9)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
