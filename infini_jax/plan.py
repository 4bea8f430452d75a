r"""Plan before launch: will the train step compile, will it fit, and with which settings.

  python -m infini_jax.plan --config=configs/llama_300m_infini.py --topology=v5p-8 \
      [--slices=2] [--mesh=fsdp:4] [--search] [--json=plan.json]
  python -m infini_jax.plan --config=... --mesh=data:2,fsdp:4,tensor:1 [--accelerator=h100]

Nothing is allocated and nothing runs: shapes come from `jax.eval_shape`, and the very step
`train` runs (`train_step.make_training`: shardings, donation, micro-batches, remat, kernel) is
compiled for the target. With `--topology` the target is a Cloud TPU slice compiled by the TPU
compiler (libtpu, `pip install -e ".[tpu]"`) on any machine: its memory analysis is that
compiler's per-chip HBM, and the attention kernel `auto` picks for TPU (splash, a Mosaic call)
is in the compiled program. Without it, the step is compiled for fake CPU devices of the mesh's
count and the CPU compiler's temporaries are an estimate of an accelerator's. A plan "fits"
when its peak leaves `1 - HEADROOM` of the chip's memory free. `--search` compiles a bounded
grid of remat policy × micro-batches × batch (`infini_jax.planning.search`).
"""

import json
import math
import os

from infini_jax import storage
from infini_jax.errors import ConfigError
from infini_jax.parallel import tpu
from infini_jax.parallel.accelerators import BY_NAME
from infini_jax.planning.plan import (
    cpu_target,
    default_mesh,
    format_plan,
    parse_mesh,
    plan,
    topology_mesh,
    tpu_target,
)


def main(argv: list[str] | None = None) -> None:
    from absl import flags
    from ml_collections import config_flags

    from infini_jax import cli

    config_flags.DEFINE_config_file("config", "configs/tiny.py", "Config file[:preset].")
    flags.DEFINE_string(
        "topology",
        "",
        "Compile with the TPU compiler for this Cloud TPU slice (v4-8, v5e-16, v5p-8, v6e-256, "
        "...: chips for v5e/v6e, TensorCores for v4/v5p); '' = the CPU estimate.",
    )
    flags.DEFINE_integer(
        "slices", 1, "With --topology: slices joined over DCN (multi-slice).", lower_bound=1
    )
    flags.DEFINE_string("mesh", "", "data:N,fsdp:N,tensor:N per slice ('' = the config's mesh).")
    flags.DEFINE_integer(
        "devices",
        8,
        "Without --topology: most devices to fill when the mesh has a -1 axis: the largest "
        "count up to this whose mesh splits the batch.",
        lower_bound=1,
    )
    flags.DEFINE_enum("accelerator", None, list(BY_NAME), "Only this row of the fit table.")
    flags.DEFINE_bool(
        "search",
        False,
        "Compile remat policy × micro-batches × batch per data shard and mark the best "
        "setting (infini_jax/planning/search.py: 6 policies × micro-batches {1,2,4} × "
        "--search_batches; at most 54 compiles, pruned: a policy stops at the first batch "
        "that fits with no micro-batch count, and costlier policies stop once one fits the "
        "largest batch without micro-batches).",
    )
    flags.DEFINE_list("search_batches", ["1", "2", "4", "8"], "--search: sequences per shard.")
    flags.DEFINE_string("json", None, "Also write the plan (or the search) here as JSON.")

    def run(_):
        f = flags.FLAGS
        batches = cli.int_list(f.search_batches, "search_batches")
        if f.json:
            cli.writable(f.json, "json", directory=False)
        if f.topology:
            tpu.parse_slice(f.topology)  # an unknown name: one line, before libtpu starts
        import jax

        jax.config.update("jax_platforms", "cpu")  # the host runs nothing; the target compiles
        if f.topology:
            target = tpu_target(f.topology, f.slices)
            axes = topology_mesh(f.config, target, f.mesh)
        else:
            if f.slices != 1:
                raise ConfigError("--slices needs --topology (a multi-slice TPU target)")
            axes = parse_mesh(f.mesh) if f.mesh else default_mesh(f.config, f.devices)
            # Fake CPU devices of the mesh's count; read when JAX starts its backend.
            os.environ["XLA_FLAGS"] = (
                os.environ.get("XLA_FLAGS", "")
                + f" --xla_force_host_platform_device_count={math.prod(axes.values())}"
            )
            target = cpu_target(math.prod(axes.values()))
        if f.search:
            from infini_jax.planning import search

            result = search.search(f.config, axes, target, batches, log=print)
            print(search.format_search(result))
        else:
            result = plan(f.config, axes, target)
            print(format_plan(result, f.accelerator))
        if f.json:
            storage.write_text(f.json, json.dumps(result, indent=1))

    cli.run(run, argv)


if __name__ == "__main__":
    main()
