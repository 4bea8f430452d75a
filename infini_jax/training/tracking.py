"""Weights & Biases tracking (`config.wandb`), beside `metrics.jsonl` and TensorBoard.

Process 0 logs. The W&B run id is kept in WORKDIR/wandb_run.json, so a resumed, requeued or
re-submitted run continues the same W&B run (`resume="allow"`); an offline run writes one
directory per attempt under the same id, which `wandb sync` joins. The step axis is the
training step. Steps a killed attempt logged past its last checkpoint are redone by the next
attempt (bitwise the same) and not logged twice. Metric names are those of `metrics.jsonl`; a
per-layer list `name` is logged as `name/layer_i`, as in TensorBoard.
"""

import importlib.metadata
import importlib.util
import json
import os
import secrets
import subprocess
from typing import Any

import numpy as np

from infini_jax import storage
from infini_jax.errors import check
from infini_jax.sections import WandbConfig

RUN_FILE = "wandb_run.json"  # {"id": ...}: the W&B run this workdir continues
PACKAGES = ("infini_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "wandb")


def saved_state(workdir: str) -> dict | None:
    """What `workdir` keeps of its W&B run (None: no run yet): the id, the last step the run
    holds for sure, and the offline attempt directories that finished cleanly. A corrupt file
    is one `Error`."""
    path = storage.join(workdir, RUN_FILE)
    if not storage.exists(path):
        return None
    saved = storage.read_json(path)
    ok = (
        isinstance(saved, dict)
        and isinstance(saved.get("id"), str)
        and saved["id"].isalnum()
        and isinstance(saved.get("logged_until", 0), int)
        and isinstance(saved.get("attempts", []), list)
    )
    check(
        ok,
        f'{path} holds no W&B run state ({{"id": "...", ...}}); restore it, or delete it to '
        "start a new W&B run",
    )
    return {"logged_until": 0, "attempts": [], **saved}


def check_start(cfg: WandbConfig, workdir: str) -> None:
    """What a run's tracking needs, checked before any work: a local files directory, and a
    readable run id file where one exists."""
    if cfg.mode != "disabled":
        cfg.files_dir(workdir)
        saved_state(workdir)


def git_commit() -> str:
    """The commit of the infini_jax source tree ("+dirty" with uncommitted changes), or ""."""
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD")
        return commit + ("+dirty" if commit and git("status", "--porcelain", "--", ".") else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def versions() -> dict[str, str]:
    """Installed versions of the packages a run depends on (absent ones left out)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """`metrics` as W&B takes them: scalars by name, per-layer lists as `name/layer_i`."""
    out = {}
    for k, v in metrics.items():
        v = np.asarray(v, dtype=np.float64)
        if v.ndim == 0:
            out[k] = float(v)
        else:
            out |= {f"{k}/layer_{i}": float(x) for i, x in enumerate(v.reshape(-1))}
    return out


class Tracker:
    """Process 0's W&B run, or nothing (`mode="disabled"`, other processes): every method is
    then a no-op.

    A W&B process killed with its run (SIGKILL, a node lost) loses what it had not written
    out: offline, all of that attempt. So `metrics.jsonl` is the record: each attempt first
    logs (`replay`) the rows past the last step the W&B run holds for sure (`logged_until`,
    saved at each clean finish; online, also what the server reports), and the directory of
    a killed offline attempt is moved to `wandb/killed/`, so `wandb sync` sees every step once.

    Args:
      cfg: the run's `config.wandb`.
      workdir: the run's workdir (WORKDIR/wandb_run.json keeps the run's state).
      config: the whole config as a dict (the W&B run's config), with `info` under "run".
      info: what else identifies the run: parameter count, mesh, commit, versions.
    """

    def __init__(self, cfg: WandbConfig, workdir: str, config: dict, info: dict):
        self.run = None
        self.logged_until = self.last = 0
        if cfg.mode == "disabled":
            return
        import wandb

        self.path = storage.join(workdir, RUN_FILE)
        self.state = saved_state(workdir) or {
            "id": secrets.token_hex(4),
            "logged_until": 0,
            "attempts": [],
        }
        self._write_state()
        files = cfg.files_dir(workdir)
        os.makedirs(files, exist_ok=True)
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity or None,
            name=cfg.name or storage.basename(workdir.rstrip("/")),
            group=cfg.group or None,
            tags=list(cfg.tags),
            id=self.state["id"],
            resume="allow",
            dir=files,
            mode=cfg.mode,
            config={**config, "run": info},
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )
        self.logged_until = self.state["logged_until"]
        if cfg.mode == "online":  # the server's own count: what it got before a kill
            self.logged_until = max(self.logged_until, self.run.step - 1)
        self.attempt = os.path.basename(os.path.dirname(self.run.dir.rstrip("/")))
        if cfg.mode == "offline":
            self._set_aside_killed(os.path.join(files, "wandb"))

    @property
    def id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def _write_state(self) -> None:
        storage.write_text(self.path, json.dumps(self.state) + "\n")

    def _set_aside_killed(self, root: str) -> None:
        """Offline attempt directories of this run that did not finish cleanly (their steps
        are replayed by this attempt) go to `root`/killed/."""
        done = set(self.state["attempts"]) | {self.attempt}
        suffix = f"-{self.state['id']}"
        for name in sorted(os.listdir(root)):
            if name.startswith("offline-run-") and name.endswith(suffix) and name not in done:
                os.makedirs(os.path.join(root, "killed"), exist_ok=True)
                os.replace(os.path.join(root, name), os.path.join(root, "killed", name))

    def replay(self, rows: list[dict]) -> None:
        """Logs the `metrics.jsonl` rows (each with its "step") that the W&B run lacks."""
        for row in rows:
            self.log(row["step"], {k: v for k, v in row.items() if k != "step"})

    def log(self, step: int, metrics: dict) -> None:
        if self.run is not None and step > max(self.logged_until, self.last):
            self.run.log(scalars(metrics), step=step)
            self.last = step

    def images(self, paths: dict[str, str]) -> None:
        """Logs the report's images (name → PNG path; missing files skipped) as media, at
        the last logged step."""
        if self.run is None:
            return
        import wandb

        media = {
            f"report/{name}": wandb.Image(path)
            for name, path in paths.items()
            if os.path.exists(path)
        }
        if media:
            self.run.log(media, step=max(self.last, self.logged_until))

    def finish(self, exit_code: int = 0) -> None:
        """Closes the run; a clean finish records what the W&B run now holds for sure."""
        if self.run is None:
            return
        self.run.finish(exit_code=exit_code)
        self.run = None
        self.state["logged_until"] = max(self.logged_until, self.last)
        self.state["attempts"].append(self.attempt)
        self._write_state()
