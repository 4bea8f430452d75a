"""Sweeps: expansion, a 4-run local sweep that is interrupted, resumes and is summarised."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from infini_jax.errors import ConfigError
from infini_jax.sweep import expand, plan_runs, run_name
from tests.conftest import ROOT
from tests.test_train import SMALL

SWEEP = """
def get_sweep():
    return {{
        "base": "configs/tiny.py",
        "fixed": {fixed!r},
        "grid": {{"model.memory_update": ["linear", "delta"],
                  "optimizer.gate_learning_rate": [0.001, 0.01]}},
    }}
"""


def write_sweep(tmp_path, steps=4):
    fixed = {a.split("=")[0][len("--config.") :]: a.split("=")[1] for a in SMALL}
    fixed = {k: int(v) if v.isdigit() else v for k, v in fixed.items()}
    fixed.update(total_steps=steps, checkpoint_every_steps=1)
    fixed["report.passkey_multiples"] = ()
    path = tmp_path / "sweep.py"
    path.write_text(SWEEP.format(fixed=fixed))
    return str(path)


def sweep_cli(*args, wait=True):
    cmd = [sys.executable, "-m", "infini_jax.sweep", *args]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if not wait:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_expansion_names_and_bad_overrides(tmp_path):
    sweep = {"base": "configs/tiny.py", "grid": {"a.x": [1, 2], "b.y": ["p"]}, "runs": [{"c": 0}]}
    assert expand(sweep) == [{"c": 0, "a.x": 1, "b.y": "p"}, {"c": 0, "a.x": 2, "b.y": "p"}]
    assert run_name({"model.gate": "sigmoid", "optimizer.learning_rate": 0.01}) == (
        "gate=sigmoid,learning_rate=0.01"
    )
    assert run_name({"a.lr": 1, "b.lr": 2}) == "a.lr=1,b.lr=2"  # clashing short names
    with pytest.raises(ConfigError, match="sweep override model.nope: config has no field"):
        plan_runs({"base": "configs/tiny.py", "fixed": {"model.nope": 1}}, "/r")
    runs = plan_runs(
        {"base": "configs/tiny.py", "grid": {"optimizer.gate_learning_rate": [1, 2]}}, "/r"
    )
    assert [r["name"] for r in runs] == ["gate_learning_rate=1", "gate_learning_rate=2"]
    assert "--config.optimizer.gate_learning_rate=2" in runs[1]["train_args"]
    with pytest.raises(ConfigError, match="config.model.gate='bad'"):
        plan_runs({"base": "configs/tiny.py", "grid": {"model.gate": ["bad"]}}, "/r")


def test_four_run_sweep_resumes_after_interruption_and_summarises(tmp_path):
    sweep, root = write_sweep(tmp_path), tmp_path / "root"
    printed = sweep_cli(f"--sweep={sweep}", f"--workdir={root}", "--launcher=print")
    assert printed.returncode == 0 and printed.stdout.count("infini_jax.train") == 4
    assert not root.exists()  # printing launches nothing

    proc = sweep_cli(f"--sweep={sweep}", f"--workdir={root}", wait=False)
    second = root / "memory_update=linear,gate_learning_rate=0.01"
    deadline = time.time() + 600

    def saved_steps():  # keep_checkpoints=2: a given step lives only briefly, so any step
        ckpt = second / "checkpoints"
        return [int(p.name) for p in ckpt.iterdir() if p.name.isdigit()] if ckpt.exists() else []

    while not saved_steps():  # the second run is mid-way
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its training process
    proc.wait()

    again = sweep_cli(f"--sweep={sweep}", f"--workdir={root}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "[1/4] memory_update=linear,gate_learning_rate=0.001: finished, skipped" in again.stdout
    starts = [
        int(x.split("starting at step ")[1].split(";")[0])
        for x in again.stdout.splitlines()
        if "starting at step" in x
    ]
    assert starts[0] >= 1 and starts[1:] == [0, 0]  # run 2 resumed; runs 3 and 4 started
    runs = sorted(p.name for p in root.iterdir() if (p / "sweep_run.json").exists())
    assert len(runs) == 4
    for run in runs:
        steps = [json.loads(x)["step"] for x in open(root / run / "metrics.jsonl")]
        assert max(steps) == 4

    done = sweep_cli(f"--sweep={sweep}", f"--workdir={root}")
    assert done.stdout.count("finished, skipped") == 4

    s = sweep_cli("summarize", str(root), "--field=optimizer.gate_learning_rate")
    assert s.returncode == 0, s.stderr[-2000:]
    rows = list(csv.DictReader(open(root / "summary.csv")))
    assert len(rows) == 4 and {r["model.memory_update"] for r in rows} == {"linear", "delta"}
    assert all(float(r["loss"]) > 0 and r["step"] == "4" for r in rows)
    assert "| run |" in (root / "summary.md").read_text()
    assert (root / "summary.png").stat().st_size > 1000
