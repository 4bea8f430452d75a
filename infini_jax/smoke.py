r"""Forward/backward smoke run of a config: the main job until `infini_jax.train` lands.

Validates the config (one clear line per bad field, before any compile), saves it as JSON in
the workdir, then fits one fixed random batch for a few AdamW steps through the same
segment scan training will use, and checks that the loss falls and stays finite.

  python -m infini_jax.smoke --config=configs/tiny.py --workdir=/tmp/tiny [--config.model.x=y]
"""

import os
import sys
import time

import jax
import jax.numpy as jnp
import optax
from absl import app, flags
from ml_collections import config_flags

from infini_jax import model as M
from infini_jax.cli import parse_flags
from infini_jax.config import ConfigError, save_config, validate

_CONFIG = config_flags.DEFINE_config_file("config", "configs/tiny.py", "Config file[:preset].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the resolved config.json is written.")
_STEPS = flags.DEFINE_integer("steps", 20, "Optimizer steps on the fixed batch.")


def run(config, workdir: str | None, steps: int) -> list[float]:
    """Returns the losses of `steps` AdamW steps on one fixed batch of the config's shape."""
    cfg = validate(config)
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        save_config(config, workdir)
    key_params, key_data = jax.random.split(jax.random.key(config.seed))
    params = M.init_params(cfg, key_params)
    batch, seq = config.data.batch_size, config.data.seq_len
    tokens = jax.random.randint(key_data, (batch, seq + 1), 0, cfg.vocab_size)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    tx = optax.adamw(
        config.optimizer.learning_rate,
        b1=config.optimizer.b1,
        b2=config.optimizer.b2,
        weight_decay=config.optimizer.weight_decay,
    )
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        def loss_fn(p):
            nll, count, memory = M.sequence_loss(cfg, p, inputs, targets)
            return nll.sum() / count.sum(), memory

        (loss, memory), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(memory)]))
        return optax.apply_updates(params, updates), opt_state, loss, finite

    print(
        f"{cfg.attention} model, {M.count_params(params):,} parameters, batch {batch} x {seq} "
        f"tokens, {seq // M.window_len(cfg, seq)} segment(s) per sequence"
    )
    losses, start = [], time.perf_counter()
    for i in range(steps):
        params, opt_state, loss, finite = step(params, opt_state)
        losses.append(float(loss))
        if not (jnp.isfinite(loss) and finite):
            raise RuntimeError(f"step {i}: non-finite loss or memory ({losses[-1]})")
        if i == 0:
            print(
                f"step 0 loss {losses[0]:.4f} (compile + first step "
                f"{time.perf_counter() - start:.1f}s)"
            )
    print(f"step {steps - 1} loss {losses[-1]:.4f}")
    if steps > 1 and not losses[-1] < losses[0]:
        raise RuntimeError(f"loss did not fall: {losses[0]:.4f} -> {losses[-1]:.4f}")
    print("smoke OK: loss falls, memory and loss finite")
    return losses


def main(argv):
    del argv
    try:
        run(_CONFIG.value, _WORKDIR.value, _STEPS.value)
    except ConfigError as e:
        sys.exit(f"config error: {e}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
