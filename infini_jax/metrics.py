"""Metrics to `metrics.jsonl` and TensorBoard event files (tensorboardX: no TensorFlow)."""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from infini_jax.accelerators import datasheet_flops


def measured_matmul_flops(n: int = 1024, repeats: int = 5, dtype: str = "float32") -> float:
    """FLOP/s of an n×n×n matmul of random `dtype` inputs with float32 accumulation, timed over
    `repeats` products after a warm-up (the ceiling MFU is measured against)."""
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), dtype)
    b = jax.random.normal(key_b, (n, n), dtype)
    f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    f(a, b).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = f(a, b)
    out.block_until_ready()
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def peak_flops() -> tuple[float, str]:
    """Per-device peak: the datasheet for known accelerators, else a matmul measured now."""
    kind = jax.devices()[0].device_kind
    peak = datasheet_flops(kind)
    if peak is not None:
        return peak, f"datasheet {kind}"
    return measured_matmul_flops(), f"measured f32 matmul on {kind}"


class Writer:
    """Writes on process 0 only. On resume, lines past the restored step are dropped."""

    def __init__(self, workdir: str, resume_step: int, enabled: bool):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.tb = None
        if not enabled:
            return
        if os.path.exists(self.path):
            with open(self.path) as f:
                kept = [ln for ln in f if ln.strip() and json.loads(ln)["step"] <= resume_step]
            with open(self.path, "w") as f:
                f.writelines(kept)
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"step": step}
        for k, v in metrics.items():
            v = np.asarray(v)
            if v.ndim == 0:
                record[k] = float(v)
                self.tb.add_scalar(k, float(v), step)
            else:
                record[k] = [float(x) for x in v.reshape(-1)]
                for i, x in enumerate(record[k]):
                    self.tb.add_scalar(f"{k}/layer_{i}", x, step)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
