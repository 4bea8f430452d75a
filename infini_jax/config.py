"""Loading and validating configs: one clear error line per bad field, before any compile."""

import importlib.util
import json
import os

import ml_collections

from infini_jax.model_config import ATTENTION_KINDS, DTYPES, REMAT_POLICIES, ModelConfig
from infini_jax.ops import EMPTY_MEMORY_MODES, GATES, UPDATE_RULES


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field and what to do."""


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/config.py[:preset]` as `config_flags.DEFINE_config_file` would."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist; pass --config=configs/<name>.py")
    name = os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive_ints(section: ml_collections.ConfigDict, prefix: str, names: tuple[str, ...]):
    for name in names:
        value = section[name]
        field = f"{prefix}.{name}" if prefix else name
        _check(
            isinstance(value, int) and not isinstance(value, bool) and value > 0,
            f"config.{field}={value!r} must be a positive integer",
        )


def _choice(value, options, field):
    _check(value in options, f"config.{field}={value!r} is not one of {options}")


def validate(config: ml_collections.ConfigDict) -> ModelConfig:
    """Checks every field; raises `ConfigError` on the first bad one. Returns the ModelConfig."""
    for section in ("mesh", "model", "data", "optimizer"):
        _check(section in config, f"config.{section} is missing; start from configs/tiny.py")
    _check(isinstance(config.seed, int), f"config.seed={config.seed!r} must be an integer")
    _positive_ints(
        config, "", ("total_steps", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints")
    )

    axes = [config.mesh[a] for a in ("data", "fsdp", "tensor")]
    for axis, size in zip(("data", "fsdp", "tensor"), axes, strict=True):
        _check(
            isinstance(size, int) and (size > 0 or size == -1),
            f"config.mesh.{axis}={size!r} must be a positive integer or -1 (the rest)",
        )
    _check(axes.count(-1) <= 1, "config.mesh: at most one of data, fsdp, tensor may be -1")

    m = config.model
    try:
        model = ModelConfig.from_config(m)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _positive_ints(
        m,
        "model",
        (
            "vocab_size",
            "num_layers",
            "d_model",
            "num_heads",
            "num_kv_heads",
            "mlp_dim",
            "segment_len",
        ),
    )
    _check(
        m.d_model % m.num_heads == 0,
        f"config.model.num_heads={m.num_heads} does not divide config.model.d_model="
        f"{m.d_model}; choose them so that head_dim = d_model / num_heads is an integer",
    )
    _check(
        model.head_dim % 2 == 0,
        f"config.model: head_dim = d_model / num_heads = {model.head_dim} must be even (RoPE)",
    )
    _check(
        m.num_heads % m.num_kv_heads == 0,
        f"config.model.num_kv_heads={m.num_kv_heads} does not divide config.model.num_heads="
        f"{m.num_heads} (grouped-query attention needs whole groups)",
    )
    _choice(m.attention, ATTENTION_KINDS, "model.attention")
    _choice(m.memory_update, UPDATE_RULES, "model.memory_update")
    _choice(m.gate, GATES, "model.gate")
    _choice(m.empty_memory, EMPTY_MEMORY_MODES, "model.empty_memory")
    _choice(m.remat_policy, REMAT_POLICIES, "model.remat_policy")
    _choice(m.dtype, DTYPES, "model.dtype")
    for name in ("init_std", "norm_eps", "rope_theta"):
        _check(m[name] > 0, f"config.model.{name}={m[name]!r} must be > 0")
    _check(
        isinstance(m.bptt_segments, int) and m.bptt_segments >= 0,
        f"config.model.bptt_segments={m.bptt_segments!r} must be 0 (full) or a positive k",
    )

    d = config.data
    _positive_ints(d, "data", ("seq_len", "batch_size"))
    if m.attention != "full":
        _check(
            d.seq_len % m.segment_len == 0,
            f"config.data.seq_len={d.seq_len} is not a multiple of config.model.segment_len="
            f"{m.segment_len}; use e.g. {m.segment_len * max(1, d.seq_len // m.segment_len)}",
        )

    _check(
        d.packing in ("concat", "padding"),
        f"config.data.packing={d.packing!r} is not one of ('concat', 'padding')",
    )
    _check(
        0 < d.validation_fraction <= 0.5,
        f"config.data.validation_fraction={d.validation_fraction!r} must be in (0, 0.5]",
    )
    _check(
        d.host_sharding in ("replicated", "sharded"),
        f"config.data.host_sharding={d.host_sharding!r} is not one of ('replicated', 'sharded')",
    )
    _check(
        isinstance(d.worker_count, int) and d.worker_count >= 0,
        f"config.data.worker_count={d.worker_count!r} must be an integer >= 0",
    )
    n_sources = len([x for x in d.source.split(",") if x])
    _check(
        n_sources > 0,
        "config.data.source is empty: use 'synthetic' or a glob of shards "
        "written by python -m infini_jax.data.prepare",
    )
    if d.weights:
        try:
            weights = [float(w) for w in d.weights.split(",")]
        except ValueError:
            weights = []
        _check(
            len(weights) == n_sources and all(w > 0 for w in weights),
            f"config.data.weights={d.weights!r} must be {n_sources} positive numbers, one per "
            "entry of config.data.source",
        )
    syn = d.synthetic
    _positive_ints(
        syn, "data.synthetic", ("min_length", "max_length", "key_digits", "tokenizer_vocab_size")
    )
    _check(
        syn.min_length <= syn.max_length,
        f"config.data.synthetic.min_length={syn.min_length} exceeds max_length={syn.max_length}",
    )
    _check(
        syn.min_length >= 64,
        f"config.data.synthetic.min_length={syn.min_length} must be "
        ">= 64 tokens (a document needs its preamble, needle and question)",
    )

    _check(
        all(isinstance(m, int) and m > 0 for m in config.report.passkey_multiples),
        "config.report.passkey_multiples must be positive integers (multiples of seq_len)",
    )
    _positive_ints(config.report, "report", ("passkey_samples",))
    _positive_ints(config, "", ("eval_batches",))
    _check(
        isinstance(config.eval_every_steps, int) and config.eval_every_steps >= 0,
        f"config.eval_every_steps={config.eval_every_steps!r} must be an integer >= 0",
    )

    o = config.optimizer
    for name in (
        "learning_rate",
        "end_learning_rate",
        "gate_learning_rate",
        "weight_decay",
        "gate_weight_decay",
        "eps",
    ):
        _check(o[name] >= 0, f"config.optimizer.{name}={o[name]!r} must be >= 0")
    _check(
        isinstance(o.warmup_steps, int) and o.warmup_steps >= 0,
        f"config.optimizer.warmup_steps={o.warmup_steps!r} must be an integer >= 0",
    )
    for name in ("b1", "b2"):
        _check(0 <= o[name] < 1, f"config.optimizer.{name}={o[name]!r} must be in [0, 1)")
    _check(o.clip_norm > 0, f"config.optimizer.clip_norm={o.clip_norm!r} must be > 0")
    _positive_ints(o, "optimizer", ("micro_batches", "max_nonfinite_steps"))
    _check(
        isinstance(config.permanent_checkpoint_every_steps, int)
        and config.permanent_checkpoint_every_steps >= 0,
        "config.permanent_checkpoint_every_steps must be an integer >= 0 (0 = none)",
    )
    _check(
        isinstance(config.get("init_from", ""), str),
        f"config.init_from={config.get('init_from')!r} must be a path (WORKDIR[/STEP]) or ''",
    )
    _check(
        not (config.get("init_from_required", False) and not config.init_from),
        "config.init_from is empty: this config fine-tunes a checkpoint; pass "
        "--config.init_from=WORKDIR[/STEP] of the pretrained run",
    )
    known = {"embed", "vocab", "mlp", "heads", "kv_heads", "head_dim", "layers"}
    for rule in config.sharding_rules:
        _check(
            len(rule) == 2 and rule[0] in known,
            f"config.sharding_rules entry {tuple(rule)!r} must be (logical axis, mesh axes) "
            f"with a logical axis in {sorted(known)}",
        )
        axes = rule[1] if isinstance(rule[1], tuple | list) else (rule[1],)
        _check(
            all(a in (None, "data", "fsdp", "tensor") for a in axes),
            f"config.sharding_rules entry {tuple(rule)!r}: mesh axes must be data, fsdp, "
            "tensor or None",
        )
    return model


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes the resolved config to `workdir/config.json`; returns its path."""
    path = os.path.join(workdir, "config.json")
    with open(path + ".tmp", "w") as f:
        json.dump(config.to_dict(), f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)
    return path
