"""`config.profile`: a `jax.profiler` trace of a few training steps, in WORKDIR/profile.

View it with TensorBoard's profile plugin (`pip install tensorboard-plugin-profile`, then
`tensorboard --logdir=WORKDIR/profile`) or with xprof; docs/performance.md says how to read
the segment scan in it. Every process traces its own host (one `<host>.xplane.pb` each). For a
`gs://` workdir the trace is written on local disk and uploaded when it stops.
"""

import os
import tempfile

import jax

from infini_jax import storage


class StepProfiler:
    """Traces steps `start_step` .. `start_step + num_steps - 1` (`start_step` 0 = off)."""

    def __init__(self, workdir: str, start_step: int, num_steps: int):
        self.first, self.last = start_step, start_step + num_steps - 1
        self.target = storage.join(workdir, "profile")
        self.local = ""  # the directory being traced into, while tracing

    def before(self, step: int) -> None:
        """Call before dispatching `step`."""
        if self.first and step == self.first:
            remote = storage.is_remote(self.target)
            self.local = tempfile.mkdtemp(prefix="infini_jax_profile_") if remote else self.target
            jax.profiler.start_trace(self.local)

    def after(self, step: int, outputs) -> str:
        """Call after dispatching `step` with its outputs; returns the trace directory once the
        last traced step has run, else ""."""
        if not self.local or step != self.last:
            return ""
        jax.block_until_ready(outputs)  # the traced steps' device work, whole
        return self.stop()

    def stop(self) -> str:
        """Stops a trace in progress (also when the run ends early); returns where it is."""
        if not self.local:
            return ""
        jax.profiler.stop_trace()
        if self.local != self.target:  # staged for a gs:// workdir
            for folder, _, files in os.walk(self.local):
                for name in files:
                    path = os.path.join(folder, name)
                    relative = os.path.relpath(path, self.local)
                    storage.upload(path, storage.join(self.target, relative))
        self.local = ""
        return self.target
