r"""The measured FLOP/s ceiling: a large matmul in the compute dtype on the current device.

  python -m infini_jax.bench.peak [--dtype=float32|bfloat16] [--n=4096]

Compute dtype default: float32 on CPU (bf16 matmuls are slower there), bfloat16 on TPU/GPU.
The matmul accumulates in float32 (`preferred_element_type`), as the model's do.
"""

import jax

from infini_jax.training.metrics import measured_matmul_flops


def default_dtype() -> str:
    return "float32" if jax.devices()[0].platform == "cpu" else "bfloat16"


def matmul_peak(dtype: str | None = None, n: int | None = None, repeats: int | None = None) -> dict:
    """`{"bench": "peak", "dtype", "n", "flops_per_s", "device"}` of an n×n×n matmul."""
    dtype = dtype or default_dtype()
    cpu = jax.devices()[0].platform == "cpu"
    n = n or (2048 if cpu else 8192)
    repeats = repeats or (10 if cpu else 100)  # about 0.4 s on 2 CPU cores, 0.2 s on an H100
    return {
        "bench": "peak",
        "attention": None,
        "seq_len": None,
        "dtype": dtype,
        "n": n,
        "flops_per_s": measured_matmul_flops(n, repeats, dtype),
        "device": jax.devices()[0].device_kind,
    }


def printed_peak() -> dict:
    """`matmul_peak()`, printed as one line: every benchmark's ratios are against it."""
    peak = matmul_peak()
    print(f"peak: {peak['flops_per_s'] / 1e9:,.0f} GFLOP/s ({peak['dtype']} matmul)")
    return peak


def main(argv: list[str] | None = None) -> None:
    from absl import flags

    from infini_jax import cli

    flags.DEFINE_enum(
        "dtype", None, ["float32", "bfloat16"], "float32 or bfloat16 (default: by platform)."
    )
    flags.DEFINE_integer("n", None, "Matrix size (default: by platform).", lower_bound=1)

    def run(_):
        r = matmul_peak(flags.FLAGS.dtype, flags.FLAGS.n)
        print(f"{r['device']}: {r['dtype']} {r['n']}³ matmul {r['flops_per_s'] / 1e9:,.1f} GFLOP/s")

    cli.run(run, argv)


if __name__ == "__main__":
    main()
