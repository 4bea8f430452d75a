"""The plan's machinery: targets (a Cloud TPU slice or CPU devices), the train step compiled
for one, its memory per device and fit, and the plan's table (`python -m infini_jax.plan`).
"""

import dataclasses
import math
import re
import time

from infini_jax import sections
from infini_jax.errors import ConfigError
from infini_jax.parallel import tpu
from infini_jax.parallel.accelerators import ACCELERATORS

HEADROOM = 0.9  # a plan "fits" when its peak is at most this share of the chip's memory


GIB = 1024**3


MOSAIC = 'custom_call_target="tpu_custom_call"'  # a Pallas TPU kernel in compiled HLO


_OOM = re.compile(r"resource_exhausted|ran out of memory|\bhbm\b", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Target:
    """What a plan compiles for: compile-only TPU devices, or the host's (fake) CPU devices."""

    devices: tuple
    compiler: str  # "tpu" (libtpu) or "cpu-estimate"
    slice: tpu.Slice | None = None
    slices: int = 1

    @property
    def name(self) -> str:
        """The fit table's row: the TPU slice, or "" for every accelerator of the table."""
        if self.slice is None:
            return ""
        return self.slice.name + (f" × {self.slices}" if self.slices > 1 else "")

    def hbm_per_device(self) -> float:
        """The TPU chip's memory divided among its devices (bytes)."""
        per_chip = len(self.devices) / (self.slice.chips * self.slices)
        return self.slice.memory_gib * GIB / per_chip


def tpu_target(name: str, slices: int = 1) -> Target:
    """Compile-only devices of `slices` Cloud TPU slices named `name` (`v5p-8`)."""
    s = tpu.parse_slice(name)
    if slices < 1:
        raise ConfigError(f"--slices={slices} must be a positive integer")
    return Target(tuple(tpu.compile_devices(s, slices)), "tpu", s, slices)


def cpu_target(count: int) -> Target:
    """The first `count` CPU devices (the process must have that many: XLA_FLAGS)."""
    import jax

    return Target(tuple(jax.devices("cpu")[:count]), "cpu-estimate")


def parse_mesh(text: str) -> dict[str, int]:
    """`"data:2,fsdp:4,tensor:1"` → `{"data": 2, "fsdp": 4, "tensor": 1}` (missing axes = 1)."""
    out = {"data": 1, "fsdp": 1, "tensor": 1}
    for part in filter(None, text.split(",")):
        name, _, size = part.partition(":")
        if name not in out or not size.isdigit() or int(size) < 1:
            raise ConfigError(
                f"--mesh entry {part!r}: use data:N,fsdp:N,tensor:N with positive integers"
            )
        out[name] = int(size)
    return out


def param_group(path: tuple[str, ...]) -> str:
    """A parameter's group in the plan's table, from its path in the parameter tree."""
    if "balance" in path:
        return "balance factors"
    if {"write_strength", "decay", "decay_bias"} & set(path):
        return "memory write gates"
    if "scale" in path:
        return "norms"
    for name in ("embed", "unembed", "attention", "mlp"):
        if name in path:
            return {"embed": "input embedding", "unembed": "output projection"}.get(name, name)
    return "other"


def _bytes_per_device(tree, shardings) -> int:
    import jax

    total = 0
    for leaf, sh in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings), strict=True):
        total += math.prod(sh.shard_shape(leaf.shape)) * leaf.dtype.itemsize
    return total


def _compile(step, abstract, batch) -> tuple[object | None, str, float]:
    """`(compiled or None, out-of-memory message or "", seconds)`: a compile that runs out of
    device memory is a finding, not a crash."""
    import jax

    start = time.perf_counter()
    try:
        compiled = step.lower(abstract, batch).compile()
    except jax.errors.JaxRuntimeError as e:
        message = " ".join(str(e).split())
        if not _OOM.search(message):
            raise
        return None, message[:300], time.perf_counter() - start
    return compiled, "", time.perf_counter() - start


def plan(config, mesh_axes: dict[str, int], target: Target) -> dict:
    """The plan of `config` on a mesh of `mesh_axes` (per slice) over `target`'s devices."""
    import jax

    from infini_jax import ops
    from infini_jax.config import validate
    from infini_jax.model.flops import flops_per_token
    from infini_jax.parallel import sharding
    from infini_jax.training.step import compiled_peak_bytes, make_training

    config = config.copy_and_resolve_references()
    for axis, size in mesh_axes.items():
        config.mesh[axis] = size
    config.mesh.slices = target.slices
    model_cfg = validate(config)
    mesh = sharding.make_mesh(sections.MeshConfig.from_config(config.mesh), target.devices)
    d = config.data
    sharding.check_batch(d.batch_size, mesh, config.optimizer.micro_batches)
    t = make_training(config, model_cfg, mesh)
    abstract = t.abstract

    groups: dict[str, int] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(abstract.params):
        name = param_group(tuple(str(getattr(k, "key", k)) for k in path))
        groups[name] = groups.get(name, 0) + math.prod(leaf.shape)

    batch = {
        k: jax.ShapeDtypeStruct((d.batch_size, d.seq_len), dt, sharding=t.batch_sh)
        for k, dt in (("tokens", "int32"), ("targets", "int32"), ("segment_ids", "int32"))
    }
    batch["mask"] = jax.ShapeDtypeStruct((d.batch_size, d.seq_len), "bool", sharding=t.batch_sh)
    compiled, oom, seconds = _compile(t.step, abstract, batch)
    ma = compiled.memory_analysis() if compiled is not None else None
    peak = compiled_peak_bytes(compiled) if compiled is not None else None
    params_bytes = _bytes_per_device(abstract.params, t.state_sh.params)
    flops_tok = flops_per_token(model_cfg, d.seq_len)
    tokens = d.batch_size * d.seq_len
    devices = len(target.devices)
    window = model_cfg.window_len(d.seq_len)
    platform = ops.kernels.mesh_platform(mesh)
    kernel, why = ops.kernels.resolve(model_cfg.attention_impl, window, platform)
    if target.slice is not None:
        memory = {target.name: target.hbm_per_device()}
    else:
        memory = {a.name: a.memory_gib * GIB for a in ACCELERATORS}
    return {
        "topology": target.slice.name if target.slice else None,
        "topology_string": target.slice.topology if target.slice else None,
        "slices": target.slices,
        "chips": target.slice.chips * target.slices if target.slice else None,
        "compiler": target.compiler,
        "compile_s": round(seconds, 2),
        "out_of_memory": oom or None,
        "mesh": dict(mesh.shape),
        "devices": devices,
        "attention": model_cfg.attention,
        "kernel": kernel,
        "kernel_why": why,
        "fused_attention_calls": compiled.as_text().count(MOSAIC) if compiled else None,
        "parameters": sum(groups.values()),
        "parameters_by_group": groups,
        "bytes_per_device": {
            "parameters": params_bytes,
            "optimizer_state": _bytes_per_device(abstract.opt_state, t.state_sh.opt_state),
            "gradients": params_bytes,  # float32, sharded like the parameters
            "xla_arguments": ma.argument_size_in_bytes if ma else None,
            "xla_outputs": ma.output_size_in_bytes if ma else None,
            "xla_aliased": ma.alias_size_in_bytes if ma else None,
            "xla_temporaries": ma.temp_size_in_bytes if ma else None,
            "peak": peak,
        },
        "memory_per_device": memory,
        "flops_per_token": flops_tok,
        "tokens_per_step": tokens,
        "flops_per_step_per_device": flops_tok * tokens / devices,
        "fits": {k: peak is not None and peak <= HEADROOM * v for k, v in memory.items()},
    }


def human_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def _headline(p: dict) -> list[str]:
    mesh = ", ".join(f"{k}={v}" for k, v in p["mesh"].items())
    lines = [
        f"{p['attention']} model: {p['parameters']:,} parameters; mesh {mesh} "
        f"({p['devices']} devices)"
    ]
    if p["compiler"] == "tpu":
        slices = f" × {p['slices']} slices" if p["slices"] > 1 else ""
        calls = p["fused_attention_calls"]
        lines.append(
            f"target: TPU {p['topology']}{slices} ({p['topology_string']}, {p['chips']} chips), "
            f"compiled by the TPU compiler in {p['compile_s']:.1f} s; attention kernel "
            f"{p['kernel']} ({p['kernel_why']}), "
            + (f"{calls} Mosaic kernel calls in the compiled step" if calls is not None else "")
        )
    else:
        lines.append(
            f"target: {p['devices']} CPU devices (cpu-estimate: the CPU compiler's memory "
            f"stands in for an accelerator's), compiled in {p['compile_s']:.1f} s"
        )
    if p["out_of_memory"]:
        lines.append(f"the compiler ran out of device memory: {p['out_of_memory']}")
    return lines


def format_plan(p: dict, accelerator: str | None = None) -> str:
    b = p["bytes_per_device"]
    lines = [
        *_headline(p),
        "",
        "| parameter group | parameters |",
        "|---|---:|",
        *(f"| {k} | {v:,} |" for k, v in sorted(p["parameters_by_group"].items())),
        "",
        "| per device | bytes |",
        "|---|---:|",
    ]
    names = {
        "parameters": "parameters (f32)",
        "optimizer_state": "optimizer state (AdamW moments)",
        "gradients": "gradients (f32)",
        "xla_arguments": "compiled: arguments (state + batch)",
        "xla_outputs": "compiled: outputs",
        "xla_aliased": "compiled: aliased (donated state)",
        "xla_temporaries": "compiled: temporaries (activations, scan carries)",
        "peak": "peak (arguments + outputs − aliased + temporaries)",
    }
    lines += [f"| {name} | {human_bytes(b[k])} |" for k, name in names.items()]
    lines += [
        "",
        f"model FLOPs per token: {p['flops_per_token']:.4g}; per step per device: "
        f"{p['flops_per_step_per_device']:.4g} ({p['tokens_per_step']:,} tokens per step)",
        "",
        f"| accelerator | memory per device GiB | fits (peak ≤ {HEADROOM:.0%}) |",
        "|---|---:|---|",
    ]
    for name, memory in p["memory_per_device"].items():
        if accelerator in (None, name):
            ok = "yes" if p["fits"][name] else "no"
            share = f" ({b['peak'] / memory:.0%})" if b["peak"] is not None else " (out of memory)"
            lines.append(f"| {name} | {memory / GIB:g} | {ok}{share} |")
    return "\n".join(lines)


def default_mesh(config, max_devices: int = 8) -> dict[str, int]:
    """The config's mesh (one slice) filled with the most devices (at most `max_devices`) that
    its `-1` axis can take while the global batch still splits over data × fsdp × micro-batches."""
    from infini_jax.parallel import sharding

    c = config.copy_and_resolve_references()
    c.mesh.slices = 1
    mesh_cfg = sections.MeshConfig.from_config(c.mesh)
    micro = config.optimizer.micro_batches
    error = None
    for devices in range(max_devices, 0, -1):
        try:
            sizes = dict(zip(sections.AXES, sharding.mesh_shape(mesh_cfg, devices), strict=True))
        except ConfigError as e:
            error = error or e
            continue
        if config.data.batch_size % (sizes["data"] * sizes["fsdp"] * micro) == 0:
            return sizes
    raise error or ConfigError(
        f"config.data.batch_size={config.data.batch_size} does not split over any mesh of "
        f"1..{max_devices} devices; pass --mesh"
    )


def topology_mesh(config, target: Target, text: str) -> dict[str, int]:
    """The mesh per slice on a TPU target: `--mesh` if given, else the config's with its `-1`
    axis filling the slice; one line if that does not split the batch."""
    from infini_jax.parallel import sharding

    per_slice = len(target.devices) // target.slices
    if text:
        axes = parse_mesh(text)
        if math.prod(axes.values()) != per_slice:
            raise ConfigError(
                f"--mesh={text}: data×fsdp×tensor must equal the {per_slice} devices of one "
                f"{target.slice.name} slice"
            )
        return axes
    c = config.copy_and_resolve_references()
    c.mesh.slices = target.slices
    shape = sharding.mesh_shape(sections.MeshConfig.from_config(c.mesh), len(target.devices))
    return dict(zip(sections.AXES, shape, strict=True))
