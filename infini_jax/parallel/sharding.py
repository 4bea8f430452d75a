"""Device mesh (data, fsdp, tensor) and shardings from logical axis names.

With `mesh.slices > 1` (TPU multi-slice) the data axis spans the slices: each slice holds a
data × fsdp × tensor block over its own ICI, and only the data-parallel gradient reduction
crosses the slower data-center network (DCN) between them.

Parameters carry logical axis names (see `infini_jax.model.layers`); `config.sharding_rules` maps
them onto mesh axes. Optimizer-state leaves that mirror a parameter (Adam's moments) get that
parameter's sharding; everything else (counters, scalars) is replicated. The batch is split over
`data` × `fsdp`.
"""

import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from infini_jax.errors import ConfigError
from infini_jax.sections import AXES, MeshConfig

BATCH = PartitionSpec(("data", "fsdp"))


def mesh_shape(mesh_cfg: MeshConfig, devices: int) -> tuple[int, int, int]:
    """The (data, fsdp, tensor) sizes of ONE slice of `devices // mesh.slices` devices: the
    one `-1` axis resolved; the product must equal that count."""
    if devices % mesh_cfg.slices:
        raise ConfigError(
            f"config.mesh.slices={mesh_cfg.slices} does not divide the {devices} devices; "
            "set it to the number of TPU slices in the job"
        )
    devices //= mesh_cfg.slices
    sizes = [getattr(mesh_cfg, a) for a in AXES]
    if -1 in sizes:
        known = math.prod(s for s in sizes if s != -1)
        if devices % known:
            raise ConfigError(
                f"config.mesh: {dict(zip(AXES, sizes, strict=True))} cannot fill "
                f"{devices} devices ({devices} is not a multiple of {known})"
            )
        sizes[sizes.index(-1)] = devices // known
    if math.prod(sizes) != devices:
        raise ConfigError(
            f"config.mesh: data×fsdp×tensor = {'×'.join(map(str, sizes))} = "
            f"{math.prod(sizes)} but there are {devices} devices; make the product "
            "equal the device count (or set one axis to -1)"
        )
    return tuple(sizes)


def make_mesh(mesh_cfg: MeshConfig, devices=None) -> Mesh:
    """The (data, fsdp, tensor) mesh of `devices` (default: all), `mesh.slices` slices along
    data. Devices of a multi-slice TPU job (or `infini_jax.parallel.tpu.compile_devices`) carry
    their `slice_index`; elsewhere (CPU tests, GPUs) consecutive blocks of devices stand for
    slices."""
    devices = list(devices if devices is not None else jax.devices())
    found = {getattr(d, "slice_index", 0) for d in devices}
    if len(found) > 1 and len(found) != mesh_cfg.slices:
        raise ConfigError(
            f"config.mesh.slices={mesh_cfg.slices} but the job's devices span {len(found)} TPU "
            f"slices; set --config.mesh.slices={len(found)}"
        )
    shape = mesh_shape(mesh_cfg, len(devices))
    auto = (jax.sharding.AxisType.Auto,) * 3
    if mesh_cfg.slices == 1:
        return jax.make_mesh(shape, AXES, axis_types=auto, devices=devices)
    dcn = (mesh_cfg.slices, 1, 1)
    if all(hasattr(d, "slice_index") for d in devices):
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_hybrid_device_mesh(shape, dcn, devices)
    else:
        ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
        n = math.prod(shape)
        blocks = [ordered[i * n : (i + 1) * n] for i in range(mesh_cfg.slices)]
        grid = np.concatenate([jax.make_mesh(shape, AXES, devices=b).devices for b in blocks])
    return Mesh(grid, AXES, axis_types=auto)


def check_batch(batch_size: int, mesh: Mesh, micro_batches: int) -> None:
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if batch_size % (shards * micro_batches):
        raise ConfigError(
            f"config.data.batch_size={batch_size} is not divisible by data×fsdp "
            f"({shards}) × optimizer.micro_batches ({micro_batches}); make it a "
            "multiple"
        )


def param_shardings(logical_axes, mesh: Mesh, sharding_rules) -> object:
    """A tree of `NamedSharding` for `logical_axes` (from `model.param_logical_axes`), by
    `config.sharding_rules`."""
    rules = tuple((name, axes if axes else None) for name, axes in sharding_rules)
    return nn.logical_to_mesh_sharding(logical_axes, mesh, rules)


def _names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def tree_shardings(abstract_tree, params_sharding, mesh: Mesh):
    """Shardings for any tree containing parameter-shaped leaves (state, optimizer state):
    a leaf whose path ends with a parameter's path and has its shape gets its sharding."""
    by_path = {}
    for path, sharding in jax.tree_util.tree_flatten_with_path(params_sharding)[0]:
        by_path[_names(path)] = sharding
    replicated = NamedSharding(mesh, PartitionSpec())

    def pick(path, leaf):
        names = _names(path)
        for start in range(len(names)):
            sharding = by_path.get(names[start:])
            if sharding is not None and len(sharding.spec) <= leaf.ndim:
                return sharding
        return replicated

    return jax.tree_util.tree_map_with_path(pick, abstract_tree)


def check_divisible(abstract_tree, shardings) -> None:
    """One `ConfigError` line for the first leaf whose sharded axis does not split evenly
    over its mesh axes (e.g. 2 kv heads over tensor=4), before any compile."""
    leaves = jax.tree_util.tree_leaves_with_path(abstract_tree)
    for (path, leaf), sh in zip(leaves, jax.tree.leaves(shardings), strict=True):
        for dim, axes in enumerate(sh.spec):
            names = axes if isinstance(axes, tuple) else (axes,)
            ways = math.prod(sh.mesh.shape[a] for a in names if a is not None)
            if leaf.shape[dim] % ways:
                where = "/".join(_names(path))
                raise ConfigError(
                    f"{where}: axis {dim} of {leaf.shape} does not split over "
                    f"{'×'.join(n for n in names if n)}={ways} (config.mesh); choose mesh sizes "
                    "that divide it, or map that logical axis to None in config.sharding_rules"
                )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, BATCH)


class InMesh:
    """A jitted function that is called and lowered under `jax.set_mesh(mesh)`.

    Tracing then sees the target's mesh: a fused attention kernel runs in `jax.shard_map` over
    it (Pallas kernels are not partitioned by XLA) and `ops.kernels` picks the kernel and its
    interpret mode from the mesh's platform, not the host's (a compile-only TPU mesh gets the
    real Mosaic kernel). Every path that compiles a model step goes through one of these."""

    def __init__(self, fn, mesh: Mesh):
        self.fn, self.mesh = fn, mesh

    def __call__(self, *args, **kwargs):
        with jax.set_mesh(self.mesh):
            return self.fn(*args, **kwargs)

    def lower(self, *args, **kwargs):
        with jax.set_mesh(self.mesh):
            return self.fn.lower(*args, **kwargs)
