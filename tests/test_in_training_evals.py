"""config.evals: evaluations on the live parameters during training."""

import json
import os

import pytest

from infini_jax import evaluate, train
from infini_jax.config import load_config, override
from infini_jax.errors import ConfigError
from tests.conftest import config_path

PASSKEY = {"lengths": (128,), "depths": (0, 100), "samples_per_cell": 2, "batch_size": 2}
PASSKEY["key_digits"] = 2


def small(total_steps: int, every: int = 2):
    fields = {"model.d_model": 32, "model.mlp_dim": 64, "data.batch_size": 2}
    fields |= {"data.seq_len": 128, "model.segment_len": 32, "log_every_steps": 3}
    fields |= {"data.synthetic.min_length": 128, "data.synthetic.max_length": 128}
    fields |= {"total_steps": total_steps, "checkpoint_every_steps": 2}
    fields |= {"report.passkey_multiples": (1,), "report.passkey_samples": 1}
    config = override(load_config(config_path("tiny.py")), fields)
    config.evals.passkey.every_steps = every
    config.evals.passkey.fields = PASSKEY
    return config


def eval_rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if "eval/passkey/accuracy" in r]


@pytest.mark.slow
def test_evals_log_a_series_that_resumes_without_gaps_and_equal_evaluate(tmp_path):
    workdir = str(tmp_path / "run")
    train.train(small(total_steps=4), workdir)
    # Resumed to 6 steps: the series continues, each eval step once.
    train.train(small(total_steps=6), workdir)
    rows = eval_rows(workdir)
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert all(r["eval/passkey/seconds"] > 0 and "loss" in r for r in rows)
    assert {"eval/passkey/accuracy@128", "eval/passkey/beyond_first_segment"} <= set(rows[-1])
    # The step-6 figures are what `evaluate` measures on the step-6 checkpoint.
    eval_config = override(load_config(config_path("eval/passkey.py")), PASSKEY)
    summary = evaluate.evaluate(eval_config, workdir, str(tmp_path / "eval"))
    assert rows[-1]["eval/passkey/accuracy"] == summary["overall"]["accuracy"]
    beyond = summary["beyond_first_segment"]["accuracy"]
    assert rows[-1]["eval/passkey/beyond_first_segment"] == beyond
    # The report plots the series and says what it cost.
    report = open(os.path.join(workdir, "report.md")).read()
    assert "![evals](evals.png)" in report and "of the wall time" in report
    assert os.path.getsize(os.path.join(workdir, "evals.png")) > 1000


def test_a_bad_eval_entry_is_one_line_before_anything_is_written(tmp_path):
    config = small(total_steps=2)
    config.evals.passkey.fields = {"lengths": (0,)}
    with pytest.raises(ConfigError, match=r"config.evals.passkey \(configs/eval/passkey.py\): "):
        train.train(config, str(tmp_path / "w"))
    config = small(total_steps=2)
    config.evals.passkey.config = "configs/eval/none.py"
    with pytest.raises(ConfigError, match=r"^config.evals.passkey.config: config file "):
        train.train(config, str(tmp_path / "w"))
    config = small(total_steps=2)
    config.evals.passkey.fields = {"batch_size": 3}
    config.mesh.data = 1  # one device: fits; the batch check is against the training mesh
    config.evals.passkey.every_steps = -1
    with pytest.raises(ConfigError, match=r"config.evals.passkey.every_steps=-1 must be >= 0"):
        train.train(config, str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w")
