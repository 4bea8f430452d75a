"""Multi-host training through `launch/local.sh`: 2 processes × 4 fake CPU devices (gloo).

That 2 processes train as 1 process × 8 devices, and that their checkpoint continues in one
process, is tests/test_slurm.py's first test (the same processes, started by SLURM)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.test_train import SMALL, launch, losses

MESH = ["--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2"]
LOCAL_SH = os.path.join(ROOT, "launch", "local.sh")


def local_job(workdir, *extra):
    """The small training config as 2 processes × 4 fake devices through launch/local.sh."""
    return launch(workdir, *MESH, *extra, prefix=("bash", LOCAL_SH, "2", "4", "--"))


def _process_with_id(parent: int, process_id: int) -> int | None:
    """The pid of the local job's process with INFINI_JAX_PROCESS_ID=process_id."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if b"infini_jax.train" in cmdline and f"INFINI_JAX_PROCESS_ID={process_id}".encode() in env:
            if f"INFINI_JAX_COORDINATOR=127.0.0.1:{parent}".encode() in env:
                return int(pid)
    return None


@pytest.mark.slow
def test_killing_one_process_ends_the_whole_job_with_an_error(tmp_path):
    port = 12461
    env = dict(os.environ, LOCAL_PORT=str(port))
    cmd = ["bash", LOCAL_SH, "2", "4", "--", sys.executable, "-m", "infini_jax.train"]
    cmd += ["--config=configs/tiny.py", f"--workdir={tmp_path}", *SMALL, *MESH]
    cmd += ["--config.total_steps=100000", "--config.report.passkey_multiples=()"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    metrics = tmp_path / "metrics.jsonl"
    while not (metrics.exists() and metrics.read_text().strip()):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.5)
    victim = _process_with_id(port, 1)
    survivor = _process_with_id(port, 0)
    assert victim and survivor
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    _, err = proc.communicate(timeout=60)
    assert time.time() - killed_at < 30
    assert proc.returncode != 0
    assert "process 1 exited with status" in err
    deadline = time.time() + 5
    while _alive(survivor) and time.time() < deadline:  # no hung process is left behind
        time.sleep(0.1)
    assert not _alive(survivor)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


@pytest.mark.slow
def test_sharded_data_resumes_exactly_on_the_same_process_count(tmp_path):
    """host_sharding="sharded": every process's iterator state is gathered into the checkpoint;
    a 2-process resume continues each process's own stream bitwise."""
    workdir = str(tmp_path)
    sharded = (
        "--config.data.host_sharding=sharded",
        "--config.data.packing=concat",  # documents of 128-256 tokens split across rows, so
        "--config.data.synthetic.max_length=256",  # each process holds a different remainder
        "--config.report.passkey_multiples=()",
    )
    local_job(workdir, "--config.total_steps=4", "--config.checkpoint_every_steps=2", *sharded)
    first = losses(workdir)
    with open(os.path.join(workdir, "checkpoints", "2", "data", "metadata")) as f:
        saved = json.load(f)
    assert saved["process_count"] == 2 and saved["processes"][0] != saved["processes"][1]
    shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))
    out = local_job(workdir, "--config.total_steps=4", *sharded)
    assert "starting at step 2" in out
    again = losses(workdir)
    assert [again[3], again[4]] == [first[3], first[4]]
