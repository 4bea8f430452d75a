"""The training step loop and its periodic work (called by `infini_jax.train`): metrics to
metrics.jsonl, TensorBoard and W&B (with validation and in-training evals), checkpoints by
step and by time, the non-finite guard, the profiler, a SIGTERM that saves and stops, and the
clock of where the wall time went (`infini_jax.training.goodput`)."""

import dataclasses
import signal
import sys
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from tqdm import tqdm

from infini_jax import model, ops, sections, storage
from infini_jax.data import pipeline
from infini_jax.data.config import DataConfig
from infini_jax.data.tokenizer import Tokenizer
from infini_jax.errors import Error
from infini_jax.eval import in_training
from infini_jax.model.config import ModelConfig
from infini_jax.model.flops import flops_per_token
from infini_jax.training import checkpoint, goodput, tracking, validation
from infini_jax.training.metrics import Writer, peak_flops
from infini_jax.training.optim import OptimizerConfig
from infini_jax.training.profiling import StepProfiler
from infini_jax.training.step import TrainState


class TrainingStopped(Error):
    """The run stopped on purpose (non-finite steps); checkpoints are intact."""


@dataclasses.dataclass
class Run:
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
    clock: goodput.Clock  # where this process's wall time went, since its start

    def print(self, *args) -> None:
        if self.proc == 0:
            print(*args)


def dataset(run: Run, split: str, batch_size: int, source: int | None = None):
    """This process's share of `split`'s batches (of the `source`-th source only, if given)."""
    return pipeline.make_dataset(
        run.data_cfg,
        tokenizer_path=run.tok.path,
        seed=run.config.seed,
        batch_size=batch_size,
        split=split,
        process_index=run.proc,
        process_count=run.n_proc,
        source=source,
    )


class Loop:
    """The step loop and its periodic work: metrics (with validation), checkpoints, the
    non-finite guard, the profiler, and a SIGTERM that saves and stops."""

    def __init__(self, run: Run, training, iterator):
        cfg, data_cfg = run.config, run.data_cfg
        self.run_, self.training, self.iterator = run, training, iterator
        self.clock = run.clock
        self.validate = validation.make(run, training, _global_batch, dataset)
        self.evals = in_training.InTraining(
            run.evals, run.model_cfg, run.tok, run.mesh, cfg.total_steps
        )
        self.tokens_per_step = data_cfg.batch_size * data_cfg.seq_len
        self.flops_tok = flops_per_token(run.model_cfg, data_cfg.seq_len)
        self.peak, peak_source = peak_flops()
        n_params = model.count_params(training.abstract.params)
        wandb_cfg = sections.WandbConfig.from_config(cfg.wandb)
        self.tracker = tracking.Tracker(
            wandb_cfg if run.proc == 0 else sections.WandbConfig(),  # process 0 logs
            run.workdir,
            cfg.to_dict(),
            {
                "parameters": n_params,
                "mesh": dict(run.mesh.shape),
                "processes": run.n_proc,
                "devices": jax.device_count(),
                "device_kind": jax.devices()[0].device_kind,
                "git_commit": tracking.git_commit(),
                "versions": tracking.versions(),
            },
        )
        self.writer = Writer(run.workdir, run.start, enabled=run.proc == 0, tracker=self.tracker)
        # Steps an earlier attempt ran (and logged) past the checkpoint this one resumed from.
        self.redo_until = multihost_utils.broadcast_one_to_all(np.int64(self.writer.logged_until))
        self.ledger = goodput.Ledger.open(run.workdir) if run.proc == 0 else None
        self.profiler = StepProfiler(run.workdir, cfg.profile.start_step, cfg.profile.num_steps)
        self.advice = (
            "the checkpoints committed before are intact: re-run the same command to resume "
            f"once {run.workdir} is reachable"
        )
        self.last: dict = {}
        self.window_start, self.window_steps = time.perf_counter(), 0
        self.saved_at = time.monotonic()  # the last checkpoint (or the start)
        self.step_done = run.start
        self.sigterm = False
        kernel, why = ops.kernels.resolve(
            run.model_cfg.attention_impl,
            run.model_cfg.window_len(data_cfg.seq_len),
            ops.kernels.mesh_platform(run.mesh),
        )
        wandb = f"; W&B run {self.tracker.id}" if self.tracker.id else ""
        run.print(
            f"{run.model_cfg.attention} model, {n_params:,} parameters; attention kernel "
            f"{kernel} ({why}); mesh {dict(run.mesh.shape)}; {run.n_proc} process(es); "
            f"starting at step {run.start}; MFU peak: {self.peak / 1e9:,.0f} GFLOP/s per device "
            f"({peak_source}){wandb}"
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
                    self.clock.switch("redone" if step <= self.redo_until else "train")
                    with self.clock.spend("data"):
                        batch = _global_batch(next(self.iterator), self.training.batch_sh)
                    self.profiler.before(step)
                    state, metrics = self.training.step(state, batch)
                    if traced := self.profiler.after(step, state):
                        print(f"profile of steps {cfg.profile.start_step}-{step}: {traced}")
                    if pending is not None:  # checks every step without stalling the queue
                        self._check_nonfinite(*pending)
                    pending = (step, metrics["nonfinite_run"])
                    self.window_steps += 1
                    self.step_done = step
                    bar.update()
                    due = step % cfg.log_every_steps == 0 or step == cfg.total_steps
                    if due or self.evals.due(step):
                        self._log(step, state, metrics)
                        bar.set_postfix(loss=f"{float(self.last['loss']):.3f}")
                    if step == cfg.total_steps:
                        self._check_nonfinite(*pending)
                    by_step = step % cfg.checkpoint_every_steps == 0 or step == cfg.total_steps
                    if by_step or (due and self._time_to_save()):
                        self._save(step, state)
                    if self.sigterm:
                        if not by_step:
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
        """Writes the metrics of `step` (with throughput, MFU, when due validation and evals,
        and the interval's time per activity)."""
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
            with self.clock.spend("validation"):
                self.last |= self.validate(state.params)  # per source, and val_loss
        with self.clock.spend("evals"):
            self.last |= self.evals.run(step, state.params)  # config.evals due at this step
        self.last |= self.clock.interval()
        self.writer.write(step, self.last)
        if self.ledger is not None:
            self.ledger.record(self.clock, self.run_.start + 1, step)
        self.window_start, self.window_steps = time.perf_counter(), 0

    def _time_to_save(self) -> bool:
        """`checkpoint_every_minutes` have passed since the last checkpoint (process 0's
        clock decides for all)."""
        minutes = self.run_.config.checkpoint_every_minutes
        if not minutes:
            return False
        late = np.bool_(time.monotonic() - self.saved_at >= 60 * minutes)
        return bool(multihost_utils.broadcast_one_to_all(late))

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
        jax.block_until_ready(state)  # the step's own compute is not checkpoint time
        with self.clock.spend("checkpoint"):
            data_state = pipeline.iterator_state(
                self.iterator, run.proc, run.n_proc, run.data_cfg.host_sharding
            )
            # An asynchronous save that failed in the background raises at the next save.
            with storage.reporting(f"saving checkpoint step {step} to {run.workdir}", self.advice):
                checkpoint.wait(run.mngr, run.config.checkpoint_timeout_s)  # the previous one
                checkpoint.save(run.mngr, step, state, data_state, run.config)
                self.writer.sync()  # gs://: the metrics up to a checkpoint reach the bucket too
        self.saved_at = time.monotonic()

    def _close(self, unreachable: bool) -> None:
        """Waits for the last checkpoint and closes the metrics (not when the bucket is gone)."""
        run = self.run_
        if unreachable:
            self.writer.close(sync=False)
            return
        with storage.reporting(f"finishing the checkpoints in {run.workdir}", self.advice):
            with self.clock.spend("checkpoint"):
                checkpoint.wait(run.mngr, run.config.checkpoint_timeout_s)
                run.mngr.close()
            if self.ledger is not None and self.step_done > run.start:
                self.ledger.record(self.clock, run.start + 1, self.step_done)
            self.writer.close()


def _global_batch(local: dict, batch_sharding) -> dict:
    return {
        k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(v))
        for k, v in local.items()
    }
