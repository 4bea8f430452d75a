"""The quickstart's main job: runs, saves its config, and rejects bad input in one line."""

import json
import os
import subprocess
import sys

from infini_jax import smoke
from tests.conftest import ROOT


def test_smoke_run_fits_a_batch_and_saves_config(tiny_config, tmp_path):
    tiny_config.data.seq_len = 128
    tiny_config.data.batch_size = 2
    losses = smoke.run(tiny_config, str(tmp_path), steps=5)
    assert losses[-1] < losses[0]
    with open(os.path.join(tmp_path, "config.json")) as f:
        assert json.load(f)["data"]["seq_len"] == 128


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "infini_jax.smoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_bad_value_is_one_line_before_compiling(tmp_path):
    r = _cli("--config=configs/tiny.py", "--config.model.num_kv_heads=3", f"--workdir={tmp_path}")
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("config error")]
    assert lines == [
        "config error: config.model.num_kv_heads=3 does not divide "
        "config.model.num_heads=4 (grouped-query attention needs whole groups)"
    ]
    assert "Traceback" not in r.stderr and not os.listdir(tmp_path)  # nothing written


def test_cli_unknown_field_is_one_line():
    r = _cli("--config=configs/tiny.py", "--config.model.num_expert=2")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "unknown config field 'num_expert' in --config.model.num_expert" in r.stderr
