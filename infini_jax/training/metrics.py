"""Metrics to `metrics.jsonl` and TensorBoard event files (tensorboardX: no TensorFlow).

In a `gs://` workdir both are written on local disk and reach the bucket at each `sync` (each
checkpoint, and the end): `metrics.jsonl` as a whole object, the TensorBoard events as one new
event file per sync, uploaded once (tensorboardX's own GCS writer uploads the whole growing
file at every flush: quadratic over a long run). TensorBoard reads the files of a directory
as one run.
"""

import json
import os
import shutil
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from infini_jax import storage
from infini_jax.parallel.accelerators import datasheet_flops


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
    """Writes on process 0 only, to metrics.jsonl, TensorBoard and `tracker` (W&B). On resume,
    lines past the restored step are dropped (`logged_until`: the last step an earlier attempt
    logged) and the tracker gets the rows it lacks."""

    def __init__(self, workdir: str, resume_step: int, enabled: bool, tracker=None):
        self.enabled = enabled
        self.tracker = tracker
        self.logged_until = 0
        self.remote = storage.join(workdir, "metrics.jsonl")
        self.tb_dir = storage.join(workdir, "tensorboard")
        self.tb = None
        self.rolls = 0  # event files uploaded so far (gs:// workdir)
        # TensorBoard hides the events a killed run logged past the step this one resumes from.
        self.purge_step = resume_step + 1 if resume_step else None
        if not enabled:
            return
        # A gs:// workdir is staged in a local directory; a local one is written in place.
        self.staging = tempfile.mkdtemp(prefix="infini_jax_") if storage.is_remote(workdir) else ""
        self.path = os.path.join(self.staging, "metrics.jsonl") if self.staging else self.remote
        if storage.exists(self.remote):
            rows = storage.read_jsonl(self.remote)
            self.logged_until = max((r["step"] for r in rows), default=0)
            kept = [r for r in rows if r["step"] <= resume_step]
            if self.tracker is not None:
                self.tracker.replay(kept)
            with open(self.path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)

    def _board(self):
        if self.tb is None:
            from tensorboardX import SummaryWriter

            local = os.path.join(self.staging, "tensorboard") if self.staging else self.tb_dir
            # A new file name per staged roll (tensorboardX names by the second).
            suffix = f".{os.getpid()}.{self.rolls}" if self.staging else ""
            self.tb = SummaryWriter(local, purge_step=self.purge_step, filename_suffix=suffix)
            self.purge_step = None
        return self.tb

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"step": step}
        for k, v in metrics.items():
            v = np.asarray(v)
            if v.ndim == 0:
                record[k] = float(v)
                self._board().add_scalar(k, float(v), step)
            else:
                record[k] = [float(x) for x in v.reshape(-1)]
                for i, x in enumerate(record[k]):
                    self._board().add_scalar(f"{k}/layer_{i}", x, step)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tracker is not None:
            self.tracker.log(step, metrics)

    def sync(self) -> None:
        """gs:// workdir: uploads `metrics.jsonl` and the events written since the last sync."""
        if not (self.enabled and self.staging):
            return
        if os.path.exists(self.path):
            storage.upload(self.path, self.remote)
        if self.tb is not None:
            self.tb.close()
            self.tb = None
            local = os.path.join(self.staging, "tensorboard")
            for name in sorted(os.listdir(local)):
                storage.upload(os.path.join(local, name), storage.join(self.tb_dir, name))
                os.remove(os.path.join(local, name))
            self.rolls += 1

    def close(self, sync: bool = True) -> None:
        """Flushes (uploads, for a gs:// workdir, if `sync`) and removes the staging directory."""
        if not self.enabled:
            return
        try:
            if sync:
                self.sync()
        finally:
            if self.tb is not None:
                self.tb.close()
                self.tb = None
            if self.staging:
                shutil.rmtree(self.staging, ignore_errors=True)
