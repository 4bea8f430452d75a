r"""The main job: sharded training with orbax checkpoints, exact resume and metrics.

  python -m infini_jax.train --config=configs/tiny.py --workdir=DIR [--config.x=y ...]

Re-running the same command resumes from the latest checkpoint in DIR; once `total_steps` are
done it says so and exits. Several processes (hosts): pass --coordinator_address,
--num_processes and --process_id (`launch/local.sh` sets them through the environment), or
--distributed on a SLURM / Cloud TPU / GKE job; each process feeds its share of the global
batch and only process 0 writes logs.
"""

import contextlib
from collections.abc import Iterator

import jax
import ml_collections
from absl import flags
from jax.experimental import multihost_utils
from ml_collections import config_flags

from infini_jax import cli, sections, storage
from infini_jax.config import save_config, validate
from infini_jax.data import pipeline
from infini_jax.data.config import DataConfig
from infini_jax.errors import ConfigError
from infini_jax.eval import in_training
from infini_jax.parallel import sharding
from infini_jax.training import checkpoint, goodput, loading, tracking
from infini_jax.training.loop import Loop, Run, TrainingStopped, dataset
from infini_jax.training.optim import OptimizerConfig
from infini_jax.training.report import format_summary, write_report
from infini_jax.training.step import TrainState, init_state, make_training

__all__ = ["TrainingStopped", "train"]


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes) training; returns the last logged metrics.

    The steps, top to bottom: set-up (validation, the workdir, the tokenizer, the checkpoint
    manager), the initial state (restored, imported or initialised), the step loop with its
    periodic work, and the end (the report). A start that fails leaves the workdir as it was.
    """
    clock = goodput.Clock().activate()  # start-up counts from the package's import
    workdir = storage.absolute(workdir)
    with _undo_on_failure(workdir):
        run = _set_up(config, workdir, clock)
        if run.start >= run.config.total_steps:
            run.print(
                f"{workdir}: already trained {run.start} of total_steps="
                f"{run.config.total_steps}; nothing to do (raise --config.total_steps to continue)"
            )
            return _missing_report(run)
        training = make_training(run.config, run.model_cfg, run.mesh)
        iterator = iter(dataset(run, "train", run.data_cfg.batch_size // run.n_proc))
        state = _initial_state(run, training, iterator)
        if run.proc == 0:
            save_config(run.config, workdir)
            _export_tokenizer(run)
    loop = Loop(run, training, iterator)
    try:
        state, last = loop.run(state)
        if int(state.step) == run.config.total_steps and run.config.report.passkey_multiples:
            params = multihost_utils.process_allgather(state.params, tiled=True)  # all processes
            if run.proc == 0:
                last.update(_report(run, params))
                loop.tracker.images(_report_images(run.workdir))
    except BaseException:
        loop.tracker.finish(exit_code=1)
        raise
    loop.tracker.finish()
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


def _set_up(config: ml_collections.ConfigDict, workdir: str, clock: goodput.Clock) -> Run:
    """Validates everything a run reads, then opens the workdir: config, mesh, batch split,
    tokenizer, checkpoint manager, and whether the latest checkpoint fits the config."""
    validate(config)
    if config.init_from and not loading.has_steps(workdir):
        loading.require(config.init_from, "--config.init_from")  # before writing anything
    if config.init_from_model and config.init_from:
        config = loading.adopt_model(config, workdir)
    model_cfg = validate(config)
    data_cfg = DataConfig.from_config(config.data)
    opt = OptimizerConfig.from_config(config.optimizer)
    evals = in_training.schedule(config)
    mesh = sharding.make_mesh(sections.MeshConfig.from_config(config.mesh))
    sharding.check_batch(data_cfg.batch_size, mesh, opt.micro_batches)
    in_training.check_fits(evals, mesh, model_cfg)
    n_proc, proc = jax.process_count(), jax.process_index()
    if data_cfg.batch_size % n_proc:
        raise ConfigError(
            f"config.data.batch_size={data_cfg.batch_size} is not divisible by "
            f"the {n_proc} processes"
        )
    cli.writable(workdir, "workdir", keep=True)  # set-up creates it; a failure undoes that
    tracking.check_start(sections.WandbConfig.from_config(config.wandb), workdir)
    tok = pipeline.resolve_tokenizer(
        data_cfg, workdir, model_cfg.vocab_size, config.seed, model_cfg
    )
    mngr = checkpoint.manager(workdir, config)
    start = mngr.latest_step() or 0
    if start:  # before config.json is rewritten; an unreadable step is handled at restore
        checkpoint.check_resumable(mngr, start, config)
    return Run(
        config,
        workdir,
        model_cfg,
        data_cfg,
        opt,
        mesh,
        tok,
        mngr,
        start,
        proc,
        n_proc,
        evals,
        clock,
    )


def _export_tokenizer(run: Run) -> None:
    """WORKDIR/hf_tokenizer: the run's tokenizer as a directory Hugging Face's AutoTokenizer
    loads (for lm-eval's RULER tasks through `infini_jax.lm_eval`), written once."""
    from infini_jax.interop.tokenizer import export_tokenizer

    out = storage.join(run.workdir, loading.HF_TOKENIZER)
    if not storage.exists(storage.join(out, "tokenizer_config.json")):
        export_tokenizer(run.tok, out)


def _initial_state(run: Run, training, iterator) -> TrainState:
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
        params, note = loading.init_params_from(
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


def _report(run: Run, params) -> dict:
    """Writes the end-of-run report (process 0); returns the last metrics' passkey entry."""
    summary = write_report(run.workdir, run.config, run.model_cfg, params, run.tok)
    print(f"report: {run.workdir}/report.md; {format_summary(summary)}")
    return {"passkey": summary}


def _report_images(workdir: str) -> dict[str, str]:
    """The report's images, by name (those a run did not draw are skipped by the tracker)."""
    return {n: storage.join(workdir, f"{n}.png") for n in ("loss", "heatmap", "evals")}


def _missing_report(run: Run) -> dict:
    """A finished run whose report was never written (it stopped after the last checkpoint):
    writes it from the last checkpoint's parameters."""
    report = storage.join(run.workdir, "report.md")
    if not run.config.report.passkey_multiples or storage.exists(report):
        return {}
    if run.n_proc > 1:
        run.print(f"{report} is missing: run this command in one process to write it")
        return {}
    _, step, params = loading.load_params(run.workdir)
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
