"""Reading a training checkpoint outside its run: resolving `WORKDIR[/STEP]`, its saved config,
its parameters alone (evaluate, generate, convert, lm-eval), its tokenizer, and the weights that
`init_from` starts a new run from (adopting the model's shape with `init_from_model`)."""

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import traverse_util

from infini_jax import model, storage
from infini_jax.config import validate
from infini_jax.data import pipeline, tokenizer
from infini_jax.data.config import DataConfig
from infini_jax.errors import CheckpointError, ConfigError
from infini_jax.training.checkpoint import (
    drain,
    missing_leaves,
    partial_restore,
    quiet_restore_aftermath,
    saved_config,
    unreadable,
)


def resolve(path: str) -> tuple[str, int | None]:
    """`WORKDIR`, `WORKDIR/STEP` or `WORKDIR/checkpoints/STEP` → (workdir, step or None)."""
    path = storage.absolute(path)
    head, tail = storage.dirname(path), storage.basename(path)
    if tail.isdigit():
        workdir = storage.dirname(head) if storage.basename(head) == "checkpoints" else head
        return workdir, int(tail)
    return path, None


def _open(path: str, flag: str = "--checkpoint") -> tuple[ocp.CheckpointManager, int]:
    """The manager of `path`'s checkpoints and the step `path` names (default: the latest);
    `flag` is what the user typed `path` as, for the error line."""
    workdir, step = resolve(path)
    ckpt_dir = storage.join(workdir, "checkpoints")
    if not storage.isdir(ckpt_dir):
        raise CheckpointError(
            f"no checkpoints in {workdir}; point {flag} at a training workdir (WORKDIR or "
            "WORKDIR/STEP)"
        )
    mngr = ocp.CheckpointManager(ckpt_dir)
    steps = mngr.all_steps()
    step = step if step is not None else mngr.latest_step()
    if step is None or step not in steps:
        raise CheckpointError(f"checkpoint step {step} not in {ckpt_dir} (steps saved: {steps})")
    return mngr, step


def has_steps(workdir: str) -> bool:
    """Whether `workdir` holds checkpoint steps of its own (a resume)."""
    return any(name.isdigit() for name in storage.listdir(storage.join(workdir, "checkpoints")))


def require(path: str, flag: str) -> None:
    """One `CheckpointError` line, before anything is written, if `path` holds no checkpoint
    (or not the step it names)."""
    mngr, _ = _open(path, flag)
    mngr.close()


# The workdir's tokenizer as a Hugging Face directory (`AutoTokenizer.from_pretrained` loads
# it; RULER's tasks need one), written by train at start-up.
HF_TOKENIZER = "hf_tokenizer"


def __unreadable_step(mngr: ocp.CheckpointManager, step: int, e: Exception) -> CheckpointError:
    saved = mngr.all_steps()
    return CheckpointError(
        f"{unreadable(step, mngr.directory, e)}; pass an earlier step (saved: {saved})"
    )


def _open_config(
    path: str, flag: str
) -> tuple[ocp.CheckpointManager, int, ml_collections.ConfigDict]:
    mngr, step = _open(path, flag)
    try:
        return mngr, step, ml_collections.ConfigDict(saved_config(mngr, step))
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many kinds
        raise __unreadable_step(mngr, step, e) from None


def load_config(path: str, flag: str = "--checkpoint") -> ml_collections.ConfigDict:
    """The config saved with the checkpoint at `path` (see `resolve`), without its arrays."""
    mngr, _, config = _open_config(path, flag)
    mngr.close()
    return config


def load_params(
    path: str, shardings_fn=None, flag: str = "--checkpoint"
) -> tuple[ml_collections.ConfigDict, int, dict]:
    """Parameters only (no optimizer state) of a training checkpoint.

    Args:
      path: see `resolve`; without a step, the latest.
      shardings_fn: `(config, abstract params) -> shardings` tree; None = the first device.
      flag: what the user typed `path` as (named by the error of a path with no checkpoints).

    Returns:
      `(config saved with the checkpoint, step, params)`.
    """
    mngr, step, config = _open_config(path, flag)
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
    quiet_restore_aftermath()
    try:
        restored = mngr.restore(
            step, args=ocp.args.Composite(state=partial_restore({"params": target}))
        )
    except Exception as e:  # noqa: BLE001
        drain()
        raise __unreadable_step(mngr, step, e) from None
    mngr.close()
    params = restored["state"]["params"]
    missing = missing_leaves(params, target)
    if missing:
        raise CheckpointError(
            f"the checkpoint at step {step} in {mngr.directory} has no parameter {missing[0]} "
            f"({len(missing)} missing) that its saved config's model needs: it was written by "
            "another version of infini_jax; load it with that version"
        )
    return config, step, params


def load_tokenizer(path: str, config: ml_collections.ConfigDict) -> tokenizer.Tokenizer:
    """The tokenizer of the checkpoint at `path` whose saved config is `config`: the one it
    names, or the built-in one cached in its workdir; checked against its model."""
    workdir, _ = resolve(path)
    model_cfg = validate(config)
    return pipeline.resolve_tokenizer(
        DataConfig.from_config(config.data), workdir, model_cfg.vocab_size, config.seed, model_cfg
    )


# The fields that fix the weights' shapes: a checkpoint initialises a model only if they match.
WEIGHT_FIELDS = (
    "vocab_size",
    "num_layers",
    "d_model",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "mlp_dim",
    "tie_embeddings",
)


# What `config.init_from_model` takes from the checkpoint: the weights' shapes and meaning.
ADOPTED_FIELDS = (
    *WEIGHT_FIELDS,
    "norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_scaling_factor",
    "rope_low_freq_factor",
    "rope_high_freq_factor",
    "rope_original_len",
)


def adopt_model(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
    """`config.init_from_model`: a copy of `config` with `ADOPTED_FIELDS` (and
    `data.tokenizer`, if unset) taken from the checkpoint `config.init_from` names; from the
    run's own latest checkpoint once it has one (a resume does not need `init_from` again)."""
    mngr, step = _open(workdir if has_steps(workdir) else config.init_from, "--config.init_from")
    saved = saved_config(mngr, step)
    mngr.close()
    config = config.copy_and_resolve_references()
    for name in ADOPTED_FIELDS:
        config.model[name] = saved["model"][name]
    if not config.data.tokenizer:
        config.data.tokenizer = saved["data"]["tokenizer"]
    return config


def init_params_from(path: str, model_cfg, params_sh, seed: int) -> tuple[dict, str]:
    """`config.init_from`: the parameters of the checkpoint at `path` for `model_cfg`, placed
    with `params_sh`, and a one-line summary. The weights' shapes must match (`WEIGHT_FIELDS`);
    the attention may differ: a "full" or "local" checkpoint (e.g. an imported Llama) starts an
    "infini" model with fresh balance factors, and a balance factor the model lacks is dropped.
    """
    replicated = jax.sharding.NamedSharding(
        jax.tree.leaves(params_sh)[0].mesh, jax.sharding.PartitionSpec()
    )
    flat_sh = traverse_util.flatten_dict(params_sh)
    checked = {}

    def shardings(saved, abstract):
        saved_cfg = checked["model"] = validate(saved)
        differ = [
            f"model.{k}: checkpoint {getattr(saved_cfg, k)!r} vs config {getattr(model_cfg, k)!r}"
            for k in WEIGHT_FIELDS
            if getattr(saved_cfg, k) != getattr(model_cfg, k)
        ]
        if differ:
            raise ConfigError(
                f"init_from={path}: the checkpoint's weights do not fit this model "
                f"({', '.join(differ)}); use the checkpoint's model shape"
            )
        flat = traverse_util.flatten_dict(abstract)
        return traverse_util.unflatten_dict({k: flat_sh.get(k, replicated) for k in flat})

    _, step, loaded = load_params(path, shardings, "--config.init_from")
    loaded = traverse_util.flatten_dict(loaded)
    missing = [k for k in flat_sh if k not in loaded]
    if missing:  # e.g. the balance factors of an infini model started from a full one
        fresh = jax.jit(lambda: model.seed_params(model_cfg, seed), out_shardings=params_sh)()
        fresh = traverse_util.flatten_dict(fresh)
        loaded.update({k: fresh[k] for k in missing})
    dropped = [k for k in loaded if k not in flat_sh]
    params = traverse_util.unflatten_dict({k: loaded[k] for k in flat_sh})
    note = f"initialised from {path} (step {step}): parameters only"
    for name in ("attention", *ADOPTED_FIELDS):  # what differs, so a change is never silent
        before, after = getattr(checked["model"], name), getattr(model_cfg, name)
        if before != after:
            note += f"; model.{name} {before!r} -> {after!r}"
    for what, keys in (("fresh", missing), ("dropped", dropped)):
        if keys:
            note += f"; {what}: {', '.join(sorted({'/'.join(k[-2:]) for k in keys}))}"
    return params, note
