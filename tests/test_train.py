"""The main job: device-count invariance, exact resume after SIGKILL, SIGTERM, re-meshing,
parameter groups and the non-finite guard."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from infini_jax import evaluate, model, sections, train
from infini_jax.config import load_config, override, validate
from infini_jax.errors import CheckpointError, ConfigError
from infini_jax.training import checkpoint, loading, optim
from infini_jax.training.report import write_report
from infini_jax.training.step import init_state, train_step
from tests.conftest import ROOT, config_path, run_cli, small_model

SMALL = [
    "--config.model.d_model=64",
    "--config.model.mlp_dim=128",
    "--config.data.seq_len=128",
    "--config.model.segment_len=32",
    "--config.data.synthetic.min_length=128",
    "--config.data.synthetic.max_length=128",
    "--config.log_every_steps=1",
    "--config.optimizer.warmup_steps=2",
    "--config.optimizer.learning_rate=3e-3",
    "--config.data.batch_size=8",
    "--config.evals.passkey.every_steps=0",  # test_in_training_evals covers config.evals
]


def tiny_128(batch_size: int, config=None):
    """`config` (default: the tiny config) on 128-token documents (4 segments of 32), logging
    every step, without the tiny in-training eval (tests/test_in_training_evals.py covers it),
    for in-process runs."""
    config = config or load_config(config_path("tiny.py"))
    if "passkey" in config.evals:
        config.evals.passkey.every_steps = 0
    config.data.seq_len, config.model.segment_len, config.data.batch_size = 128, 32, batch_size
    config.data.synthetic.min_length, config.data.synthetic.max_length = 128, 128
    config.log_every_steps = 1
    return config


def launch(workdir, *extra, devices=1, wait=True, prefix=()):
    """`python -m infini_jax.train` on the small config (behind `prefix`, e.g. launch/local.sh)."""
    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
    )
    cmd = [
        *prefix,
        sys.executable,
        "-m",
        "infini_jax.train",
        "--config=configs/tiny.py",
        f"--workdir={workdir}",
        *SMALL,
        *extra,
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if not wait:
        return proc
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out


def losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f)}


def wait_for_step(workdir, step, proc, timeout=300):
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and any(s >= step for s in losses(workdir)):
            return
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    raise TimeoutError(f"step {step} not reached")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 6-step run on 1 device."""
    workdir = str(tmp_path_factory.mktemp("ref"))
    launch(workdir, "--config.total_steps=6", "--config.checkpoint_every_steps=2")
    return losses(workdir)


@pytest.mark.slow
def test_eight_devices_give_the_same_losses_as_one(reference, tmp_path):
    # Two "slices" of 4 CPU devices (mesh.slices: consecutive blocks stand for TPU slices), each
    # fsdp=2 × tensor=2; the data axis spans the slices.
    out = launch(
        str(tmp_path),
        "--config.total_steps=6",
        "--config.mesh.slices=2",
        "--config.mesh.data=1",
        "--config.mesh.fsdp=2",
        "--config.mesh.tensor=2",
        devices=8,
    )
    assert "mesh {'data': 2, 'fsdp': 2, 'tensor': 2}" in out
    got = losses(str(tmp_path))
    assert sorted(got) == list(range(1, 7))
    np.testing.assert_allclose(
        [got[s] for s in range(1, 7)], [reference[s] for s in range(1, 7)], rtol=2e-5
    )
    assert reference[6] < reference[1]


@pytest.mark.slow
def test_sigkill_and_resume_is_bitwise_identical(reference, tmp_path):
    workdir = str(tmp_path)
    proc = launch(
        workdir, "--config.total_steps=6", "--config.checkpoint_every_steps=2", wait=False
    )
    wait_for_step(workdir, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = launch(workdir, "--config.total_steps=6", "--config.checkpoint_every_steps=2")
    assert losses(workdir) == reference  # every step, bitwise (JSON keeps float32 exact)
    out = launch(workdir, "--config.total_steps=6", "--config.checkpoint_every_steps=2")
    assert "nothing to do" in out


@pytest.mark.slow
def test_sigterm_saves_then_exits_zero(tmp_path):
    workdir = str(tmp_path)
    proc = launch(
        workdir, "--config.total_steps=1000", "--config.checkpoint_every_steps=500", wait=False
    )
    wait_for_step(workdir, 2, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    saved = [int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()]
    assert saved and 2 <= max(saved) < 500 and f"saved step {max(saved)}" in out


@pytest.mark.slow
def test_restore_onto_other_device_counts(reference, tmp_path):
    base = str(tmp_path / "eight")
    launch(
        base,
        "--config.total_steps=6",
        "--config.checkpoint_every_steps=4",
        "--config.mesh.data=2",
        "--config.mesh.fsdp=2",
        "--config.mesh.tensor=2",
        devices=8,
    )
    subprocess.run(["rm", "-r", os.path.join(base, "checkpoints", "6")], check=True)
    for devices, mesh in ((1, []), (4, ["--config.mesh.fsdp=2", "--config.mesh.tensor=2"])):
        workdir = str(tmp_path / f"on{devices}")
        subprocess.run(["cp", "-r", base, workdir], check=True)
        launch(
            workdir,
            "--config.total_steps=6",
            "--config.checkpoint_every_steps=4",
            *mesh,
            devices=devices,
        )
        got = losses(workdir)
        np.testing.assert_allclose([got[5], got[6]], [reference[5], reference[6]], rtol=2e-5)


def cli_error(*args, devices=2):
    """Runs the job expecting a start-up error; returns stderr (one line, no traceback)."""
    r = run_cli("infini_jax.train", "--config=configs/tiny.py", *SMALL, *args, devices=devices)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    return r.stderr


def test_how_a_step_is_computed_may_change_on_resume_but_not_the_model():
    config = load_config(config_path("tiny.py"))
    config.evals.passkey.every_steps = 0  # config.evals: test_in_training_evals
    saved = {"model": config.model.to_dict()}
    del saved["model"]["layer_remat_policy"]  # a checkpoint written before the field existed
    config.model.remat_policy, config.model.remat_layers = "dots_saveable", True
    config.model.attention_impl = "xla"
    config.model.delta_chunk = saved["model"]["delta_chunk"] // 2  # the same rule, other blocks
    checkpoint.check_compatible(saved, config, 5)  # no error
    config.model.memory_update = "linear"
    with pytest.raises(ConfigError, match=r"memory_update: checkpoint '\w+' vs config 'linear'"):
        checkpoint.check_compatible(saved, config, 5)


@pytest.mark.slow
def test_incompatible_checkpoint_and_bad_mesh_are_one_line(tmp_path):
    workdir = str(tmp_path)
    launch(workdir, "--config.total_steps=1")
    err = cli_error(f"--workdir={workdir}", "--config.total_steps=3", "--config.model.num_layers=3")
    assert "incompatible model config (model.num_layers: checkpoint 2 vs config 3)" in err
    err = cli_error(f"--workdir={tmp_path}/b", "--config.mesh.data=3")
    assert "config.mesh: data×fsdp×tensor = 3×1×1 = 3 but there are 2 devices" in err
    err = cli_error(f"--workdir={tmp_path}/c", "--config.data.batch_size=3")
    assert "config.data.batch_size=3 is not divisible by data×fsdp (2)" in err
    (tmp_path / "file").write_text("")
    err = cli_error(f"--workdir={tmp_path}/file/sub")
    assert f"--workdir={tmp_path}/file/sub cannot be written" in err


@pytest.mark.slow
def test_balance_factors_get_their_own_lr_and_no_weight_decay(tiny_config):
    o = tiny_config.optimizer
    o.warmup_steps, o.learning_rate, o.gate_learning_rate, o.weight_decay = 0, 1e-3, 1e-2, 0.1
    o = sections.OptimizerConfig.from_config(o)
    tx, schedules = optim.make_optimizer(o, total_steps=100)
    params = init_state(small_model(), optax.identity(), 0).params
    groups = optim.param_groups(params, o)
    assert groups["layers"]["attention"]["balance"] == "balance"
    assert groups["layers"]["attention_norm"]["scale"] == "no_decay"
    assert groups["layers"]["mlp"]["up"]["kernel"] == "decay"
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)  # clipped, then normalised by Adam
    # Adam's first step moves every parameter by lr (normalised gradient 1) plus lr·wd·p.
    kernel = params["layers"]["mlp"]["up"]["kernel"]
    np.testing.assert_allclose(
        updates["layers"]["mlp"]["up"]["kernel"], -1e-3 * (1 + 0.1 * kernel), rtol=1e-4, atol=1e-9
    )
    np.testing.assert_allclose(updates["layers"]["attention"]["balance"], -1e-2, rtol=1e-4)
    np.testing.assert_allclose(updates["layers"]["attention_norm"]["scale"], -1e-3, rtol=1e-4)
    zero, _ = tx.update(jax.tree.map(jnp.zeros_like, grads), tx.init(params), params)
    assert np.all(np.asarray(zero["layers"]["attention"]["balance"]) == 0)  # no decay


@pytest.mark.slow
def test_non_finite_steps_are_skipped_and_counted(tiny_config):
    cfg = small_model()
    tx, schedules = optim.make_optimizer(
        sections.OptimizerConfig.from_config(tiny_config.optimizer), 10
    )
    state = init_state(cfg, tx, 0)
    tokens = jnp.zeros((2, 32), jnp.int32)
    batch = {
        "tokens": tokens,
        "targets": tokens,
        "mask": jnp.ones((2, 32), bool),
        "segment_ids": jnp.ones((2, 32), jnp.int32),
    }
    step = jax.jit(lambda s, b: train_step(s, b, model_cfg=cfg, tx=tx, schedules=schedules))
    good, metrics = step(state, batch)
    assert int(good.skipped) == 0 and np.isfinite(metrics["loss"])
    poisoned = state._replace(params=jax.tree.map(lambda x: x * jnp.nan, state.params))
    for i in (1, 2):
        poisoned, metrics = step(poisoned, batch)
        assert int(metrics["skipped"]) == i and int(metrics["nonfinite_run"]) == i
    assert int(poisoned.step) == 2  # the data still advances
    after, metrics = step(good, batch)
    assert int(metrics["nonfinite_run"]) == 0


@pytest.mark.slow
def test_run_stops_after_k_non_finite_steps_with_checkpoints_intact(tmp_path):
    config = tiny_128(batch_size=2)
    config.total_steps, config.checkpoint_every_steps = 20, 1
    config.optimizer.warmup_steps, config.optimizer.max_nonfinite_steps = 0, 2
    config.optimizer.learning_rate, config.optimizer.clip_norm = 1e38, 1e38
    with pytest.raises(train.TrainingStopped, match="2 non-finite steps in a row"):
        train.train(config, str(tmp_path))
    steps = [int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()]
    assert steps and max(steps) < 20


def test_cli_bad_value_and_unknown_field_are_one_line_before_compiling(tmp_path):
    err = cli_error(f"--workdir={tmp_path}/w", "--config.model.num_kv_heads=3")
    assert (
        "config error: config.model.num_kv_heads=3 does not divide config.model.num_heads=4 "
        "(grouped-query attention needs whole groups)"
    ) in err.splitlines()
    assert not os.path.exists(tmp_path / "w")  # nothing written
    err = cli_error(f"--workdir={tmp_path}/w", "--config.model.num_expert=2")
    assert "unknown config field 'num_expert' in --config.model.num_expert" in err


@pytest.mark.slow
def test_end_of_run_report(tmp_path):
    config = tiny_128(batch_size=4)
    config.total_steps, config.checkpoint_every_steps = 3, 3
    config.report.passkey_multiples, config.report.passkey_samples = (1, 2), 2
    config.eval_every_steps, config.eval_batches = 3, 2
    config.profile.start_step, config.profile.num_steps = 2, 1
    last = train.train(config, str(tmp_path))
    traces = list((tmp_path / "profile").glob("plugins/profile/*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 1000  # a trace of step 2
    assert 0 < last["val_loss"] < 10
    summary = last["passkey"]
    assert set(summary["by_length"]) == {"128", "256"}
    assert summary["overall"]["n"] == 2 * 5 * 2  # lengths x depths x samples
    assert summary["beyond_first_segment"]["n"] > 0
    with open(tmp_path / "passkey.json") as f:
        samples = json.load(f)["samples"]
    backs = {s["segments_back"] for s in samples}
    assert len(backs) > 2 and max(backs) >= 4  # depths spread the needle over the segments
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 256 |" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_a_model_vocabulary_larger_than_its_tokenizer_reports_and_evaluates(tmp_path, capsys):
    # data.md's route in small: a 512-token tokenizer under a 640-row model. Its predictions
    # include ids the tokenizer lacks: they decode as "⁇" and count as wrong, never crash.
    workdir = tmp_path / "w"
    fields = {
        "model.vocab_size": 640,
        "data.seq_len": 128,
        "model.segment_len": 32,
        "data.batch_size": 4,
        "data.synthetic.min_length": 128,
        "data.synthetic.max_length": 128,
        "total_steps": 2,
        "report.passkey_samples": 2,
        "report.passkey_multiples": (1,),
    }
    args = [f"--config.{k}={v}" for k, v in fields.items()]
    r = run_cli("infini_jax.train", "--config=configs/tiny.py", f"--workdir={workdir}", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "vocab_size=640 but tokenizer" in warnings[0]
    # Make the model predict an id the tokenizer lacks: swap the output column of the token
    # it predicts most with row 600's, then write the report from those parameters.
    saved, _, params = loading.load_params(str(workdir))
    model_cfg = validate(saved)
    tok = loading.load_tokenizer(str(workdir), saved)
    tokens = jnp.asarray([tok.encode("What is the pass key? The pass key is 12. " * 4)[:32]])
    logits, _ = model.segment_step(model_cfg, params, tokens, model.init_memory(model_cfg, 1))
    top = int(np.bincount(np.asarray(jnp.argmax(logits, -1)).ravel()).argmax())
    w = params["unembed"]["kernel"]
    params["unembed"]["kernel"] = w.at[:, [top, 600]].set(w[:, [600, top]])
    write_report(str(workdir), saved, model_cfg, params, tok)
    samples = json.loads((workdir / "passkey.json").read_text())["samples"]
    unknown = [s for s in samples if "⁇" in s["prediction"]]
    assert unknown and not any(s["correct"] for s in unknown)
    # A finished run whose report is missing writes it when run again (once).
    (workdir / "report.md").unlink()
    config = override(load_config(config_path("tiny.py")), fields, "test")
    config.evals.passkey.every_steps = 0
    train.train(config, str(workdir))
    assert "writing the missing report from step 2" in capsys.readouterr().out
    assert (workdir / "report.md").exists()
    train.train(config, str(workdir))
    assert "writing" not in capsys.readouterr().out
    # evaluate on that checkpoint: the same decode, no crash.
    eval_config = load_config(config_path("eval/passkey.py") + ":quick")
    eval_config.lengths, eval_config.samples_per_cell, eval_config.key_digits = (128,), 2, 2
    result = evaluate.evaluate(eval_config, str(workdir), str(tmp_path / "eval"))
    assert result


@pytest.mark.slow
def test_finetune_starts_from_a_checkpoint_with_fresh_optimizer(tmp_path):
    base = tiny_128(batch_size=2)
    base.report.passkey_multiples = ()
    base.total_steps = base.checkpoint_every_steps = 2
    train.train(base, str(tmp_path / "pre"))
    ft = load_config(config_path("passkey_finetune.py") + ":tiny")
    assert (ft.optimizer.learning_rate, ft.optimizer.gate_learning_rate) == (7.5e-5, 1.5e-4)
    assert ft.data.synthetic.kv_recall_weight == 0 and ft.data.batch_size == 64
    ft = tiny_128(batch_size=2, config=ft)
    ft.report.passkey_multiples, ft.total_steps, ft.checkpoint_every_steps = (), 2, 2
    with pytest.raises(ConfigError, match="config.init_from is empty"):
        train.train(ft, str(tmp_path / "ft0"))
    ft.init_from = str(tmp_path / "pre")
    ft.optimizer.learning_rate = ft.optimizer.gate_learning_rate = 0.0
    train.train(ft, str(tmp_path / "ft"))  # LR 0: the parameters must stay the checkpoint's
    _, step_pre, pre = loading.load_params(str(tmp_path / "pre"))
    _, step_ft, after = loading.load_params(str(tmp_path / "ft"))
    assert (step_pre, step_ft) == (2, 2)
    chex.assert_trees_all_equal(pre, after)
    ft.model.num_layers = 3
    with pytest.raises(ConfigError, match=r"model.num_layers: checkpoint 2 vs config 3"):
        train.train(ft, str(tmp_path / "ft3"))


def test_a_checkpoint_whose_state_has_a_field_since_removed_still_restores(tiny_config, tmp_path):
    """Checkpoints written before TrainState lost its unused `rng` restore what is needed."""

    class OldState(NamedTuple):
        step: jax.Array
        params: dict
        opt_state: object
        rng: jax.Array
        skipped: jax.Array
        nonfinite_run: jax.Array

    opt = sections.OptimizerConfig.from_config(tiny_config.optimizer)
    state = init_state(small_model(), optim.make_optimizer(opt, 10)[0], 0)
    old = OldState(*state[:3], jnp.arange(2, dtype=jnp.uint32), *state[3:])
    mngr = checkpoint.manager(str(tmp_path), tiny_config)
    checkpoint.save(mngr, 1, old, {"position": 7}, tiny_config)
    mngr.wait_until_finished()
    mngr.close()
    mngr = checkpoint.manager(str(tmp_path), tiny_config)  # as a later run (a new process) does
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.eval_shape(lambda: state)
    restored, data = checkpoint.restore(mngr, 1, abstract, jax.tree.map(lambda _: device, abstract))
    mngr.close()
    assert type(restored) is type(state) and data == {"position": 7}
    chex.assert_trees_all_equal(restored, state)


def test_a_checkpoint_lacking_part_of_the_state_is_one_config_error(tiny_config, tmp_path):
    """A train state with an array the checkpoint lacks (code with other optimizer groups, or
    a new parameter) is refused naming it, not restored with holes that fail inside optax."""
    opt = sections.OptimizerConfig.from_config(tiny_config.optimizer)
    state = init_state(small_model(), optim.make_optimizer(opt, 10)[0], 0)
    mngr = checkpoint.manager(str(tmp_path), tiny_config)
    checkpoint.save(mngr, 1, state, {"position": 7}, tiny_config)
    mngr.wait_until_finished()
    grown = state._replace(params={**state.params, "added": jnp.zeros(3)})
    abstract = jax.eval_shape(lambda: grown)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, abstract)
    with pytest.raises(ConfigError, match=r"step 1 .* has no \.params\['added'\] \(1 array"):
        checkpoint.restore_intact(mngr, abstract, shardings, tiny_config)
    same = jax.eval_shape(lambda: state)
    step, restored, _ = checkpoint.restore_intact(
        mngr, same, jax.tree.map(lambda _: device, same), tiny_config
    )
    mngr.close()
    assert step == 1
    chex.assert_trees_all_equal(restored, state)
    assert os.path.isdir(os.path.join(tmp_path, "checkpoints", "1"))  # nothing set aside


def _truncate_array_files(step_dir) -> None:
    """Cuts the two largest files of a checkpoint step's state (the parameters' and the
    optimizer state's arrays) to half their size."""
    files = [
        os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs
    ]
    for path in sorted(files, key=os.path.getsize)[-2:]:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_to_the_newest_intact_one(reference, tmp_path):
    workdir = str(tmp_path / "run")
    launch(workdir, "--config.total_steps=4", "--config.checkpoint_every_steps=2")
    _truncate_array_files(os.path.join(workdir, "checkpoints", "4"))
    with pytest.raises(CheckpointError, match=r"checkpoint step 4 in .* is unreadable"):
        loading.load_params(workdir)  # what evaluate and generate get: one line
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    cmd = [sys.executable, "-m", "infini_jax.train", "--config=configs/tiny.py", *SMALL]
    args = [f"--workdir={workdir}", "--config.checkpoint_every_steps=2"]
    r = subprocess.run(
        [*cmd, *args, "--config.total_steps=6"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    warnings = [ln for ln in r.stdout.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "checkpoint step 4 in" in warnings[0], r.stdout
    assert "starting at step 2" in r.stdout and "Traceback" not in r.stderr
    assert "Event loop is closed" not in r.stderr
    assert losses(workdir) == reference  # steps 3-4 redone from step 2: bitwise the same
    assert os.path.isdir(os.path.join(workdir, "corrupt_checkpoints", "4"))  # kept, aside

    for step in (2, 4, 6):  # now nothing is intact
        _truncate_array_files(os.path.join(workdir, "checkpoints", str(step)))
    r = subprocess.run(
        [*cmd, *args, "--config.total_steps=8"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert r.returncode == 2
    assert re.fullmatch(
        r"error: no intact checkpoint in \S+ \(steps \[[\d, ]+\] are all unreadable\); .*",
        r.stderr.strip(),
    )
