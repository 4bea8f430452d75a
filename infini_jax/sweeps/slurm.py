"""`sweep --launcher=slurm`: every run's training and its evaluations as cluster jobs.

Each unfinished run is one `sbatch launch/slurm/train.sbatch` job; each of its evaluations
without a summary.json is one `sbatch launch/slurm/evaluate.sbatch` job that depends on it
(`--dependency=afterok:<training job> --kill-on-invalid-dep=yes`): it starts once training
completed, and SLURM cancels it, unrun, if training fails. A finished run's missing
evaluations are submitted with no dependency. Everything is submitted before anything is
waited for, so jobs run side by side where the cluster has room; the job ids go into each
run's `sweep_run.json` (`job`, `eval_jobs`). The submitting host only submits, polls `squeue`
until none of the jobs is queued or running, and reports: a run whose training ended before
`total_steps` (its job id and log), an evaluation that did not write its summary. Re-running
the sweep skips finished runs and evaluations, and waits for (does not resubmit) a job that is
still queued or running.
"""

import json
import os
import shlex
import subprocess
import time

from infini_jax import storage
from infini_jax.errors import Error
from infini_jax.sweeps.runs import ROOT_DIR, finished, launch_command

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


def _sbatch(cmd: list[str], what: str, tag: str) -> int | None:
    """Runs `cmd` (an sbatch --parsable line); the job id, or None (printed) if it failed."""
    try:
        r = subprocess.run(cmd, cwd=ROOT_DIR, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise Error("sbatch is not on PATH: run the sweep on a SLURM login node") from None
    if r.returncode:
        print(f"{tag} {what}: sbatch failed: {' '.join(r.stderr.split())}", flush=True)
        return None
    job = int(r.stdout.strip().split(";")[0])
    print(f"{tag} {what}: job {job}: {shlex.join(cmd)}", flush=True)
    return job


def _submit(run: dict, tag: str, sbatch_args: str) -> int | None:
    """sbatch of one run's training; its job id (recorded in sweep_run.json), or None."""
    storage.makedirs(run["workdir"])
    cmd = launch_command(run, "slurm", sbatch_args)
    job = _sbatch(cmd, run["name"], tag)
    if job is None:
        return None
    path, old = _meta(run)
    meta = {"name": run["name"], "overrides": run["overrides"], "command": cmd, "job": job}
    meta["seconds"] = old.get("seconds", 0.0)
    meta["eval_jobs"] = old.get("eval_jobs", {})
    storage.write_text(path, json.dumps(meta))
    return job


def eval_command(run: dict, args: list[str], name: str, after: int | None, sbatch_args: str):
    """The sbatch line of one evaluation of `run` (after training job `after`, if any)."""
    depends = [f"--dependency=afterok:{after}", "--kill-on-invalid-dep=yes"] if after else []
    return [
        "sbatch",
        "--parsable",
        f"--job-name={run['name']}:{name}",
        f"--output={storage.join(run['workdir'], 'slurm-%j.out')}",
        *depends,
        *shlex.split(sbatch_args),
        os.path.join(ROOT_DIR, "launch", "slurm", "evaluate.sbatch"),
        *args,
    ]


def _submit_evals(run: dict, after: int | None, tag: str, sbatch_args: str) -> dict[str, int]:
    """sbatch of each evaluation of `run` with no summary.json and no job still queued or
    running; {eval name: job} of those now pending, recorded in sweep_run.json."""
    path, meta = _meta(run)
    jobs = dict(meta.get("eval_jobs", {}))
    pending = {}
    for name, args in run["evals"]:
        if storage.exists(storage.join(run["workdir"], name, "summary.json")):
            continue
        job = jobs.get(name)
        state = job_state(job) if job else ""
        if state:  # still queued or running: waited for, not resubmitted
            print(f"{tag} {run['name']}: evaluation {name}: job {job} is {state}")
        else:
            job = _sbatch(
                eval_command(run, args, name, after, sbatch_args),
                f"{run['name']}: evaluation {name}",
                tag,
            )
        if job is not None:
            jobs[name] = pending[name] = job
    meta["eval_jobs"] = jobs
    storage.write_text(path, json.dumps({"name": run["name"], **meta}))
    return pending


def run_on_slurm(runs: list[dict], sbatch_args: str, wait: bool, eval_sbatch_args: str = "") -> int:
    """Submits every job, waits and reports (see the module docstring); the number of runs
    that failed (training, or an evaluation)."""
    jobs: dict[str, int] = {}
    evals: dict[str, dict[str, int]] = {}
    failed: list[str] = []
    for i, run in enumerate(runs, 1):
        tag = f"[{i}/{len(runs)}]"
        job = None
        if finished(run):
            print(f"{tag} {run['name']}: finished, skipped")
        else:
            job = _meta(run)[1].get("job")
            state = job_state(job) if job else ""
            if state:
                print(f"{tag} {run['name']}: job {job} is {state}; not resubmitted")
            else:
                job = _submit(run, tag, sbatch_args)
            if job is None:
                failed.append(run["name"])
                continue
            jobs[run["name"]] = job
        evals[run["name"]] = _submit_evals(run, job, tag, eval_sbatch_args)
    if not wait:
        n = len(jobs) + sum(map(len, evals.values()))
        print(f"submitted {n} job(s); run this command again to collect")
        return len(failed)
    start = time.perf_counter()
    every = [*jobs.values(), *(j for e in evals.values() for j in e.values())]
    while any(job_state(j) for j in every):
        time.sleep(POLL_S)
    for i, run in enumerate(runs, 1):
        tag = f"[{i}/{len(runs)}]"
        if run["name"] in failed:
            continue
        if not finished(run):
            job = jobs.get(run["name"])
            print(f"{tag} {run['name']}: job {job} ended before total_steps; see {_log(run, job)}")
            for name, eval_job in evals.get(run["name"], {}).items():
                print(f"{tag} {run['name']}: evaluation {name} (job {eval_job}) not run")
            failed.append(run["name"])
            continue
        for name, eval_job in evals.get(run["name"], {}).items():
            if storage.exists(storage.join(run["workdir"], name, "summary.json")):
                print(f"{tag} {run['name']}: evaluation {name} done (job {eval_job})")
            else:
                print(f"{tag} {run['name']}: evaluation {name} failed; see {_log(run, eval_job)}")
                failed.append(run["name"])
        if run["name"] in jobs or evals.get(run["name"]):
            path, meta = _meta(run)
            meta["seconds"] = meta.get("seconds", 0.0) + time.perf_counter() - start
            storage.write_text(path, json.dumps(meta))
    failed = list(dict.fromkeys(failed))
    if failed:
        print(f"{len(failed)} of {len(runs)} runs failed or stopped early: {', '.join(failed)}")
    return len(failed)
