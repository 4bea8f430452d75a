"""Sweeps: expansion, a 4-run local sweep that is interrupted, resumes and is summarised."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from infini_jax.errors import ConfigError
from infini_jax.sweeps.runs import expand, finished, plan_runs, run_name
from tests.conftest import ROOT
from tests.test_train import SMALL

SWEEP = """
def get_sweep():
    return {{
        "base": "configs/tiny.py:paper",
        "fixed": {fixed!r},
        "grid": {{"model.memory_update": ["linear", "delta"],
                  "optimizer.gate_learning_rate": [0.001, 0.01]}},
        "evals": {{"pk": ("configs/eval/passkey.py",
                          {{"lengths": (128,), "depths": (50,), "samples_per_cell": 2}},
                          {{"model.memory_update": "delta",
                            "optimizer.gate_learning_rate": 0.01}})}},
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


def test_finished_by_checkpoint_or_by_metrics_once_checkpoints_are_gone(tmp_path):
    run = {"workdir": str(tmp_path), "total_steps": 4}
    assert not finished(run)  # nothing yet
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3))
    assert not finished(run)  # stopped at step 3
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "loss": 1.0}) + "\n")
    assert finished(run)  # reached the last step; its checkpoints deleted since
    (tmp_path / "checkpoints" / "2").mkdir(parents=True)
    assert not finished(run)  # checkpoints, when present, decide: this one stopped at 2
    (tmp_path / "checkpoints" / "4").mkdir()
    assert finished(run)


@pytest.mark.slow
def test_four_run_sweep_resumes_after_interruption_and_summarises(tmp_path):
    sweep, root = write_sweep(tmp_path), tmp_path / "root"
    printed = sweep_cli(f"--sweep={sweep}", f"--workdir={root}", "--launcher=print")
    assert printed.returncode == 0 and printed.stdout.count("infini_jax.train") == 4
    assert printed.stdout.count("infini_jax.evaluate") == 1  # only the run its condition names
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

    # A finished run whose checkpoints were deleted stays finished (its metrics reached the
    # last step).
    shutil.rmtree(root / runs[0] / "checkpoints")
    done = sweep_cli(f"--sweep={sweep}", f"--workdir={root}")
    assert done.stdout.count("finished, skipped") == 4 and "evaluate" not in done.stdout
    evaluated = [p.parent.parent.name for p in root.glob("*/pk/summary.json")]
    assert evaluated == ["memory_update=delta,gate_learning_rate=0.01"]

    s = sweep_cli("summarize", str(root), "--field=optimizer.gate_learning_rate")
    assert s.returncode == 0, s.stderr[-2000:]
    rows = list(csv.DictReader(open(root / "summary.csv")))
    assert len(rows) == 4 and {r["model.memory_update"] for r in rows} == {"linear", "delta"}
    assert all(float(r["loss"]) > 0 and r["step"] == "4" for r in rows)
    assert all(float(r["minutes"]) > 0 for r in rows)
    scored = [r for r in rows if r["pk@128"]]
    assert len(scored) == 1 and 0 <= float(scored[0]["pk"]) <= 1
    assert "| run |" in (root / "summary.md").read_text()
    assert (root / "summary.png").stat().st_size > 1000


def _fake_run(root, name, overrides, loss, summaries):
    run = root / name
    run.mkdir(parents=True)
    (run / "sweep_run.json").write_text(json.dumps({"overrides": overrides, "seconds": 60}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "loss": loss}) + "\n")
    for eval_name, (summary, records) in summaries.items():
        (run / eval_name).mkdir()
        (run / eval_name / "summary.json").write_text(json.dumps(summary))
        lines = "".join(json.dumps(r) + "\n" for r in records)
        (run / eval_name / "results.jsonl").write_text(lines)


def _retrieval(by_back):  # {segments back: (accuracy, n)}, all at 256 tokens
    n = sum(k for _, k in by_back.values())
    acc = sum(a * k for a, k in by_back.values()) / n
    summary = {
        "run": {"task": "passkey"},
        "overall": {"accuracy": acc, "n": n},
        "by_length": {"256": {"accuracy": acc}},
        "by_depth_length": {"0,256": {"accuracy": 0.125}},
        "beyond_first_segment": None,
        "by_segments_back": {str(b): {"accuracy": a, "n": k} for b, (a, k) in by_back.items()},
    }
    records = [
        {"length": 256, "segments_back": b, "correct": i < a * k}
        for b, (a, k) in by_back.items()
        for i in range(k)
    ]
    return summary, records


def test_summary_groups_seeds_bins_compressions_and_filters_runs(tmp_path):
    from infini_jax.sweeps.summary import summarize

    root = tmp_path / "root"
    pk = {0: (1.0, 4), 1: (0.5, 2), 3: (0.0, 2), 4: (0.25, 4), 20: (0.0, 4)}
    _fake_run(root, "seed=0", {"seed": 0}, 2.0, {"pk": _retrieval(pk)})
    _fake_run(root, "seed=1", {"seed": 1}, 3.0, {"pk": _retrieval({0: (0.5, 4)})})
    _fake_run(root, "gate=sigmoid,seed=0", {"model.gate": "sigmoid", "seed": 0}, 5.0, {})
    _fake_run(root, "other", {"model.gate": "x", "model.bptt_segments": 1}, 9.0, {})
    for seed in (0, 1):  # the baseline's value of a field other runs sweep: its saved config
        (root / f"seed={seed}" / "config.json").write_text('{"model": {"gate": "hard"}}')
    rows = summarize(
        str(root),
        group_over="seed",
        columns="loss,pk*",
        curve="pk_back@",
        runs={"seed=0", "seed=1", "gate=sigmoid,seed=0"},
    )
    by_run = {r["run"]: r for r in rows}
    assert set(by_run) == {"base", "gate=sigmoid"}  # "other" is not in the sweep
    assert "model.bptt_segments" not in by_run["base"]  # swept only outside this sweep
    base = by_run["base"]
    assert base["model.gate"] == "hard" and by_run["gate=sigmoid"]["model.gate"] == "sigmoid"
    assert base["n"] == 2 and base["loss"] == 2.5 and base["loss_spread"] == 0.5
    assert base["pk_back@0"] == 0.75  # seeds 1.0 and 0.5
    raw = list(csv.DictReader(open(root / "summary.csv")))
    seed0 = next(r for r in raw if r["run"] == "seed=0")
    assert float(seed0["pk_back@1"]) == 0.5 and float(seed0["pk_back@2"]) == 0.0  # 1; 2-3 back
    assert float(seed0["pk_back@4"]) == 0.25 and float(seed0["pk_back@16"]) == 0.0
    assert float(seed0["pk_d0@256"]) == 0.125
    assert float(seed0["pk_beyond@256"]) == 2 / 12  # 1 of 2 at 1 back, 1 of 4 at 4 back
    text = (root / "summary.md").read_text()
    assert "| 2.5 ± 0.5 |" in text and "minutes" not in text.splitlines()[0]
    assert (root / "summary.png").stat().st_size > 1000
    assert (root / "summary_loss.png").stat().st_size > 1000
    with pytest.raises(ConfigError, match="--columns=nope matches no column"):
        summarize(str(root), columns="nope")
