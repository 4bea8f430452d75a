r"""The main job: sharded training with orbax checkpoints, exact resume and metrics.

  python -m infini_jax.train --config=configs/tiny.py --workdir=DIR [--config.x=y ...]

Re-running the same command resumes from the latest checkpoint in DIR; once `total_steps` are
done it says so and exits. Several processes (hosts): pass --coordinator_address,
--num_processes and --process_id (`launch/local.sh` sets them through the environment), or
--distributed on a SLURM / Cloud TPU / GKE job; each process feeds its share of the global
batch and only process 0 writes logs.
"""

import contextlib
import dataclasses
import signal
import sys
import time
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import flags
from jax.experimental import multihost_utils
from ml_collections import config_flags
from tqdm import tqdm

from infini_jax import checkpoint, cli, model, ops, sharding, storage
from infini_jax.config import save_config, validate
from infini_jax.data import pipeline
from infini_jax.data.config import DataConfig
from infini_jax.data.tokenizer import Tokenizer
from infini_jax.errors import ConfigError, Error
from infini_jax.eval import in_training
from infini_jax.flops import flops_per_token
from infini_jax.metrics import Writer, peak_flops
from infini_jax.model_config import ModelConfig
from infini_jax.optim import OptimizerConfig
from infini_jax.profiling import StepProfiler
from infini_jax.train_report import format_summary, write_report
from infini_jax.train_step import TrainState, init_state, loss_sums, make_training


class TrainingStopped(Error):
    """The run stopped on purpose (non-finite steps); checkpoints are intact."""


@dataclasses.dataclass
class _Run:
    """What start-up resolved; the step loop and the end of the run read it."""

    config: ml_collections.ConfigDict
    workdir: str
    model_cfg: ModelConfig
    data_cfg: DataConfig
    opt: OptimizerConfig
    mesh: jax.sharding.Mesh
    tok: Tokenizer
    mngr: ocp.CheckpointManager
    start: int  # the last completed step (0: a new run)
    proc: int
    n_proc: int
    evals: list[in_training.Scheduled]  # config.evals that are on

    def print(self, *args) -> None:
        if self.proc == 0:
            print(*args)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes) training; returns the last logged metrics.

    The steps, top to bottom: set-up (validation, the workdir, the tokenizer, the checkpoint
    manager), the initial state (restored, imported or initialised), the step loop with its
    periodic work, and the end (the report). A start that fails leaves the workdir as it was.
    """
    workdir = storage.absolute(workdir)
    with _undo_on_failure(workdir):
        run = _set_up(config, workdir)
        if run.start >= run.config.total_steps:
            run.print(
                f"{workdir}: already trained {run.start} of total_steps="
                f"{run.config.total_steps}; nothing to do (raise --config.total_steps to continue)"
            )
            return _missing_report(run)
        training = make_training(run.config, run.model_cfg, run.mesh)
        iterator = iter(_dataset(run, "train", run.data_cfg.batch_size // run.n_proc))
        state = _initial_state(run, training, iterator)
        if run.proc == 0:
            save_config(run.config, workdir)
            _export_tokenizer(run)
    state, last = _Loop(run, training, iterator).run(state)
    if int(state.step) == run.config.total_steps and run.config.report.passkey_multiples:
        params = multihost_utils.process_allgather(state.params, tiled=True)  # all processes
        if run.proc == 0:
            last.update(_report(run, params))
    return last


@contextlib.contextmanager
def _undo_on_failure(workdir: str) -> Iterator[None]:
    """A start that fails (a bad config value, data or checkpoint found during set-up) leaves
    the workdir as it found it: what set-up created there (the directory itself, the built-in
    tokenizer, an empty `checkpoints/`) is removed by process 0. Entries that were there
    before, such as the checkpoints of a run being resumed, are never touched. (Not after a
    storage failure: an unreachable bucket would only be retried again.)"""
    existed = storage.exists(workdir)
    before = set(storage.listdir(workdir))
    try:
        yield
    except BaseException as e:
        if jax.process_index() == 0 and not isinstance(e, storage.StorageError):
            with contextlib.suppress(OSError):
                if not existed:
                    storage.rmtree(workdir)
                else:
                    for name in set(storage.listdir(workdir)) - before:
                        storage.rmtree(storage.join(workdir, name))
        raise


def _set_up(config: ml_collections.ConfigDict, workdir: str) -> _Run:
    """Validates everything a run reads, then opens the workdir: config, mesh, batch split,
    tokenizer, checkpoint manager, and whether the latest checkpoint fits the config."""
    validate(config)
    if config.init_from and not checkpoint.has_steps(workdir):
        checkpoint.require(config.init_from, "--config.init_from")  # before writing anything
    if config.init_from_model and config.init_from:
        config = checkpoint.adopt_model(config, workdir)
    model_cfg = validate(config)
    data_cfg = DataConfig.from_config(config.data)
    opt = OptimizerConfig.from_config(config.optimizer)
    evals = in_training.schedule(config)
    mesh = sharding.make_mesh(sharding.MeshConfig.from_config(config.mesh))
    sharding.check_batch(data_cfg.batch_size, mesh, opt.micro_batches)
    in_training.check_fits(evals, mesh, model_cfg)
    n_proc, proc = jax.process_count(), jax.process_index()
    if data_cfg.batch_size % n_proc:
        raise ConfigError(
            f"config.data.batch_size={data_cfg.batch_size} is not divisible by "
            f"the {n_proc} processes"
        )
    _check_workdir(workdir)
    tok = pipeline.resolve_tokenizer(
        data_cfg, workdir, model_cfg.vocab_size, config.seed, model_cfg
    )
    mngr = checkpoint.manager(workdir, config)
    start = mngr.latest_step() or 0
    if start:  # before config.json is rewritten; an unreadable step is handled at restore
        checkpoint.check_resumable(mngr, start, config)
    return _Run(
        config, workdir, model_cfg, data_cfg, opt, mesh, tok, mngr, start, proc, n_proc, evals
    )


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


def _export_tokenizer(run: _Run) -> None:
    """WORKDIR/hf_tokenizer: the run's tokenizer as a directory Hugging Face's AutoTokenizer
    loads (for lm-eval's RULER tasks through `infini_jax.lm_eval`), written once."""
    from infini_jax.convert import export_tokenizer

    out = storage.join(run.workdir, checkpoint.HF_TOKENIZER)
    if not storage.exists(storage.join(out, "tokenizer_config.json")):
        export_tokenizer(run.tok, out)


def _dataset(run: _Run, split: str, batch_size: int):
    """This process's share of `split`'s batches."""
    return pipeline.make_dataset(
        run.data_cfg,
        tokenizer_path=run.tok.path,
        seed=run.config.seed,
        batch_size=batch_size,
        split=split,
        process_index=run.proc,
        process_count=run.n_proc,
    )


def _initial_state(run: _Run, training, iterator) -> TrainState:
    """The state the loop starts from: the latest intact checkpoint (and the data iterator's
    position), the parameters of `init_from`, or a fresh initialisation from the seed."""
    cfg, model_cfg = run.config, run.model_cfg
    if run.start:
        run.start, state, data_state = checkpoint.restore_intact(
            run.mngr, training.abstract, training.state_sh, cfg, run.print
        )
        pipeline.restore_iterator(
            iterator, data_state, run.proc, run.n_proc, run.data_cfg.host_sharding
        )
    elif cfg.init_from:
        params, note = checkpoint.init_params_from(
            cfg.init_from, model_cfg, training.params_sh, cfg.seed
        )
        state = jax.jit(
            lambda p: init_state(model_cfg, training.tx, cfg.seed, p),
            out_shardings=training.state_sh,
        )(params)
        run.print(note)
    else:
        state = jax.jit(
            lambda: init_state(model_cfg, training.tx, cfg.seed), out_shardings=training.state_sh
        )()
    return state


class _Loop:
    """The step loop and its periodic work: metrics (with validation), checkpoints, the
    non-finite guard, the profiler, and a SIGTERM that saves and stops."""

    def __init__(self, run: _Run, training, iterator):
        cfg, data_cfg = run.config, run.data_cfg
        self.run_, self.training, self.iterator = run, training, iterator
        self.validate = _validation(run, training)
        self.evals = in_training.InTraining(
            run.evals, run.model_cfg, run.tok, run.mesh, cfg.total_steps
        )
        self.tokens_per_step = data_cfg.batch_size * data_cfg.seq_len
        self.flops_tok = flops_per_token(run.model_cfg, data_cfg.seq_len)
        self.peak, peak_source = peak_flops()
        self.writer = Writer(run.workdir, run.start, enabled=run.proc == 0)
        self.profiler = StepProfiler(run.workdir, cfg.profile.start_step, cfg.profile.num_steps)
        self.advice = (
            "the checkpoints committed before are intact: re-run the same command to resume "
            f"once {run.workdir} is reachable"
        )
        self.last: dict = {}
        self.window_start, self.window_steps = time.perf_counter(), 0
        self.sigterm = False
        kernel, why = ops.kernels.resolve(
            run.model_cfg.attention_impl,
            run.model_cfg.window_len(data_cfg.seq_len),
            ops.kernels.mesh_platform(run.mesh),
        )
        run.print(
            f"{run.model_cfg.attention} model, {model.count_params(training.abstract.params):,} "
            f"parameters; attention kernel {kernel} ({why}); mesh {dict(run.mesh.shape)}; "
            f"{run.n_proc} process(es); starting at step {run.start}; MFU peak: "
            f"{self.peak / 1e9:,.0f} GFLOP/s per device ({peak_source})"
        )

    def run(self, state: TrainState) -> tuple[TrainState, dict]:
        """Steps from `run.start + 1` to `total_steps` (or a SIGTERM); the final state and the
        last logged metrics. Every checkpoint has committed when it returns."""
        run, cfg = self.run_, self.run_.config
        previous = signal.signal(signal.SIGTERM, lambda *_: setattr(self, "sigterm", True))
        bar = tqdm(
            total=cfg.total_steps,
            initial=run.start,
            disable=run.proc != 0,
            desc="train",
            unit="step",
            file=sys.stderr,
        )
        pending = None  # (step, non-finite counter) of the previous step, read after dispatching
        unreachable = False
        try:
            with jax.set_mesh(run.mesh):  # validation too: kernels follow the mesh
                for step in range(run.start + 1, cfg.total_steps + 1):
                    batch = _global_batch(next(self.iterator), self.training.batch_sh)
                    self.profiler.before(step)
                    state, metrics = self.training.step(state, batch)
                    if traced := self.profiler.after(step, state):
                        print(f"profile of steps {cfg.profile.start_step}-{step}: {traced}")
                    if pending is not None:  # checks every step without stalling the queue
                        self._check_nonfinite(*pending)
                    pending = (step, metrics["nonfinite_run"])
                    self.window_steps += 1
                    bar.update()
                    due = step % cfg.log_every_steps == 0 or step == cfg.total_steps
                    if due or self.evals.due(step):
                        self._log(step, state, metrics)
                        bar.set_postfix(loss=f"{float(self.last['loss']):.3f}")
                    if step == cfg.total_steps:
                        self._check_nonfinite(*pending)
                    if step % cfg.checkpoint_every_steps == 0 or step == cfg.total_steps:
                        self._save(step, state)
                    if self.sigterm:
                        if step % cfg.checkpoint_every_steps:
                            self._save(step, state)
                        print(f"SIGTERM: saved step {step} to {run.workdir}/checkpoints; exiting")
                        break
        except storage.StorageError:
            unreachable = True  # nothing more to upload: fail now, not after more retries
            raise
        finally:
            bar.close()
            self.profiler.stop()
            signal.signal(signal.SIGTERM, previous)
            self._close(unreachable)
        return state, self.last

    def _log(self, step: int, state: TrainState, metrics: dict) -> None:
        """Writes the metrics of `step` (with throughput, MFU and, when due, validation)."""
        metrics = jax.device_get(metrics)
        elapsed = time.perf_counter() - self.window_start
        rate = self.tokens_per_step * self.window_steps / elapsed
        self.last = {
            **metrics,
            "step_time_s": elapsed / self.window_steps,
            "tokens_per_s": rate,
            "mfu": rate * self.flops_tok / (self.peak * jax.device_count()),
        }
        if self.validate and step % self.run_.config.eval_every_steps == 0:
            self.last["val_loss"] = self.validate(state.params)
        self.last |= self.evals.run(step, state.params)  # config.evals due at this step
        self.writer.write(step, self.last)
        self.window_start, self.window_steps = time.perf_counter(), 0

    def _check_nonfinite(self, step: int, run_length) -> None:
        limit = self.run_.opt.max_nonfinite_steps
        if int(run_length) >= limit:
            raise TrainingStopped(
                f"step {step}: {int(run_length)} non-finite steps in a row (limit "
                f"optimizer.max_nonfinite_steps={limit}); their updates were skipped and the "
                f"checkpoints in {self.run_.workdir}/checkpoints are intact; lower the learning "
                "rate or check the data"
            )

    def _save(self, step: int, state: TrainState) -> None:
        run = self.run_
        data_state = pipeline.iterator_state(
            self.iterator, run.proc, run.n_proc, run.data_cfg.host_sharding
        )
        # An asynchronous save that failed in the background raises at the next save.
        with storage.reporting(f"saving checkpoint step {step} to {run.workdir}", self.advice):
            checkpoint.wait(run.mngr, run.config.checkpoint_timeout_s)  # the previous committed
            checkpoint.save(run.mngr, step, state, data_state, run.config)
            self.writer.sync()  # gs://: the metrics up to a checkpoint reach the bucket with it

    def _close(self, unreachable: bool) -> None:
        """Waits for the last checkpoint and closes the metrics (not when the bucket is gone)."""
        run = self.run_
        if unreachable:
            self.writer.close(sync=False)
            return
        with storage.reporting(f"finishing the checkpoints in {run.workdir}", self.advice):
            checkpoint.wait(run.mngr, run.config.checkpoint_timeout_s)
            run.mngr.close()
            self.writer.close()


def _global_batch(local: dict, batch_sharding) -> dict:
    return {
        k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(v))
        for k, v in local.items()
    }


def _validation(run: _Run, training) -> Callable[[object], float] | None:
    """A function params → mean loss over `eval_batches` held-out batches (same each time)."""
    cfg = run.config
    if not cfg.eval_every_steps:
        return None
    sums = jax.jit(
        lambda params, batch: loss_sums(run.model_cfg, params, batch)[:2],
        in_shardings=(training.state_sh.params, training.batch_sh),
    )
    data_batch = run.data_cfg.batch_size // run.n_proc

    def mean_loss(params) -> float:
        total, count = 0.0, 0.0
        for i, batch in enumerate(_dataset(run, "validation", data_batch)):
            if i == cfg.eval_batches or len(batch["tokens"]) != data_batch:
                break  # enough, or a final partial batch that would not split over the mesh
            nll, n = sums(params, _global_batch(batch, training.batch_sh))
            total, count = total + float(nll), count + float(n)
        return total / max(count, 1.0)

    return mean_loss


def _report(run: _Run, params) -> dict:
    """Writes the end-of-run report (process 0); returns the last metrics' passkey entry."""
    summary = write_report(run.workdir, run.config, run.model_cfg, params, run.tok)
    print(f"report: {run.workdir}/report.md; {format_summary(summary)}")
    return {"passkey": summary}


def _missing_report(run: _Run) -> dict:
    """A finished run whose report was never written (it stopped after the last checkpoint):
    writes it from the last checkpoint's parameters."""
    report = storage.join(run.workdir, "report.md")
    if not run.config.report.passkey_multiples or storage.exists(report):
        return {}
    if run.n_proc > 1:
        run.print(f"{report} is missing: run this command in one process to write it")
        return {}
    _, step, params = checkpoint.load_params(run.workdir)
    print(f"writing the missing report from step {step}")
    return _report(run, params)


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
