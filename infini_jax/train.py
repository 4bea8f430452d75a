r"""The main job: sharded training with orbax checkpoints, exact resume and metrics.

  python -m infini_jax.train --config=configs/tiny.py --workdir=DIR [--config.x=y ...]

Re-running the same command resumes from the latest checkpoint in DIR; once `total_steps` are
done it says so and exits. Several processes (hosts): pass --coordinator_address,
--num_processes and --process_id (`launch/local.sh` sets them through the environment), or
--distributed on a SLURM / Cloud TPU / GKE job; each process feeds its share of the global
batch and only process 0 writes logs.
"""

import contextlib
import signal
import sys
import time

import jax
import ml_collections
import numpy as np
from absl import flags
from jax.experimental import multihost_utils
from ml_collections import config_flags
from tqdm import tqdm

from infini_jax import checkpoint, cli, model, ops, sharding, storage
from infini_jax.config import save_config, validate
from infini_jax.data import pipeline
from infini_jax.data.config import DataConfig
from infini_jax.errors import ConfigError, Error
from infini_jax.flops import flops_per_token
from infini_jax.metrics import Writer, peak_flops
from infini_jax.optim import OptimizerConfig
from infini_jax.profiling import StepProfiler
from infini_jax.train_report import format_summary, write_report
from infini_jax.train_step import TrainState, init_state, loss_sums, make_training


class TrainingStopped(Error):
    """The run stopped on purpose (non-finite steps); checkpoints are intact."""


def _check_workdir(workdir: str) -> None:
    try:
        storage.makedirs(workdir)
        probe = storage.join(workdir, f".write_test_{jax.process_index()}")
        storage.write_text(probe, "ok")
        storage.remove(probe)
    except OSError as e:
        reason = e.strerror or " ".join(str(e).split())[:200]
        if storage.is_remote(workdir) and isinstance(e, FileNotFoundError):
            reason = "no such bucket, or no access to it"
        raise ConfigError(
            f"workdir {workdir} is not writable ({reason}); choose another --workdir"
        ) from None


def _global_batch(local: dict, batch_sharding) -> dict:
    return {
        k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(v))
        for k, v in local.items()
    }


def _validation(config, model_cfg, data_cfg, tok, state_sh, batch_sh, proc, n_proc):
    """A function params → mean loss over `eval_batches` held-out batches (same each time)."""
    if not config.eval_every_steps:
        return None
    sums = jax.jit(
        lambda params, batch: loss_sums(model_cfg, params, batch)[:2],
        in_shardings=(state_sh.params, batch_sh),
    )
    data_batch = data_cfg.batch_size // n_proc

    def run(params) -> float:
        data = pipeline.make_dataset(
            data_cfg,
            tokenizer_path=tok.path,
            seed=config.seed,
            batch_size=data_batch,
            split="validation",
            process_index=proc,
            process_count=n_proc,
        )
        total, count = 0.0, 0.0
        for i, batch in enumerate(data):
            if i == config.eval_batches or len(batch["tokens"]) != data_batch:
                break  # enough, or a final partial batch that would not split over the mesh
            nll, n = sums(params, _global_batch(batch, batch_sh))
            total, count = total + float(nll), count + float(n)
        return total / max(count, 1.0)

    return run


def _report(workdir: str, config, model_cfg, params, tok) -> dict:
    """Writes the end-of-run report (process 0); returns the last metrics' passkey entry."""
    summary = write_report(workdir, config, model_cfg, params, tok)
    print(f"report: {workdir}/report.md; {format_summary(summary)}")
    return {"passkey": summary}


def _missing_report(config, workdir: str, model_cfg, tok) -> dict:
    """A finished run whose report was never written (it stopped after the last checkpoint):
    writes it from the last checkpoint's parameters."""
    if not config.report.passkey_multiples or storage.exists(storage.join(workdir, "report.md")):
        return {}
    if jax.process_count() > 1:
        if jax.process_index() == 0:
            print(f"{workdir}/report.md is missing: run this command in one process to write it")
        return {}
    _, step, params = checkpoint.load_params(workdir)
    print(f"writing the missing report from step {step}")
    return _report(workdir, config, model_cfg, params, tok)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes) training; returns the last logged metrics."""
    workdir = storage.absolute(workdir)
    validate(config)
    if config.init_from and not checkpoint.has_steps(workdir):
        checkpoint.require(config.init_from, "--config.init_from")  # before writing anything
    if config.init_from_model and config.init_from:
        config = checkpoint.adopt_model(config, workdir)
    model_cfg = validate(config)
    data_cfg = DataConfig.from_config(config.data)
    o = OptimizerConfig.from_config(config.optimizer)
    _check_workdir(workdir)
    mesh = sharding.make_mesh(sharding.MeshConfig.from_config(config.mesh))
    sharding.check_batch(data_cfg.batch_size, mesh, o.micro_batches)
    n_proc, proc = jax.process_count(), jax.process_index()
    if data_cfg.batch_size % n_proc:
        raise ConfigError(
            f"config.data.batch_size={data_cfg.batch_size} is not divisible by "
            f"the {n_proc} processes"
        )
    tok = pipeline.resolve_tokenizer(
        data_cfg, workdir, model_cfg.vocab_size, config.seed, model_cfg
    )
    mngr = checkpoint.manager(workdir, config)
    start = mngr.latest_step() or 0
    if start:  # before config.json is rewritten; an unreadable step is handled at restore
        checkpoint.check_resumable(mngr, start, config)
    if start >= config.total_steps:
        print(
            f"{workdir}: already trained {start} of total_steps={config.total_steps}; nothing "
            "to do (raise --config.total_steps to continue)"
        )
        return _missing_report(config, workdir, model_cfg, tok)
    if proc == 0:
        save_config(config, workdir)

    training = make_training(config, model_cfg, mesh)
    tx, abstract, params_sh = training.tx, training.abstract, training.params_sh
    state_sh, batch_sh = training.state_sh, training.batch_sh
    data = pipeline.make_dataset(
        data_cfg,
        tokenizer_path=tok.path,
        seed=config.seed,
        batch_size=data_cfg.batch_size // n_proc,
        process_index=proc,
        process_count=n_proc,
    )
    iterator = iter(data)
    if start:
        log = print if proc == 0 else (lambda _: None)
        start, state, data_state = checkpoint.restore_intact(mngr, abstract, state_sh, config, log)
        pipeline.restore_iterator(iterator, data_state, proc, n_proc, data_cfg.host_sharding)
    elif config.init_from:
        params, note = checkpoint.init_params_from(
            config.init_from, model_cfg, params_sh, config.seed
        )
        state = jax.jit(
            lambda p: init_state(model_cfg, tx, config.seed, p), out_shardings=state_sh
        )(params)
        if proc == 0:
            print(note)
    else:
        state = jax.jit(lambda: init_state(model_cfg, tx, config.seed), out_shardings=state_sh)()

    step_fn = training.step
    validate_fn = _validation(config, model_cfg, data_cfg, tok, state_sh, batch_sh, proc, n_proc)
    tokens_per_step = data_cfg.batch_size * data_cfg.seq_len
    flops_tok = flops_per_token(model_cfg, data_cfg.seq_len)
    peak, peak_source = peak_flops()
    writer = Writer(workdir, start, enabled=proc == 0)
    profiler = StepProfiler(workdir, config.profile.start_step, config.profile.num_steps)
    stop = {"sigterm": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(sigterm=True))

    advice = (
        "the checkpoints committed before are intact: re-run the same command to resume once "
        f"{workdir} is reachable"
    )

    def save(step: int, st: TrainState) -> None:
        data_state = pipeline.iterator_state(iterator, proc, n_proc, data_cfg.host_sharding)
        # An asynchronous save that failed in the background raises at the next save.
        with storage.reporting(f"saving checkpoint step {step} to {workdir}", advice):
            checkpoint.wait(mngr, config.checkpoint_timeout_s)  # the previous one committed
            checkpoint.save(mngr, step, st, data_state, config)
            writer.sync()  # gs://: the metrics up to a checkpoint reach the bucket with it

    kernel, why = ops.kernels.resolve(
        model_cfg.attention_impl,
        model_cfg.window_len(data_cfg.seq_len),
        ops.kernels.mesh_platform(mesh),
    )
    if proc == 0:
        print(
            f"{model_cfg.attention} model, {model.count_params(abstract.params):,} parameters; "
            f"attention kernel {kernel} ({why}); mesh {dict(mesh.shape)}; {n_proc} "
            f"process(es); starting at step {start}; MFU peak: {peak / 1e9:,.0f} GFLOP/s per "
            f"device ({peak_source})"
        )
    contexts = contextlib.ExitStack()
    contexts.enter_context(jax.set_mesh(mesh))  # validation too: kernels follow the mesh
    bar = tqdm(
        total=config.total_steps,
        initial=start,
        disable=proc != 0,
        desc="train",
        unit="step",
        file=sys.stderr,
    )
    last, window_start, window_steps = {}, time.perf_counter(), 0
    pending = None  # (step, non-finite counter) of the previous step, read after dispatching

    def check_nonfinite(step: int, run) -> None:
        if int(run) >= o.max_nonfinite_steps:
            raise TrainingStopped(
                f"step {step}: {int(run)} non-finite steps in a row (limit "
                f"optimizer.max_nonfinite_steps={o.max_nonfinite_steps}); their updates were "
                f"skipped and the checkpoints in {workdir}/checkpoints are intact; lower the "
                "learning rate or check the data"
            )

    unreachable = False
    try:
        for step in range(start + 1, config.total_steps + 1):
            batch = _global_batch(next(iterator), batch_sh)
            profiler.before(step)
            state, metrics = step_fn(state, batch)
            if traced := profiler.after(step, state):
                print(f"profile of steps {config.profile.start_step}-{step}: {traced}")
            if pending is not None:  # checks every step without stalling the device queue
                check_nonfinite(*pending)
            pending = (step, metrics["nonfinite_run"])
            window_steps += 1
            bar.update()
            if step % config.log_every_steps == 0 or step == config.total_steps:
                metrics = jax.device_get(metrics)
                elapsed = time.perf_counter() - window_start
                rate = tokens_per_step * window_steps / elapsed
                last = {
                    **metrics,
                    "step_time_s": elapsed / window_steps,
                    "tokens_per_s": rate,
                    "mfu": rate * flops_tok / (peak * jax.device_count()),
                }
                if config.eval_every_steps and step % config.eval_every_steps == 0:
                    last["val_loss"] = validate_fn(state.params)
                writer.write(step, last)
                bar.set_postfix(loss=f"{float(metrics['loss']):.3f}")
                window_start, window_steps = time.perf_counter(), 0
            if step == config.total_steps:
                check_nonfinite(*pending)
            if step % config.checkpoint_every_steps == 0 or step == config.total_steps:
                save(step, state)
            if stop["sigterm"]:
                if step % config.checkpoint_every_steps:
                    save(step, state)
                print(f"SIGTERM: saved step {step} to {workdir}/checkpoints; exiting")
                break
    except storage.StorageError:
        unreachable = True  # nothing more to upload: fail now, not after more retries
        raise
    finally:
        bar.close()
        profiler.stop()
        contexts.close()
        signal.signal(signal.SIGTERM, previous)
        if not unreachable:
            with storage.reporting(f"finishing the checkpoints in {workdir}", advice):
                checkpoint.wait(mngr, config.checkpoint_timeout_s)
                mngr.close()
                writer.close()
        else:
            writer.close(sync=False)
    if int(state.step) == config.total_steps and config.report.passkey_multiples:
        params = multihost_utils.process_allgather(state.params, tiled=True)  # all processes
        if proc == 0:
            last.update(_report(workdir, config, model_cfg, params, tok))
    return last


def main(argv: list[str] | None = None) -> None:
    config_flags.DEFINE_config_file("config", "configs/tiny.py", "Config file[:preset].")
    flags.DEFINE_string("workdir", None, "Checkpoints, metrics and the config go here.")
    cli.define_job_flags()

    def run(_):
        cli.require("workdir")
        cli.start_job()
        try:
            train(flags.FLAGS.config, flags.FLAGS.workdir)
        except storage.StorageError as e:
            # orbax's save thread may retry the bucket for minutes; what was committed stays.
            cli.fail(f"error: {e}", now=True)

    cli.run(run, argv)


if __name__ == "__main__":
    main()
