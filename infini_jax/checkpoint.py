"""orbax checkpoints: train state + data-iterator state + config, saved together.

A step directory is complete only once orbax has committed it (it writes to a temporary
directory and renames), so a half-written checkpoint is never loaded. Restore takes the target
shardings, so a checkpoint written on one mesh continues on another.
"""

import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from infini_jax import model
from infini_jax.config import base_config, validate
from infini_jax.errors import CheckpointError, ConfigError


def manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    keep_period = config.permanent_checkpoint_every_steps or None
    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_checkpoints,
        keep_period=keep_period,
        enable_async_checkpointing=True,
        create=True,
    )
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"), options=options
    )


def save(
    mngr: ocp.CheckpointManager,
    step: int,
    state,
    data_state: dict,
    config: ml_collections.ConfigDict,
) -> None:
    mngr.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.PyTreeSave(state),  # the handler `_partial` restores with
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(config.to_dict()),
        ),
        force=True,
    )


def saved_config(mngr: ocp.CheckpointManager, step: int) -> dict:
    """The config saved with `step`, with base defaults for any field added since."""
    saved = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    return _merge(base_config().to_dict(), saved)


def _merge(defaults: dict, saved: dict) -> dict:
    out = dict(defaults)
    for key, value in saved.items():
        both = isinstance(value, dict) and isinstance(defaults.get(key), dict)
        out[key] = _merge(defaults[key], value) if both else value
    return out


def check_compatible(saved: dict, config: ml_collections.ConfigDict, step: int) -> None:
    """The model must be the same; says which fields differ."""
    current = config.model.to_dict()
    differ = sorted(
        k for k in set(saved["model"]) | set(current) if saved["model"].get(k) != current.get(k)
    )
    if differ:
        details = ", ".join(
            f"model.{k}: checkpoint {saved['model'].get(k)!r} vs config {current.get(k)!r}"
            for k in differ
        )
        raise ConfigError(
            f"the checkpoint at step {step} is from an incompatible model config "
            f"({details}); use a new --workdir or the original config"
        )


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state, shardings):
    """Returns `(state, data_state)`, the state placed with `shardings`."""
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
    )
    restored = mngr.restore(
        step, args=ocp.args.Composite(state=_partial(target), data=ocp.args.JsonRestore())
    )
    return restored["state"], restored["data"]


def _partial(target) -> ocp.args.PyTreeRestore:
    """Restores the leaves of `target` (shapes, dtypes, shardings) and nothing else, so a
    checkpoint holding more (the whole train state, or a field since removed) still loads."""
    return ocp.args.PyTreeRestore(
        item=target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True,
    )


def resolve(path: str) -> tuple[str, int | None]:
    """`WORKDIR`, `WORKDIR/STEP` or `WORKDIR/checkpoints/STEP` → (workdir, step or None)."""
    path = os.path.abspath(path.rstrip("/"))
    head, tail = os.path.split(path)
    if tail.isdigit():
        workdir = os.path.dirname(head) if os.path.basename(head) == "checkpoints" else head
        return workdir, int(tail)
    return path, None


def load_params(path: str, shardings_fn=None) -> tuple[ml_collections.ConfigDict, int, dict]:
    """Parameters only (no optimizer state) of a training checkpoint.

    Args:
      path: see `resolve`; without a step, the latest.
      shardings_fn: `(config, abstract params) -> shardings` tree; None = the first device.

    Returns:
      `(config saved with the checkpoint, step, params)`.
    """
    workdir, step = resolve(path)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise CheckpointError(f"no checkpoints in {workdir}; pass --checkpoint=WORKDIR[/STEP]")
    mngr = ocp.CheckpointManager(ckpt_dir)
    steps = mngr.all_steps()
    step = step if step is not None else mngr.latest_step()
    if step is None or step not in steps:
        raise CheckpointError(f"checkpoint step {step} not in {ckpt_dir} (steps saved: {steps})")
    config = ml_collections.ConfigDict(saved_config(mngr, step))
    model_cfg = validate(config)
    abstract = jax.eval_shape(lambda: model.init_params(model_cfg, jax.random.key(0)))
    if shardings_fn is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: device, abstract)
    else:
        shardings = shardings_fn(config, abstract)
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    restored = mngr.restore(step, args=ocp.args.Composite(state=_partial({"params": target})))
    mngr.close()
    return config, step, restored["state"]["params"]
