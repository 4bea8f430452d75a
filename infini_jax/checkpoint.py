"""orbax checkpoints: train state + data-iterator state + config, saved together.

A step directory is complete only once orbax has committed it (it writes to a temporary
directory and renames), so a half-written checkpoint is never loaded. Restore takes the target
shardings, so a checkpoint written on one mesh continues on another.
"""

import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from infini_jax.config import ConfigError


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
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(config.to_dict()),
        ),
        force=True,
    )


def saved_config(mngr: ocp.CheckpointManager, step: int) -> dict:
    return mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


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
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()
        ),
    )
    return restored["state"], restored["data"]
