"""W&B tracking (offline, read back from its own files), where the time went (goodput), and
checkpoints by time."""

import json
import os
import signal
import sys
import time
import types

import pytest

from infini_jax import sections
from infini_jax.config import load_config, validate
from infini_jax.errors import ConfigError
from infini_jax.training import checkpoint, goodput, tracking
from tests import wandb_files
from tests.conftest import config_path, run_cli
from tests.test_train import SMALL, launch, losses, wait_for_step

pytest.importorskip("wandb")


def _ledger(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, goodput.LEDGER)) as f:
        return json.load(f)["attempts"]


@pytest.mark.slow
def test_a_killed_and_resumed_run_continues_one_wandb_run_and_reports_the_redone_work(tmp_path):
    killed = str(tmp_path / "killed")
    args = ("--config.total_steps=8", "--config.checkpoint_every_steps=2")
    wandb = ("--config.wandb.mode=offline", "--config.wandb.tags=('test','kill')")
    proc = launch(killed, *args, *wandb, wait=False)
    wait_for_step(killed, 5, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = max(losses(killed))  # the last step the killed attempt logged
    out = launch(killed, *args, *wandb, "--config.report.passkey_multiples=(1,)")

    with open(os.path.join(killed, tracking.RUN_FILE)) as f:
        run_id = json.load(f)["id"]
    assert f"W&B run {run_id}" in out
    # The killed attempt's W&B process wrote nothing out (offline W&B buffers until finish):
    # its directory is set aside, and the resumed attempt logged every step from metrics.jsonl.
    assert len(os.listdir(os.path.join(killed, "wandb", "killed"))) == 1
    (run,) = wandb_files.runs(killed)
    assert run["id"] == run_id and sorted(run["history"]) == list(range(1, 9))
    logged = {s: row["loss"] for s, row in run["history"].items()}
    assert logged == pytest.approx(losses(killed), rel=1e-6)  # the metrics.jsonl series
    assert {f"time/{a}_s" for a in goodput.ACTIVITIES} <= set(run["history"][8])
    for image in ("report/loss", "report/heatmap"):  # the report's images, at the end
        assert run["history"][8][image]["_type"] == "image-file"
    config = run["config"]
    assert config["total_steps"] == 8 and config["model"]["attention"] == "infini"
    assert config["wandb"]["tags"] == ["test", "kill"]
    info = config["run"]
    assert info["parameters"] > 0 and info["versions"]["jax"] and "git_commit" in info
    assert info["mesh"] == {"data": 1, "fsdp": 1, "tensor": 1}
    attempts = _ledger(killed)
    assert len(attempts) == 2 and attempts[1]["steps"][1] == 8
    resumed_from = attempts[1]["steps"][0] - 1
    assert resumed_from < first  # the checkpoint was older than the last logged step
    assert attempts[1]["seconds"]["redone"] > 0 and attempts[0]["seconds"]["redone"] == 0
    assert all(a["seconds"]["compile"] > 0 and a["seconds"]["train"] > 0 for a in attempts)
    # Goodput is the training steps' share of both attempts' wall time: the redone steps count
    # against it (a property of the ledger, not a comparison of two runs' timings, which the
    # machine's load decides).
    wall = sum(sum(a["seconds"].values()) for a in attempts)
    train = sum(a["seconds"]["train"] for a in attempts)
    s = goodput.summary(attempts)
    assert s["wall_s"] == pytest.approx(wall) and s["goodput"] == pytest.approx(train / wall)
    with open(os.path.join(killed, "report.md")) as f:
        report = f.read()
    assert "## Where the time went" in report and "2 attempt(s)" in report
    assert "| redone |" in report
    # A clean continuation (more steps) is a second attempt of the same run, new steps only.
    launch(killed, "--config.total_steps=10", *args[1:], *wandb)
    first_attempt, second = wandb_files.runs(killed)
    assert second["id"] == run_id and sorted(second["history"]) == [9, 10]


def test_time_split_sums_to_the_wall_time_and_compiles_are_moved_out():
    clock = goodput.Clock(started=goodput.time.time())
    with clock.spend("data"):
        goodput.time.sleep(0.05)
        clock.compiled(0.02)  # a compile of 20 ms inside the data wait
    clock.switch("train")
    goodput.time.sleep(0.03)
    totals = clock.totals()
    assert totals["compile"] == pytest.approx(0.02)
    assert totals["data"] == pytest.approx(0.03, abs=0.015)
    assert totals["train"] == pytest.approx(0.03, abs=0.015)
    assert sum(totals.values()) == pytest.approx(0.08, abs=0.02)
    interval = clock.interval()
    assert set(interval) == {f"time/{a}_s" for a in goodput.ACTIVITIES}
    assert clock.interval()["time/compile_s"] == 0.0  # nothing new since


def test_a_later_run_in_the_same_process_starts_its_clock_when_made():
    goodput.Clock()  # the process's first clock (or a later one: either way one exists now)
    goodput.time.sleep(0.1)
    later = goodput.Clock()  # e.g. the second run of a benchmark: not charged the first's time
    assert sum(later.totals().values()) < 0.05


def test_jax_compilations_are_charged_to_compile():
    import jax
    import jax.numpy as jnp

    clock = goodput.Clock(started=goodput.time.time()).activate()
    clock.switch("evals")
    jax.jit(lambda x: jnp.sin(x) @ x.T + 1.5)(jnp.ones((33, 17))).block_until_ready()
    assert clock.totals()["compile"] > 0


def _info(*steps: int) -> list:
    return [types.SimpleNamespace(step=s) for s in steps]


def test_retention_keeps_step_checkpoints_by_policy_and_only_the_newest_by_time():
    policy = checkpoint.Retention(every_steps=10, keep=2, permanent_every=30, last_step=95)
    steps = (10, 20, 30, 40, 45, 50, 57)  # 45 and 57: by time (or at a SIGTERM)
    kept = policy.should_preserve(_info(*steps))
    assert [s for s, k in zip(steps, kept, strict=True) if k] == [30, 40, 50, 57]
    steps = (10, 20, 30, 40, 45, 50, 57, 60, 95)  # 95: the last step counts as step-based
    kept = policy.should_preserve(_info(*steps))
    assert [s for s, k in zip(steps, kept, strict=True) if k] == [30, 60, 95]


@pytest.mark.slow
def test_checkpoints_by_time_are_temporary_and_a_resume_takes_the_newest(tmp_path):
    workdir = str(tmp_path)
    args = (
        "--config.total_steps=12",
        "--config.checkpoint_every_steps=4",
        "--config.keep_checkpoints=2",
        "--config.checkpoint_every_minutes=0.0001",  # every logging step (every step here)
    )
    ckpt = os.path.join(workdir, "checkpoints")

    def saved():  # the finished checkpoints (one being written has a temporary name)
        return (
            sorted(int(s) for s in os.listdir(ckpt) if s.isdigit()) if os.path.isdir(ckpt) else []
        )

    proc = launch(workdir, *args, wait=False)
    deadline = time.time() + 300
    while not any(s >= 5 and s % 4 for s in saved()):  # one by time after step 4's by steps
        assert proc.poll() is None and time.time() < deadline, "no checkpoint by time"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    newest = max(saved())
    assert newest % 4  # a checkpoint by time is the newest (killed right after it landed)
    assert 4 in saved()  # the one by steps is kept
    out = launch(workdir, *args)
    assert f"starting at step {newest}" in out
    assert sorted(int(s) for s in os.listdir(ckpt) if s.isdigit()) == [8, 12]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("wandb.mode", "on", "config.wandb.mode='on' must be one of disabled, offline, online"),
        ("wandb.tags", ("ok", ""), "config.wandb.tags=.* must be a tuple of non-empty strings"),
        ("wandb.project", "", "config.wandb.project is empty"),
        ("checkpoint_every_minutes", -1.0, "config.checkpoint_every_minutes=-1.0 must be a num"),
    ],
)
def test_bad_tracking_and_checkpoint_fields_are_one_line(field, value, message):
    config = load_config(config_path("tiny.py"))
    section, _, name = field.rpartition(".")
    (config[section] if section else config)[name] = value
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_wandb_without_the_package_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    config = load_config(config_path("tiny.py"))
    validate(config)  # disabled: not needed
    config.wandb.mode = "offline"
    with pytest.raises(
        ConfigError, match=r"needs the wandb package: pip install 'infini_jax\[wandb\]'"
    ):
        validate(config)


def test_a_corrupt_run_id_file_and_a_gcs_workdir_without_a_local_dir_are_one_line(tmp_path):
    (tmp_path / tracking.RUN_FILE).write_text('{"id": ')
    r = run_cli("infini_jax.train", f"--workdir={tmp_path}", "--config.wandb.mode=offline", *SMALL)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert f"{tmp_path}/{tracking.RUN_FILE} is not valid JSON" in r.stderr
    assert sorted(os.listdir(tmp_path)) == [tracking.RUN_FILE]  # nothing else written
    cfg = sections.WandbConfig(mode="offline")
    with pytest.raises(ConfigError, match="set --config.wandb.dir to a local directory"):
        cfg.files_dir("gs://bucket/run")
