r"""The measured FLOP/s ceiling: a large matmul in the compute dtype on the current device.

  python -m infini_jax.bench.peak [--dtype=float32|bfloat16] [--n=4096]

Compute dtype default: float32 on CPU (bf16 matmuls are slower there), bfloat16 on TPU/GPU.
The matmul accumulates in float32 (`preferred_element_type`), as the model's do.
"""

import argparse
import time

import jax
import jax.numpy as jnp


def default_dtype() -> str:
    return "float32" if jax.devices()[0].platform == "cpu" else "bfloat16"


def matmul_peak(dtype: str | None = None, n: int | None = None, seconds: float = 1.0) -> dict:
    """`{"bench": "peak", "dtype", "n", "flops_per_s", "device"}` of an n×n×n matmul."""
    dtype = dtype or default_dtype()
    cpu = jax.devices()[0].platform == "cpu"
    n = n or (2048 if cpu else 8192)
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), dtype)
    b = jax.random.normal(key_b, (n, n), dtype)
    f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    f(a, b).block_until_ready()
    start = time.perf_counter()
    once = f(a, b).block_until_ready() is not None and time.perf_counter() - start
    repeats = max(3, int(seconds / max(once, 1e-6)))
    start = time.perf_counter()
    for _ in range(repeats):
        out = f(a, b)
    out.block_until_ready()
    rate = 2 * n**3 * repeats / (time.perf_counter() - start)
    return {
        "bench": "peak",
        "attention": None,
        "seq_len": None,
        "dtype": dtype,
        "n": n,
        "flops_per_s": rate,
        "device": jax.devices()[0].device_kind,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m infini_jax.bench.peak")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--n", type=int, default=None)
    args = parser.parse_args(argv)
    r = matmul_peak(args.dtype, args.n)
    print(f"{r['device']}: {r['dtype']} {r['n']}³ matmul {r['flops_per_s'] / 1e9:,.1f} GFLOP/s")
    return r


if __name__ == "__main__":
    main()
