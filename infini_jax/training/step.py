"""The pure train step: `train_step(state, batch) -> (state, metrics)`.

The loss is the token-mean next-token cross-entropy of the global batch, computed segment by
segment inside the model's scan (no `[tokens, vocab]` logits beyond one segment's). Gradients
are accumulated over `micro_batches` with a `lax.scan`. A non-finite loss or gradient norm skips
the update (parameters and optimizer state unchanged) and is counted.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from infini_jax import model, ops, sections
from infini_jax.model.config import ModelConfig
from infini_jax.parallel import sharding
from infini_jax.training import optim


class TrainState(NamedTuple):
    """Everything a step changes. All float leaves are float32."""

    step: jax.Array  # int32 scalar: steps taken (including skipped ones)
    params: dict
    opt_state: optax.OptState
    skipped: jax.Array  # int32: updates skipped for a non-finite loss or gradient
    nonfinite_run: jax.Array  # int32: consecutive non-finite steps so far


def init_state(
    model_cfg: ModelConfig, tx: optax.GradientTransformation, seed: int, params=None
) -> TrainState:
    """Step 0: fresh parameters from `seed` (or the given ones) and a fresh optimizer state."""
    if params is None:
        params = model.seed_params(model_cfg, seed)
    zero = jnp.zeros((), jnp.int32)
    return TrainState(zero, params, tx.init(params), zero, zero)


def memory_stats(memory: ops.Memory | None) -> dict[str, jax.Array]:
    """Per layer: mean Frobenius norm of M and mean Σz over batch and kv heads."""
    if memory is None:
        return {}
    norm, z = ops.memory_stats(memory)  # [layers, batch]
    return {"memory_norm": norm.mean(-1), "memory_z": z.mean(-1)}


def loss_sums(
    model_cfg: ModelConfig, params, batch: dict[str, jax.Array]
) -> tuple[jax.Array, jax.Array, ops.Memory | None]:
    """`(summed next-token NLL, tokens counted, memory after the batch)` of a batch of
    `[batch, seq]` arrays (tokens, targets, mask, segment_ids): the training and validation
    loss before normalisation."""
    nll, count, memory = model.sequence_loss(
        model_cfg,
        params,
        batch["tokens"],
        batch["targets"],
        mask=batch["mask"],
        segment_ids=batch["segment_ids"],
    )
    return nll.sum(), count.sum(), memory


def gate_stats(model_cfg: ModelConfig, params) -> dict[str, jax.Array]:
    """Per layer: mean / min / max of g(b) over heads."""
    if model_cfg.attention != "infini":
        return {}
    g = ops.gate_value(params["layers"]["attention"]["balance"], model_cfg.gate)  # [layers, heads]
    return {"gate_mean": g.mean(-1), "gate_min": g.min(-1), "gate_max": g.max(-1)}


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    model_cfg: ModelConfig,
    tx: optax.GradientTransformation,
    schedules: dict,
    micro_batches: int = 1,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a global batch of `[batch, seq]` arrays (tokens, targets, mask,
    segment_ids). Returns the new state and scalar / per-layer metrics."""

    def loss_sum(params, mb):
        nll, count, memory = loss_sums(model_cfg, params, mb)
        return nll, (count, memory)

    grad_fn = jax.value_and_grad(loss_sum, has_aux=True)
    if micro_batches == 1:
        (nll, (count, memory)), grads = grad_fn(state.params, batch)
    else:
        split = jax.tree.map(
            lambda x: x.reshape(micro_batches, x.shape[0] // micro_batches, *x.shape[1:]), batch
        )

        def accumulate(carry, mb):
            (nll, (count, memory)), grads = grad_fn(state.params, mb)
            total_nll, total_count, total_grads = carry
            return (
                total_nll + nll,
                total_count + count,
                jax.tree.map(jnp.add, total_grads, grads),
            ), memory

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        (nll, count, grads), memories = jax.lax.scan(
            accumulate, (jnp.float32(0), jnp.float32(0), zeros), split
        )
        memory = jax.tree.map(lambda x: x[-1], memories)
    count = jnp.maximum(count, 1.0)
    loss = nll / count
    grads = jax.tree.map(lambda g: g / count, grads)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
    new_state = TrainState(
        step=state.step + 1,
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        skipped=state.skipped + (~finite).astype(jnp.int32),
        nonfinite_run=jnp.where(finite, 0, state.nonfinite_run + 1),
    )
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "tokens": count,
        "lr": schedules["lr"](state.step),
        "gate_lr": schedules["gate_lr"](state.step),
        "skipped": new_state.skipped,
        "nonfinite_run": new_state.nonfinite_run,
        **gate_stats(model_cfg, state.params),
        **memory_stats(memory),
    }
    return new_state, metrics


def jit_train_step(
    model_cfg: ModelConfig, tx, schedules: dict, micro_batches: int, state_sh, batch_sh
):
    """`train_step` jitted with explicit shardings and the state donated: what training runs
    and what `infini_jax.plan` compiles to read XLA's memory analysis."""
    return jax.jit(
        functools.partial(
            train_step, model_cfg=model_cfg, tx=tx, schedules=schedules, micro_batches=micro_batches
        ),
        in_shardings=(state_sh, batch_sh),
        out_shardings=(state_sh, None),
        donate_argnums=0,
    )


class Training(NamedTuple):
    """Everything a config's training needs on a mesh, built once (train, plan and bench)."""

    tx: optax.GradientTransformation
    schedules: dict
    abstract: TrainState  # shapes only (`jax.eval_shape` of `init_state`)
    params_sh: object  # NamedShardings of the parameters
    state_sh: object  # NamedShardings of the whole TrainState
    batch_sh: object  # NamedSharding of every batch array
    step: sharding.InMesh  # the jitted, donated train step (`jit_train_step`) under the mesh


def make_training(config, model_cfg: ModelConfig, mesh) -> Training:
    """The optimizer, the state's shapes and shardings, and the jitted step of `config`."""
    opt = sections.OptimizerConfig.from_config(config.optimizer)
    tx, schedules = optim.make_optimizer(opt, config.total_steps)
    abstract = jax.eval_shape(lambda: init_state(model_cfg, tx, config.seed))
    axes = model.param_logical_axes(model_cfg)
    params_sh = sharding.param_shardings(axes, mesh, config.sharding_rules)
    state_sh = sharding.tree_shardings(abstract, params_sh, mesh)
    sharding.check_divisible(abstract, state_sh)
    batch_sh = sharding.batch_sharding(mesh)
    step = jit_train_step(model_cfg, tx, schedules, opt.micro_batches, state_sh, batch_sh)
    step = sharding.InMesh(step, mesh)
    return Training(tx, schedules, abstract, params_sh, state_sh, batch_sh, step)


def compiled_peak_bytes(compiled) -> int:
    """Peak device memory of a compiled step from XLA's memory analysis: arguments + outputs
    − aliased (donated) + temporaries."""
    ma = compiled.memory_analysis()
    return (
        ma.argument_size_in_bytes
        + ma.output_size_in_bytes
        - ma.alias_size_in_bytes
        + ma.temp_size_in_bytes
    )
