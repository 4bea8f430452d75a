r"""Plan before launch: parameters, memory per device and FLOPs of a config on a mesh.

  python -m infini_jax.plan --config=configs/llama_300m_infini.py \
      --mesh=data:2,fsdp:4,tensor:1 [--accelerator=v5p] [--json=plan.json]

Nothing is allocated: shapes come from `jax.eval_shape`, bytes per device from each leaf's
sharding, and the train step is compiled (not run) for fake CPU devices of the same count to
read XLA's memory analysis (arguments, outputs, temporaries). The CPU compiler's temporaries
are an estimate of a TPU/GPU compile's (fusion and layouts differ), so the fit table leaves
`HEADROOM` of the accelerator's memory free.
"""

import json
import math
import os

from infini_jax import storage
from infini_jax.accelerators import ACCELERATORS, BY_NAME
from infini_jax.errors import ConfigError

HEADROOM = 0.9  # a plan "fits" when its peak is at most this share of the chip's memory
GIB = 1024**3


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


def plan(config, mesh_axes: dict[str, int]) -> dict:
    """The plan of `config` on a mesh of `mesh_axes` (needs that many JAX devices)."""
    import jax

    from infini_jax import sharding
    from infini_jax.config import validate
    from infini_jax.flops import flops_per_token
    from infini_jax.train_step import compiled_peak_bytes, make_training

    config = config.copy_and_resolve_references()
    for axis, size in mesh_axes.items():
        config.mesh[axis] = size
    model_cfg = validate(config)
    devices = math.prod(mesh_axes.values())
    mesh = sharding.make_mesh(sharding.MeshConfig.from_config(config.mesh), jax.devices()[:devices])
    d = config.data
    sharding.check_batch(d.batch_size, mesh, config.optimizer.micro_batches)
    t = make_training(config, model_cfg, mesh)
    abstract, state_sh, batch_sh = t.abstract, t.state_sh, t.batch_sh

    groups: dict[str, int] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(abstract.params):
        name = param_group(tuple(str(getattr(k, "key", k)) for k in path))
        groups[name] = groups.get(name, 0) + math.prod(leaf.shape)

    batch = {
        k: jax.ShapeDtypeStruct((d.batch_size, d.seq_len), dt, sharding=batch_sh)
        for k, dt in (("tokens", "int32"), ("targets", "int32"), ("segment_ids", "int32"))
    }
    batch["mask"] = jax.ShapeDtypeStruct((d.batch_size, d.seq_len), "bool", sharding=batch_sh)
    compiled = t.step.lower(abstract, batch).compile()
    ma = compiled.memory_analysis()
    peak = compiled_peak_bytes(compiled)
    params_bytes = _bytes_per_device(abstract.params, state_sh.params)
    flops_tok = flops_per_token(model_cfg, d.seq_len)
    tokens = d.batch_size * d.seq_len
    return {
        "mesh": dict(mesh.shape),
        "devices": devices,
        "attention": model_cfg.attention,
        "parameters": sum(groups.values()),
        "parameters_by_group": groups,
        "bytes_per_device": {
            "parameters": params_bytes,
            "optimizer_state": _bytes_per_device(abstract.opt_state, state_sh.opt_state),
            "gradients": params_bytes,  # float32, sharded like the parameters
            "xla_arguments": ma.argument_size_in_bytes,
            "xla_outputs": ma.output_size_in_bytes,
            "xla_aliased": ma.alias_size_in_bytes,
            "xla_temporaries": ma.temp_size_in_bytes,
            "peak_estimate": peak,
        },
        "flops_per_token": flops_tok,
        "tokens_per_step": tokens,
        "flops_per_step_per_device": flops_tok * tokens / devices,
        "fits": {a.name: peak <= HEADROOM * a.memory_gib * GIB for a in ACCELERATORS},
    }


def human_bytes(n: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def format_plan(p: dict, accelerator: str | None = None) -> str:
    b = p["bytes_per_device"]
    mesh = ", ".join(f"{k}={v}" for k, v in p["mesh"].items())
    lines = [
        f"{p['attention']} model: {p['parameters']:,} parameters; mesh {mesh} "
        f"({p['devices']} devices)",
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
        "xla_arguments": "XLA: arguments (state + batch)",
        "xla_temporaries": "XLA: temporaries (activations, scan carries)",
        "peak_estimate": "peak estimate (arguments + outputs − aliased + temporaries)",
    }
    lines += [f"| {name} | {human_bytes(b[k])} |" for k, name in names.items()]
    lines += [
        "",
        f"model FLOPs per token: {p['flops_per_token']:.4g}; per step per device: "
        f"{p['flops_per_step_per_device']:.4g} ({p['tokens_per_step']:,} tokens per step)",
        "",
        f"| accelerator | memory GiB | fits (peak ≤ {HEADROOM:.0%}) |",
        "|---|---:|---|",
    ]
    for a in ACCELERATORS:
        if accelerator in (None, a.name):
            ok = "yes" if p["fits"][a.name] else "no"
            share = b["peak_estimate"] / (a.memory_gib * GIB)
            lines.append(f"| {a.name} | {a.memory_gib} | {ok} ({share:.0%}) |")
    return "\n".join(lines)


def default_mesh(config, max_devices: int = 8) -> dict[str, int]:
    """The config's mesh filled with the most devices (at most `max_devices`) that its `-1`
    axis can take while the global batch still splits over data × fsdp × micro-batches."""
    from infini_jax import sharding

    mesh_cfg = sharding.MeshConfig.from_config(config.mesh)
    micro = config.optimizer.micro_batches
    error = None
    for devices in range(max_devices, 0, -1):
        try:
            sizes = dict(zip(sharding.AXES, sharding.mesh_shape(mesh_cfg, devices), strict=True))
        except ConfigError as e:
            error = error or e
            continue
        if config.data.batch_size % (sizes["data"] * sizes["fsdp"] * micro) == 0:
            return sizes
    raise error or ConfigError(
        f"config.data.batch_size={config.data.batch_size} does not split over any mesh of "
        f"1..{max_devices} devices; pass --mesh"
    )


def main(argv: list[str] | None = None) -> None:
    from absl import flags
    from ml_collections import config_flags

    from infini_jax import cli

    config_flags.DEFINE_config_file("config", "configs/tiny.py", "Config file[:preset].")
    flags.DEFINE_string("mesh", "", "data:N,fsdp:N,tensor:N ('' = the config's mesh).")
    flags.DEFINE_integer(
        "devices",
        8,
        "Most devices to fill when the mesh has a -1 axis: the largest count up to this whose "
        "mesh splits the batch.",
    )
    flags.DEFINE_enum("accelerator", None, list(BY_NAME), "Only this row of the fit table.")
    flags.DEFINE_string("json", None, "Also write the plan here as JSON.")

    def run(_):
        f = flags.FLAGS
        axes = parse_mesh(f.mesh) if f.mesh else default_mesh(f.config, f.devices)
        # Fake CPU devices of the mesh's count; read when JAX starts its backend.
        count = math.prod(axes.values())
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={count}"
        )
        import jax

        jax.config.update("jax_platforms", "cpu")
        p = plan(f.config, axes)
        print(format_plan(p, f.accelerator))
        if f.json:
            storage.write_text(f.json, json.dumps(p, indent=1))

    cli.run(run, argv)


if __name__ == "__main__":
    main()
