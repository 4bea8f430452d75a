"""orbax checkpoints: train state + data-iterator state + config, saved together.

A step directory is complete only once orbax has committed it (it writes to a temporary
directory and renames), so a half-written checkpoint is never loaded. Restore takes the target
shardings, so a checkpoint written on one mesh continues on another.
"""

import dataclasses
import gc
import inspect
import logging
import os
import sys
import threading
import time
import warnings

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from infini_jax import storage
from infini_jax.config import base_config
from infini_jax.errors import CheckpointError, ConfigError


@dataclasses.dataclass(frozen=True)
class Retention:
    """Which checkpoints stay (an orbax preservation policy). Step-based ones (every
    `every_steps`, and the last step) follow the step policy: the newest `keep`, plus every
    `permanent_every`-th step. Any other (by time, or at a SIGTERM) is temporary: kept only while
    it is the newest checkpoint."""

    every_steps: int
    keep: int
    permanent_every: int
    last_step: int

    def should_preserve(self, checkpoints, *, context=None) -> list[bool]:
        steps = [c.step for c in checkpoints]
        regular = sorted(s for s in steps if s % self.every_steps == 0 or s == self.last_step)
        kept = set(regular[-self.keep :]) | {max(steps, default=0)}
        if self.permanent_every:
            kept |= {s for s in regular if s % self.permanent_every == 0}
        return [s in kept for s in steps]


def manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    policy = Retention(
        config.checkpoint_every_steps,
        config.keep_checkpoints,
        config.permanent_checkpoint_every_steps,
        config.total_steps,
    )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, enable_async_checkpointing=True, create=True
    )
    _quiet_background_errors()
    return ocp.CheckpointManager(
        storage.join(storage.absolute(workdir), "checkpoints"), options=options
    )


def _quiet_background_errors() -> None:
    """orbax logs tracebacks when an asynchronous save fails in its threads, then raises the
    same error in the training loop (at the next save or wait), which reports it in one line."""
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _BackgroundSaveFilter) for f in absl_logger.filters):
        absl_logger.addFilter(_BackgroundSaveFilter())


class _BackgroundSaveFilter(logging.Filter):
    MODULES = (("futures", "future.py"), ("checkpointers", "async_checkpointer.py"))

    def filter(self, record: logging.LogRecord) -> bool:
        background = any(record.pathname.endswith(os.path.join(*m)) for m in self.MODULES)
        return not (background and record.levelno >= logging.ERROR)


def wait(mngr: ocp.CheckpointManager, timeout_s: float) -> None:
    """Waits until the save in flight has committed; its error, if it failed. After `timeout_s`
    (0 = no limit) a `StorageError`: a stopped bucket can keep orbax's writes retrying for many
    minutes."""
    if not timeout_s:
        mngr.wait_until_finished()
        return
    failure = []

    def run():
        try:
            mngr.wait_until_finished()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            failure.append(e)

    waiter = threading.Thread(target=run, name="infini_jax_checkpoint_wait", daemon=True)
    waiter.start()
    waiter.join(timeout_s)
    if waiter.is_alive():
        raise storage.StorageError(
            f"a checkpoint in {mngr.directory} did not commit within checkpoint_timeout_s="
            f"{timeout_s:g} s"
        )
    if failure:
        raise failure[0]


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
    return with_defaults(saved)


def with_defaults(saved: dict) -> dict:
    """A saved config (dict) with base defaults for every field added since it was saved."""
    return _merge(base_config().to_dict(), saved)


def _merge(defaults: dict, saved: dict) -> dict:
    out = dict(defaults)
    for key, value in saved.items():
        both = isinstance(value, dict) and isinstance(defaults.get(key), dict)
        out[key] = _merge(defaults[key], value) if both else value
    return out


# Model fields that change how a step is computed, not what it computes: free to change on resume.
COMPUTE_ONLY = (
    "attention_impl",
    "splash_block_q",
    "splash_block_kv",
    "splash_block_kv_compute",
    "remat_policy",
    "remat_layers",
    "layer_remat_policy",
    "delta_chunk",  # the exact delta's blocking: the same token-by-token rule for any chunk
)


def check_compatible(saved: dict, config: ml_collections.ConfigDict, step: int) -> None:
    """The model must be the same (but for how it is computed: the kernel, the exact delta's
    chunk and what is rematerialised); says which fields differ."""
    current = config.model.to_dict()
    fields = (set(saved["model"]) | set(current)) - set(COMPUTE_ONLY)
    differ = sorted(k for k in fields if saved["model"].get(k) != current.get(k))
    if differ:
        details = ", ".join(
            f"model.{k}: checkpoint {saved['model'].get(k)!r} vs config {current.get(k)!r}"
            for k in differ
        )
        raise ConfigError(
            f"the checkpoint at step {step} is from an incompatible model config "
            f"({details}); use a new --workdir or the original config"
        )


def check_resumable(mngr: ocp.CheckpointManager, step: int, config) -> None:
    """`check_compatible` against `step`'s saved config, if that config can be read."""
    try:
        saved = saved_config(mngr, step)
    except Exception:  # noqa: BLE001 - unreadable: `restore_intact` reports it
        return
    check_compatible(saved, config, step)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state, shardings):
    """Returns `(state, data_state)`, the state placed with `shardings`."""
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
    )
    restored = mngr.restore(
        step, args=ocp.args.Composite(state=partial_restore(target), data=ocp.args.JsonRestore())
    )
    return restored["state"], restored["data"]


def missing_leaves(state, abstract_state) -> list[str]:
    """The paths of `abstract_state`'s arrays that a partial restore did not fill (it leaves
    None or the abstract leaf): the checkpoint has no such array, e.g. it was written by code
    with other optimizer groups or without a parameter added since."""
    wanted = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    got = jax.tree_util.tree_flatten_with_path(state, is_leaf=lambda x: x is None)[0]
    have = {jax.tree_util.keystr(p) for p, leaf in got if isinstance(leaf, jax.Array)}
    return [jax.tree_util.keystr(p) for p, _ in wanted if jax.tree_util.keystr(p) not in have]


def unreadable(step: int, directory, error: Exception) -> str:
    """One line saying what is wrong with a checkpoint step: the first line of the innermost
    error (tensorstore's own, e.g. "OUT_OF_RANGE: Error reading ... Requested byte range ...")."""
    return f"checkpoint step {step} in {directory} is unreadable ({storage.reason(error)})"


def quiet_restore_aftermath() -> None:
    """A failed orbax restore leaves tensorstore reads finishing on a closed asyncio loop, and
    each prints a traceback ("Event loop is closed", "Task exception was never retrieved"):
    dozens of lines that say nothing the one-line warning does not. Silences exactly those
    (installed before a restore that may fail: they arrive from other threads)."""
    if getattr(sys.unraisablehook, "infini_jax_quiet", False):
        return  # installed already
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
    previous = sys.unraisablehook

    def hook(unraisable):
        closed = isinstance(unraisable.exc_value, RuntimeError) and "loop is closed" in str(
            unraisable.exc_value
        )
        if not (closed or inspect.iscoroutine(unraisable.object)):
            previous(unraisable)

    hook.infini_jax_quiet = True
    sys.unraisablehook = hook


def drain(seconds: float = 1.0) -> None:
    """Lets the reads a failed restore left behind finish (and be silenced) now, not at
    interpreter exit, when the silencing hooks are gone."""
    gc.collect()
    time.sleep(seconds)
    gc.collect()


def restore_intact(
    mngr: ocp.CheckpointManager, abstract_state, shardings, config, log=print
) -> tuple[int, object, dict]:
    """The newest checkpoint that restores: `(step, state, data_state)`. A step that cannot be
    read (a truncated or missing array file, bit rot, a corrupt JSON) is `log`ged in one line
    and the previous one is tried; with none intact, a `CheckpointError`. Every process tries
    the same steps and moves on together (a step counts as intact only if it is on all)."""
    steps = sorted(mngr.all_steps(), reverse=True)
    quiet_restore_aftermath()
    for i, step in enumerate(steps):
        problem = ""
        try:
            saved = saved_config(mngr, step)
        except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many kinds
            problem = unreadable(step, mngr.directory, e)
        else:
            check_compatible(saved, config, step)  # a config mismatch is not corruption
            try:
                state, data_state = restore(mngr, step, abstract_state, shardings)
            except Exception as e:  # noqa: BLE001
                problem = unreadable(step, mngr.directory, e)
                drain()
            else:
                missing = missing_leaves(state, abstract_state)
                if missing:  # the same on every process: a layout mismatch, not corruption
                    raise ConfigError(
                        f"the checkpoint at step {step} in {mngr.directory} has no "
                        f"{missing[0]} ({len(missing)} array(s) missing): it was written by a "
                        "version of infini_jax with another train-state layout (e.g. other "
                        "optimizer groups); resume it with that version, or use a new --workdir"
                    )
        if _everywhere(not problem):
            _set_aside(mngr, steps[:i], log)
            return step, state, data_state
        log(
            f"warning: {problem or f'checkpoint step {step} is unreadable on another process'}"
            "; trying the previous one"
        )
    raise CheckpointError(
        f"no intact checkpoint in {mngr.directory} (steps {sorted(steps)} are all unreadable); "
        "restore a copy of the directory, or start again with a new --workdir"
    )


def _set_aside(mngr: ocp.CheckpointManager, steps: list[int], log) -> None:
    """Moves unreadable step directories to WORKDIR/corrupt_checkpoints/ (kept for a look,
    out of the way of the steps the run will save again)."""
    if not steps:
        return
    aside = storage.join(storage.dirname(str(mngr.directory)), "corrupt_checkpoints")
    if jax.process_index() == 0:
        for step in steps:
            storage.move(
                storage.join(str(mngr.directory), str(step)), storage.join(aside, str(step))
            )
        log(f"moved unreadable step(s) {sorted(steps)} to {aside}")
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("infini_jax: corrupt checkpoints set aside")
    mngr.reload()


def _everywhere(ok: bool) -> bool:
    """True iff `ok` on every process."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray([int(ok)], np.int32))
    return bool(np.all(flags))


def partial_restore(target) -> ocp.args.PyTreeRestore:
    """Restores the leaves of `target` (shapes, dtypes, shardings) and nothing else, so a
    checkpoint holding more (the whole train state, or a field since removed) still loads."""
    return ocp.args.PyTreeRestore(
        item=target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True,
    )
