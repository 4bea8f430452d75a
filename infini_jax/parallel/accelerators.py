"""Datasheet figures of the accelerators the project plans for and reports MFU against."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Accelerator:
    name: str  # the name `plan --accelerator` takes
    device_kinds: tuple[str, ...]  # prefixes of `jax.devices()[0].device_kind`
    bf16_flops: float  # dense bf16 peak per chip, FLOP/s
    memory_gib: float  # device memory per chip


ACCELERATORS = (
    Accelerator("v4", ("TPU v4",), 275e12, 32),
    Accelerator("v5e", ("TPU v5 lite", "TPU v5e"), 197e12, 16),
    Accelerator("v5p", ("TPU v5p", "TPU v5"), 459e12, 95),
    Accelerator("v6e", ("TPU v6 lite", "TPU v6e"), 918e12, 32),
    Accelerator("a100-40gb", ("NVIDIA A100",), 312e12, 40),
    Accelerator("a100-80gb", ("NVIDIA A100",), 312e12, 80),
    Accelerator("h100", ("NVIDIA H100",), 989e12, 80),
    Accelerator("h200", ("NVIDIA H200",), 989e12, 141),
)
BY_NAME = {a.name: a for a in ACCELERATORS}


def datasheet_flops(device_kind: str) -> float | None:
    """The bf16 datasheet peak of a device kind, or None for one not in the table (CPU)."""
    for a in ACCELERATORS:
        if device_kind.startswith(a.device_kinds):
            return a.bf16_flops
    return None
