"""`sweep --launcher=slurm`: submit every unfinished run, wait for the jobs, evaluate.

Each run is one `sbatch launch/slurm/train.sbatch` job whose id goes into the run's
`sweep_run.json`; all are submitted before any is waited for, so they run side by side where
the cluster has room. Then the sweep polls `squeue` until none is queued or running, and runs
each finished run's evaluations on this host. A run whose job ended before `total_steps` is
reported with its job id and log. Re-running the sweep skips finished runs and evaluations,
and waits for (does not resubmit) a run whose recorded job is still queued or running.
"""

import json
import shlex
import subprocess
import time

from infini_jax import storage
from infini_jax.errors import Error
from infini_jax.sweeps.runs import ROOT_DIR, eval_commands, evaluate_run, finished, launch_command

POLL_S = 2.0


def job_state(job: int) -> str:
    """The job's state while SLURM queues or runs it ("PENDING", "RUNNING", ...); "" once it
    has left the queue."""
    try:
        r = subprocess.run(
            ["squeue", "-h", "-j", str(job), "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Error(f"squeue does not answer ({e}); is this a SLURM login node?") from None
    return r.stdout.strip() if r.returncode == 0 else ""


def _log(run: dict, job: int) -> str:
    return storage.join(run["workdir"], f"slurm-{job}.out")


def _meta(run: dict) -> tuple[str, dict]:
    path = storage.join(run["workdir"], "sweep_run.json")
    old = storage.read_json(path) if storage.exists(path) else {}
    return path, old


def _submit(run: dict, tag: str, sbatch_args: str) -> int | None:
    """sbatch of one run; its job id (recorded in sweep_run.json), or None if sbatch failed."""
    storage.makedirs(run["workdir"])
    cmd = launch_command(run, "slurm", sbatch_args)
    try:
        r = subprocess.run(cmd, cwd=ROOT_DIR, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise Error("sbatch is not on PATH: run the sweep on a SLURM login node") from None
    if r.returncode:
        print(f"{tag} {run['name']}: sbatch failed: {' '.join(r.stderr.split())}", flush=True)
        return None
    job = int(r.stdout.strip().split(";")[0])
    path, old = _meta(run)
    meta = {"name": run["name"], "overrides": run["overrides"], "command": cmd, "job": job}
    meta["seconds"] = old.get("seconds", 0.0)
    storage.write_text(path, json.dumps(meta))
    print(f"{tag} {run['name']}: job {job}: {shlex.join(cmd)}", flush=True)
    return job


def run_on_slurm(runs: list[dict], sbatch_args: str, wait: bool) -> int:
    """Submits, waits and evaluates (see the module docstring); the number of failed runs."""
    jobs: dict[str, int] = {}
    failed: list[str] = []
    for i, run in enumerate(runs, 1):
        tag = f"[{i}/{len(runs)}]"
        if finished(run):
            print(f"{tag} {run['name']}: finished, skipped")
            continue
        job = _meta(run)[1].get("job")
        state = job_state(job) if job else ""
        if state:
            print(f"{tag} {run['name']}: job {job} is {state}; not resubmitted")
        else:
            job = _submit(run, tag, sbatch_args)
        if job is None:
            failed.append(run["name"])
        else:
            jobs[run["name"]] = job
    if not wait:
        print(f"submitted {len(jobs)} job(s); run this command again to collect and evaluate")
        return len(failed)
    start = time.perf_counter()
    while any(job_state(j) for j in jobs.values()):
        time.sleep(POLL_S)
    for i, run in enumerate(runs, 1):
        tag = f"[{i}/{len(runs)}]"
        if run["name"] in failed:
            continue
        if not finished(run):
            job = jobs.get(run["name"])
            print(f"{tag} {run['name']}: job {job} ended before total_steps; see {_log(run, job)}")
            failed.append(run["name"])
            continue
        t0 = time.perf_counter()
        if not evaluate_run(run, eval_commands(run), tag):
            failed.append(run["name"])
        path, meta = _meta(run)
        spent = (
            time.perf_counter() - t0 + (time.perf_counter() - start if run["name"] in jobs else 0)
        )
        meta["seconds"] = meta.get("seconds", 0.0) + spent
        storage.write_text(path, json.dumps(meta))
    if failed:
        print(f"{len(failed)} of {len(runs)} runs failed or stopped early: {', '.join(failed)}")
    return len(failed)
