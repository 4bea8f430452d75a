"""The config's sections that the machinery above `infini_jax.config` reads, as typed, checked
dataclasses: the mesh, the optimizer and Weights & Biases. (The model's and the data's are
`infini_jax.model.config` and `infini_jax.data.config`.) `config.validate` checks them all
once at start-up; each field's default and meaning is declared in `infini_jax.defaults`.
"""

import dataclasses
import importlib.util

from infini_jax import storage
from infini_jax.defaults import base_config
from infini_jax.errors import (
    ConfigError,
    Section,
    check,
    check_positive_ints,
    is_int,
    section,
)

AXES = ("data", "fsdp", "tensor")
# The logical axes that parameters are annotated with in `infini_jax.model.layers`.
LOGICAL_AXES = ("embed", "vocab", "mlp", "heads", "kv_heads", "head_dim", "layers")


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except ValueError:  # in sys.modules as None: blocked
        return False


class _MeshMethods(Section):
    """`config.mesh` (training and evaluation): the size of each mesh axis, one may be -1."""

    PREFIX = "mesh"

    def check(self) -> None:
        sizes = [getattr(self, a) for a in AXES]
        for axis, size in zip(AXES, sizes, strict=True):
            check(
                is_int(size) and (size > 0 or size == -1),
                f"config.mesh.{axis}={size!r} must be a positive integer or -1 (the rest)",
            )
        check(sizes.count(-1) <= 1, "config.mesh: at most one of data, fsdp, tensor may be -1")
        check(
            is_int(self.slices) and self.slices > 0,
            f"config.mesh.slices={self.slices!r} must be a positive integer (TPU slices)",
        )


MeshConfig = section("MeshConfig", _MeshMethods, base_config().mesh)


def check_rules(sharding_rules) -> None:
    """`config.sharding_rules`: (logical axis, mesh axes) pairs over the known axes."""
    for rule in sharding_rules:
        check(
            len(rule) == 2 and rule[0] in LOGICAL_AXES,
            f"config.sharding_rules entry {tuple(rule)!r} must be (logical axis, mesh axes) "
            f"with a logical axis in {sorted(LOGICAL_AXES)}",
        )
        axes = rule[1] if isinstance(rule[1], tuple | list) else (rule[1],)
        check(
            all(a in (None, *AXES) for a in axes),
            f"config.sharding_rules entry {tuple(rule)!r}: mesh axes must be data, fsdp, "
            "tensor or None",
        )


class _OptimizerMethods(Section):
    PREFIX = "optimizer"

    def check(self) -> None:
        for name in (
            "learning_rate",
            "end_learning_rate",
            "gate_learning_rate",
            "weight_decay",
            "gate_weight_decay",
            "eps",
        ):
            value = getattr(self, name)
            check(value >= 0, f"config.optimizer.{name}={value!r} must be >= 0")
        check(
            is_int(self.warmup_steps) and self.warmup_steps >= 0,
            f"config.optimizer.warmup_steps={self.warmup_steps!r} must be an integer >= 0",
        )
        for name in ("b1", "b2"):
            value = getattr(self, name)
            check(0 <= value < 1, f"config.optimizer.{name}={value!r} must be in [0, 1)")
        check(self.clip_norm > 0, f"config.optimizer.clip_norm={self.clip_norm!r} must be > 0")
        check_positive_ints(
            {"micro_batches": self.micro_batches, "max_nonfinite_steps": self.max_nonfinite_steps},
            "optimizer.",
        )


OptimizerConfig = section("OptimizerConfig", _OptimizerMethods, base_config().optimizer)


MODES = ("disabled", "offline", "online")


@dataclasses.dataclass(frozen=True)
class WandbConfig:
    """`config.wandb`: see infini_jax/defaults.py for each field."""

    mode: str = "disabled"
    project: str = "infini_jax"
    entity: str = ""
    name: str = ""
    group: str = ""
    tags: tuple[str, ...] = ()
    dir: str = ""

    @classmethod
    def from_config(cls, cfg) -> "WandbConfig":
        tags = cfg.tags
        check(
            isinstance(tags, (tuple, list)) and all(isinstance(t, str) and t for t in tags),
            f"config.wandb.tags={tags!r} must be a tuple of non-empty strings, e.g. "
            "\"('baseline','seed0')\"",
        )
        out = cls(cfg.mode, cfg.project, cfg.entity, cfg.name, cfg.group, tuple(tags), cfg.dir)
        out.check()
        return out

    def check(self) -> None:
        check(
            self.mode in MODES, f"config.wandb.mode={self.mode!r} must be one of {', '.join(MODES)}"
        )
        for name in ("project", "entity", "name", "group", "dir"):
            value = getattr(self, name)
            check(isinstance(value, str), f"config.wandb.{name}={value!r} must be a string")
        check(bool(self.project), "config.wandb.project is empty; name a W&B project")
        check(
            self.mode == "disabled" or _installed("wandb"),
            f"config.wandb.mode={self.mode!r} needs the wandb package: "
            "pip install 'infini_jax[wandb]' (or --config.wandb.mode=disabled)",
        )

    def files_dir(self, workdir: str) -> str:
        """Where W&B writes its files: `dir`, or the workdir; a gs:// workdir needs `dir`."""
        if self.dir:
            return self.dir
        if storage.is_remote(workdir):
            raise ConfigError(
                f"config.wandb.mode={self.mode!r} with the gs:// workdir {workdir}: W&B writes "
                "local files; set --config.wandb.dir to a local directory"
            )
        return workdir
