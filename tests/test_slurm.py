"""`launch/slurm/train.sbatch` and `sweep --launcher=slurm` on a real SLURM cluster: munge,
slurmctld and two slurmd nodes on this host (tests/slurm.py), one CPU each, 4 fake JAX devices
per task. With CI=true a host without SLURM fails these tests; elsewhere they skip."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import slurm
from tests.conftest import ROOT
from tests.test_train import SMALL, launch, losses

pytestmark = pytest.mark.slow

MESH = ["--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2"]
CPU_NODE = ["--ntasks-per-node=1", "--cpus-per-task=1", "--gpus-per-task=0"]
STEPS = 12
RUN = [*SMALL, *MESH, f"--config.total_steps={STEPS}", "--config.checkpoint_every_steps=4"]
RUN += ["--config.report.passkey_multiples=()"]
SCRIPT = os.path.join(ROOT, "launch", "slurm", "train.sbatch")
KILL_BOUND_S = 45  # a killed task to the job's end (the test cluster has KillWait=30 s)


@pytest.fixture(scope="module")
def cluster():
    lacking = slurm.missing()
    if lacking:
        message = f"SLURM is not installed ({', '.join(lacking)} missing): {slurm.INSTALL}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    c = slurm.Cluster(nodes=2)
    c.started_s = c.start()
    yield c
    c.stop()


def submit(cluster, workdir: str, *sbatch_args: str) -> int:
    """The project's script on 2 CPU nodes (or as `sbatch_args` say), training `RUN`."""
    port = slurm._free_ports(1)[0]
    env = dict(cluster.env, CPU_DEVICES="4", PYTHON=sys.executable)
    env["JAX_COORDINATOR_ADDRESS"] = f"127.0.0.1:{port}"  # node1 is not a resolvable name
    os.makedirs(workdir, exist_ok=True)
    output = f"--output={os.path.join(workdir, 'slurm-%j.out')}"
    args = ["--nodes=2", *CPU_NODE, output, *sbatch_args, SCRIPT, "--config=configs/tiny.py"]
    return cluster.sbatch(*args, f"--workdir={workdir}", *RUN, env=env, cwd=ROOT)


def log(workdir: str, job: int) -> str:
    with open(os.path.join(workdir, f"slurm-{job}.out"), errors="replace") as f:
        return f.read()


def finish(cluster, workdir: str, job: int) -> dict:
    info = cluster.wait(job, timeout=400)
    assert info["JobState"] == "COMPLETED", log(workdir, job)[-3000:]
    return info


def records(workdir: str) -> list[dict]:
    """metrics.jsonl without the wall-clock fields (the rest is bitwise)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    timing = ("step_time_s", "tokens_per_s", "mfu")
    return [
        {k: v for k, v in r.items() if k not in timing and "seconds" not in k and "time/" not in k}
        for r in rows
    ]


def wait_for_step(cluster, workdir: str, job: int, step: int) -> None:
    deadline = time.time() + 300
    path = os.path.join(workdir, "metrics.jsonl")
    while time.time() < deadline:
        if os.path.exists(path) and any(s >= step for s in losses(workdir)):
            return
        assert cluster.job(job)["JobState"] in ("PENDING", "RUNNING"), log(workdir, job)[-3000:]
        time.sleep(0.2)
    raise TimeoutError(f"job {job} did not reach step {step}")


@pytest.fixture(scope="module")
def uninterrupted(cluster, tmp_path_factory):
    """The 2-node job run start to end: the reference of every interrupted one."""
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    t0 = time.perf_counter()
    job = submit(cluster, workdir)
    finish(cluster, workdir, job)
    return {"workdir": workdir, "job": job, "seconds": time.perf_counter() - t0}


def test_two_nodes_train_as_one_process_and_their_checkpoint_continues_in_one(
    uninterrupted, tmp_path
):
    workdir = uninterrupted["workdir"]
    out = log(workdir, uninterrupted["job"])
    assert "2 process(es)" in out and "mesh {'data': 2, 'fsdp': 2, 'tensor': 2}" in out
    two_nodes = losses(workdir)
    assert sorted(two_nodes) == list(range(1, STEPS + 1))
    one = str(tmp_path / "one")
    launch(one, *RUN, devices=8)
    np.testing.assert_allclose(
        [two_nodes[s] for s in range(1, STEPS + 1)],
        [losses(one)[s] for s in range(1, STEPS + 1)],
        rtol=2e-5,
    )
    # The 2-node checkpoint of step 8 continues in one process × 8 devices.
    cont = str(tmp_path / "continue")
    shutil.copytree(workdir, cont)
    shutil.rmtree(os.path.join(cont, "checkpoints", str(STEPS)))
    out = launch(cont, *RUN, devices=8)
    assert "starting at step 8" in out
    np.testing.assert_allclose(
        [losses(cont)[s] for s in range(9, STEPS + 1)],
        [two_nodes[s] for s in range(9, STEPS + 1)],
        rtol=2e-5,
    )


def _task_pid(job: int, task: int) -> int | None:
    """The pid of job `job`'s training process with SLURM_PROCID=task."""
    want = (f"SLURM_JOB_ID={job}".encode(), f"SLURM_PROCID={task}".encode())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"infini_jax.train" not in f.read():
                    continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if all(w in env for w in want):
            return int(pid)
    return None


def _training_processes(job: int) -> list[int]:
    return [p for p in (_task_pid(job, 0), _task_pid(job, 1)) if p]


def test_preemption_requeue_and_a_killed_task_all_resume_bitwise(cluster, uninterrupted, tmp_path):
    """One workdir through everything a cluster does to a job: `scancel --signal=TERM` (save,
    exit 0, resubmit), `scontrol requeue` (save, SLURM runs it again), SIGKILL of one task
    (the job fails within the bound, nothing left running, resubmit). The final metrics equal
    the uninterrupted job's bitwise."""
    workdir = str(tmp_path)
    t0 = time.perf_counter()

    def phase(what):
        print(f"slurm: {time.perf_counter() - t0:6.1f} s {what}", flush=True)

    # 1. scancel --signal=TERM: a checkpoint at the step it was on, a clean exit.
    job = submit(cluster, workdir)
    wait_for_step(cluster, workdir, job, 2)
    phase("job 1 at step 2: scancel --signal=TERM")
    cluster.run("scancel", "--signal=TERM", str(job))
    finish(cluster, workdir, job)
    phase("job 1 completed")
    first = log(workdir, job)
    assert "SIGTERM: saved step" in first and "Traceback" not in first, first[-3000:]
    # 2. Resubmitted, then requeued by SLURM: the same job id runs again and resumes.
    job = submit(cluster, workdir)
    wait_for_step(cluster, workdir, job, 5)
    phase("job 2 at step 5: scontrol requeue")
    cluster.run("scontrol", "requeue", str(job))
    # SLURM holds a requeued job for about two minutes (Reason=BeginTime); release it now.
    cluster.wait(job, timeout=60, states=("PENDING",))
    cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now")
    deadline = time.time() + 180
    while "attempt 2" not in log(workdir, job) and time.time() < deadline:
        time.sleep(0.2)
    phase("job 2 attempt 2 started")
    first_attempt, _, _ = log(workdir, job).partition("attempt 2")
    assert "SIGTERM: saved step" in first_attempt, first_attempt[-3000:]
    assert int(cluster.job(job)["Restarts"]) == 1
    # 3. The requeued run resumes; one task is killed: the whole job ends, failed.
    wait_for_step(cluster, workdir, job, 8)
    phase("job 2 at step 8: SIGKILL task 1")
    pids = _training_processes(job)
    assert len(pids) == 2
    os.kill(_task_pid(job, 1), signal.SIGKILL)
    killed = time.perf_counter()
    info = cluster.wait(job, timeout=KILL_BOUND_S + 30)
    ended_s = time.perf_counter() - killed
    assert info["JobState"] == "FAILED" and ended_s < KILL_BOUND_S, (info, ended_s)
    assert not any(os.path.exists(f"/proc/{p}") for p in pids)  # nothing left running
    assert "task 1: Killed" in log(workdir, job), log(workdir, job)[-3000:]
    # 4. Resubmitted: it resumes from the last checkpoint and finishes.
    phase(f"job 2 failed {ended_s:.1f} s after the kill")
    job = submit(cluster, workdir)
    finish(cluster, workdir, job)
    phase("job 3 completed")
    assert records(workdir) == records(uninterrupted["workdir"])
    print(f"slurm: cluster up in {cluster.started_s:.1f} s; kill to job end {ended_s:.1f} s")


def test_a_sweep_runs_on_the_cluster_is_evaluated_summarised_and_skipped_when_done(
    cluster, tmp_path
):
    """Three runs, one node each: two train side by side, one diverges (its job fails). Each
    run's evaluation is a cluster job that waits for its training job: it runs after a
    training that completed, and is cancelled, never run, after one that failed. The sweep
    only submits and waits (no evaluation on this host), names the failed run's job and log;
    summarize tables them; a re-run skips what is done."""

    def sweep_cli(*a):
        env = dict(cluster.env, CPU_DEVICES="1", PYTHON=sys.executable, JAX_PLATFORMS="cpu")
        cmd = [sys.executable, "-m", "infini_jax.sweep", *a]
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)

    fields = {a.split("=")[0][len("--config.") :]: a.split("=")[1] for a in SMALL}
    fields = {k: int(v) if v.isdigit() else v for k, v in fields.items()}
    fields.update(total_steps=3, checkpoint_every_steps=3, **{"report.passkey_multiples": ()})
    diverges = {"seed": 3, "optimizer.learning_rate": 1e38, "optimizer.clip_norm": 1e38}
    diverges |= {"optimizer.warmup_steps": 0, "optimizer.max_nonfinite_steps": 1}
    sweep = tmp_path / "sweep.py"
    sweep.write_text(
        "def get_sweep():\n"
        f"    return {{'base': 'configs/tiny.py', 'fixed': {fields!r},\n"
        f"            'runs': [{{'seed': 1}}, {{'seed': 2}}, {diverges!r}],\n"
        "            'evals': {'ppl': ('configs/eval/ppl_by_position.py',\n"
        "                              {'lengths': (128,), 'samples_per_cell': 2})}}\n"
    )
    root = tmp_path / "root"
    args = [f"--sweep={sweep}", f"--workdir={root}", "--launcher=slurm"]
    args += ["--sbatch=--nodes=1 " + " ".join(CPU_NODE), "--sbatch_eval=" + " ".join(CPU_NODE)]
    r = sweep_cli(*args)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    runs = sorted(p.name for p in root.iterdir() if p.is_dir())
    jobs = {n: json.loads((root / n / "sweep_run.json").read_text())["job"] for n in runs}
    bad = next(n for n in runs if "learning_rate" in n)
    good = [n for n in runs if n != bad]
    log_path = root / bad / f"slurm-{jobs[bad]}.out"
    assert f"job {jobs[bad]} ended before total_steps; see {log_path}" in r.stdout, r.stdout
    assert "non-finite steps in a row" in log_path.read_text()
    evals = {
        n: json.loads((root / n / "sweep_run.json").read_text())["eval_jobs"]["ppl"] for n in runs
    }
    for n in good:  # evaluated on the cluster, once its training job had completed
        assert (root / n / "ppl" / "summary.json").exists()
        train, ev = cluster.job(jobs[n]), cluster.job(evals[n])
        assert ev["JobState"] == "COMPLETED" and ev["StartTime"] >= train["EndTime"], (train, ev)
        assert f"evaluation ppl done (job {evals[n]})" in r.stdout
    cancelled = cluster.job(evals[bad])  # its training failed: cancelled, never started
    assert cancelled["JobState"] == "CANCELLED", cancelled
    assert cancelled.get("RunTime") == "00:00:00" and not (root / bad / "ppl").exists()
    assert f"evaluation ppl (job {evals[bad]}) not run" in r.stdout
    assert ": evaluate ppl" not in r.stdout  # nothing evaluated on the submitting host
    # Side by side: each good job started before the other ended.
    times = {n: cluster.job(jobs[n]) for n in good}
    assert all(times[a]["StartTime"] < times[b]["EndTime"] for a in good for b in good)
    # summarize tables both trained runs (the failed one too, with its last loss).
    s = sweep_cli("summarize", str(root))
    assert s.returncode == 0, s.stderr[-2000:]
    table = (root / "summary.csv").read_text()
    assert all(n in table for n in good)
    # A re-run skips the finished runs and their evaluations; the failed one is resubmitted.
    again = sweep_cli(*args, "--nowait")
    assert again.stdout.count("finished, skipped") == 2, again.stdout
    assert "evaluation ppl" not in again.stdout.replace(f"{bad}: evaluation ppl", "")
    assert "submitted 2 job(s)" in again.stdout  # the failed run's training and evaluation
