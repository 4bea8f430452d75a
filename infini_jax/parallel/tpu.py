"""Cloud TPU slices as compile-only devices: the TPU compiler (libtpu) on any machine.

`plan --topology=v5p-8` compiles the train step for a TPU slice without one: libtpu's
`get_topology_desc` returns devices that can be compiled for but not run on. This module maps
the names users type for Cloud TPU slices to the compiler's topology strings, and keeps libtpu
quiet on hosts that are not TPU VMs.

Names count what Google counts: chips for v5e and v6e (`v5e-256` = 16×16 chips), TensorCores
for v4 and v5p, two per chip (`v5p-8` = 2×2×1 = 4 chips). Memory per chip is the datasheet's
(`infini_jax.parallel.accelerators`).
"""

import dataclasses
import glob
import importlib.util
import math
import os

from infini_jax.errors import ConfigError, Error
from infini_jax.parallel.accelerators import BY_NAME

INSTALL = 'pip install -e ".[tpu]"'
_GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips on a TPU VM's PCI bus (what JAX itself checks)


@dataclasses.dataclass(frozen=True)
class Slice:
    """One Cloud TPU slice shape."""

    name: str  # what users type: "v5p-8", "v5e-256"
    generation: (
        str  # the accelerator's row in `infini_jax.parallel.accelerators`: v4, v5e, v5p, v6e
    )
    topology: str  # the TPU compiler's topology string: "v5p:2x2x1"
    chips: int

    @property
    def memory_gib(self) -> float:
        """HBM per chip (datasheet)."""
        return BY_NAME[self.generation].memory_gib


# Chip grids of the slices Cloud TPU offers (3-D torus for v4/v5p, 2-D for v5e/v6e).
_GRIDS_3D = ("2x2x1", "2x2x2", "2x2x4", "2x4x4", "4x4x4", "4x4x8", "4x8x8", "8x8x8", "8x8x16")
_GRIDS_2D = ("1x1", "2x2", "2x4", "4x4", "4x8", "8x8", "8x16", "16x16")


def _slices() -> dict[str, Slice]:
    out = {}
    for gen, grids, per_name in (("v4", _GRIDS_3D, 2), ("v5p", _GRIDS_3D, 2)):
        for grid in grids:
            chips = math.prod(int(x) for x in grid.split("x"))
            out[f"{gen}-{chips * per_name}"] = Slice(
                f"{gen}-{chips * per_name}", gen, f"{gen}:{grid}", chips
            )
    for gen in ("v5e", "v6e"):
        for grid in _GRIDS_2D:
            chips = math.prod(int(x) for x in grid.split("x"))
            out[f"{gen}-{chips}"] = Slice(f"{gen}-{chips}", gen, f"{gen}:{grid}", chips)
    return out


SLICES = _slices()
ALIASES = {f"v5litepod-{n.split('-')[1]}": n for n in SLICES if n.startswith("v5e-")}


def parse_slice(name: str) -> Slice:
    """A Cloud TPU name (`v5p-8`, `v5litepod-16`) or a topology string of the table
    (`v5p:2x2x1`) → its `Slice`; one `ConfigError` line listing the known names otherwise."""
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key in SLICES:
        return SLICES[key]
    for s in SLICES.values():
        if s.topology == key:
            return s
    by_gen: dict[str, list[str]] = {}
    for s in SLICES.values():
        by_gen.setdefault(s.generation, []).append(s.name.split("-")[1])
    known = "; ".join(f"{g}-{{{','.join(n)}}}" for g, n in by_gen.items())
    raise ConfigError(f"--topology={name!r} is not a known TPU slice; use one of {known}")


def has_tpu_chips() -> bool:
    """Whether this host (or container) has TPU chips: TPU device files (`/dev/accel*` on v4
    and v5e, `/dev/vfio/<n>` on v5p and v6e, as a TPU VM or a GKE TPU pod has them) or Google
    devices on the PCI bus (what JAX itself checks)."""
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
        return True
    for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(vendor) as f:
                if f.read().strip() == _GOOGLE_PCI_VENDOR:
                    return True
        except OSError:
            continue
    return False


def quiet_libtpu() -> None:
    """On a host without TPU chips, gives libtpu the two settings it otherwise asks for on
    stderr at every JAX start (~6 lines: accelerator type, worker hostnames), and lets several
    processes load it at once (its lockfile guards chips this host does not have: two
    compile-only plans, or two test workers). On a TPU VM these belong to the runtime and are
    left alone."""
    if importlib.util.find_spec("libtpu") is None or has_tpu_chips():
        return
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def compile_devices(tpu: Slice, num_slices: int = 1) -> list:
    """Compile-only devices of `num_slices` slices of `tpu` (with `slice_index` when > 1).

    v4 is described with megacore (one device per chip, as a v4 TPU VM runs); single-chip v5e
    and v6e with a 1×1×1 host. An `Error` line if libtpu is not installed."""
    if importlib.util.find_spec("libtpu") is None:
        raise Error(f"--topology needs the TPU compiler (libtpu): {INSTALL}")
    quiet_libtpu()
    from jax.experimental import topologies

    kwargs = {}
    if tpu.generation == "v4":
        kwargs["chip_config_name"] = "megacore"
    if tpu.chips == 1:
        kwargs["chips_per_host_bounds"] = (1, 1, 1)
    if num_slices > 1:
        kwargs["num_slices"] = num_slices
    desc = topologies.get_topology_desc(platform="tpu", topology_name=tpu.topology, **kwargs)
    return list(desc.devices)
