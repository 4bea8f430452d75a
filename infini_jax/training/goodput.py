"""Where a run's wall time went: every second of a training process charged to one activity,
and the workdir's ledger of every attempt (WORKDIR/goodput.json), summed in report.md.

Activities: start-up before the first step (imports, set-up, restore), compilation (moved out
of whatever activity it happened in, from JAX's own compile events), training steps, waiting for
data (host time in the input pipeline), blocking checkpoint work, validation, in-training
evals, and steps redone after a resume (the work a killed attempt did past its last checkpoint,
up to its last logging step). Goodput is the training steps' share of the wall time, over
every attempt. Not counted: what a killed attempt did after its last logging step, the time
between attempts (a queue, a requeue), and the end-of-run report, which comes after.
"""

import contextlib
import dataclasses
import datetime
import json
import time
from collections.abc import Iterator

import jax

from infini_jax import storage
from infini_jax.errors import Error

ACTIVITIES = (
    "startup",
    "compile",
    "train",
    "data",
    "checkpoint",
    "validation",
    "evals",
    "redone",
)
LEDGER = "goodput.json"
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_PROCESS_START = time.time()  # the package's import: as close to the process start as we get
_active: "Clock | None" = None  # the clock JAX's compile events are charged to
_started_once = False  # a process's first clock starts at the import, later ones when made


def _on_event(name: str, seconds: float, **_) -> None:
    if _active is not None and name in COMPILE_EVENTS:
        _active.compiled(seconds)


jax.monitoring.register_event_duration_secs_listener(_on_event)


class Clock:
    """Charges the wall time since `started` to one activity at a time (`startup` until the
    first `switch`); `totals()` always sums to the time elapsed. By default the process's first
    clock starts at the package's import (a training command's imports are its start-up), a
    later one (another run in the same process: a benchmark, a test) when it is made."""

    def __init__(self, started: float | None = None):
        global _started_once
        if started is None:
            started = time.time() if _started_once else _PROCESS_START
            _started_once = True
        self.started = datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat()
        self.seconds = dict.fromkeys(ACTIVITIES, 0.0)
        self.current = "startup"
        self.mark = time.perf_counter() - (time.time() - started)
        self.reported = dict(self.seconds)  # totals at the last `interval`

    def activate(self) -> "Clock":
        """Makes this the clock JAX's compilations are charged to; returns it."""
        global _active
        _active = self
        return self

    def switch(self, activity: str) -> str:
        """Charges the time since the last switch to the current activity, then starts
        `activity`; returns the one it replaced."""
        now = time.perf_counter()
        self.seconds[self.current] += now - self.mark
        self.mark, previous, self.current = now, self.current, activity
        return previous

    @contextlib.contextmanager
    def spend(self, activity: str) -> Iterator[None]:
        """The block's time goes to `activity`, then the clock returns to what it was doing."""
        previous = self.switch(activity)
        try:
            yield
        finally:
            self.switch(previous)

    def compiled(self, seconds: float) -> None:
        """A compilation of `seconds` inside the current activity: moved to `compile`."""
        self.seconds["compile"] += seconds
        self.seconds[self.current] -= seconds

    def totals(self) -> dict[str, float]:
        self.switch(self.current)
        return dict(self.seconds)

    def interval(self) -> dict[str, float]:
        """Seconds per activity since the previous call (metrics keys `time/<activity>_s`)."""
        now = self.totals()
        out = {f"time/{k}_s": now[k] - self.reported[k] for k in ACTIVITIES}
        self.reported = now
        return out


@dataclasses.dataclass
class Ledger:
    """WORKDIR/goodput.json: per attempt (each start of the training command on the workdir),
    when it started, the steps it ran and its seconds per activity. Written by process 0."""

    path: str
    attempts: list[dict]

    @classmethod
    def open(cls, workdir: str) -> "Ledger":
        path = storage.join(workdir, LEDGER)
        if not storage.exists(path):
            return cls(path, [])
        saved = storage.read_json(path)
        if not (isinstance(saved, dict) and isinstance(saved.get("attempts"), list)):
            raise Error(f"{path} is not a goodput ledger; delete it (only the report reads it)")
        return cls(path, saved["attempts"])

    def record(self, clock: Clock, first_step: int, last_step: int) -> None:
        """This attempt's entry (added at its first record), written to the workdir."""
        entry = {
            "started": clock.started,
            "steps": [first_step, last_step],
            "seconds": clock.totals(),
        }
        if self.attempts and self.attempts[-1]["started"] == clock.started:
            self.attempts[-1] = entry
        else:
            self.attempts.append(entry)
        storage.write_text(self.path, json.dumps({"attempts": self.attempts}, indent=1) + "\n")


def summary(attempts: list[dict]) -> dict:
    """Seconds per activity summed over `attempts`, the wall total, and the goodput."""
    seconds = {k: sum(a["seconds"].get(k, 0.0) for a in attempts) for k in ACTIVITIES}
    wall = sum(seconds.values())
    return {"seconds": seconds, "wall_s": wall, "goodput": seconds["train"] / max(wall, 1e-9)}


def report_lines(workdir: str) -> list[str]:
    """report.md lines: the whole run's time split over every attempt, and its goodput."""
    path = storage.join(workdir, LEDGER)
    if not storage.exists(path):
        return []
    attempts = Ledger.open(workdir).attempts
    s = summary(attempts)
    lines = [
        "",
        "## Where the time went",
        "",
        f"{len(attempts)} attempt(s), {s['wall_s']:.0f} s of wall time in the training "
        f"processes; goodput (training steps over wall time) {s['goodput']:.1%}.",
        "",
        "| activity | seconds | share |",
        "|---|---|---|",
    ]
    for k in ACTIVITIES:
        share = s["seconds"][k] / max(s["wall_s"], 1e-9)
        lines.append(f"| {k} | {s['seconds'][k]:.1f} | {share:.1%} |")
    return lines
