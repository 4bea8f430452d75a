r"""Long-context evaluation of one checkpoint (any attention kind).

  python -m infini_jax.evaluate --config=configs/eval/passkey.py[:quick] \
      --checkpoint=WORKDIR[/STEP] --output=DIR [--config.lengths="(8192,131072)" ...]

Writes DIR/results.jsonl (one record per sample), DIR/summary.json, PNG plots and DIR/report.md,
and prints a table. Several processes: as for training (--coordinator_address, ...); samples
are split over the mesh's data axes and only process 0 writes.
"""

import sys
import time

import jax
import ml_collections
from absl import flags
from ml_collections import config_flags

from infini_jax import cli, model, sections, storage
from infini_jax.config import validate
from infini_jax.eval import report
from infini_jax.eval.config import validate_eval
from infini_jax.eval.run import check_batch, check_model, run_task
from infini_jax.parallel import sharding
from infini_jax.training import loading


def evaluate(config: ml_collections.ConfigDict, checkpoint_path: str, output: str) -> dict:
    """Runs the task; returns its summary (also written to `output/summary.json`)."""
    validate_eval(config)
    mesh = sharding.make_mesh(sections.MeshConfig.from_config(config.mesh))
    check_batch(config, mesh)

    def shardings_fn(train_config, abstract):
        axes = model.param_logical_axes(validate(train_config))
        return sharding.param_shardings(axes, mesh, train_config.sharding_rules)

    train_config, step, params = loading.load_params(checkpoint_path, shardings_fn)
    model_cfg = validate(train_config)
    workdir, _ = loading.resolve(checkpoint_path)
    tok = loading.load_tokenizer(checkpoint_path, train_config)
    check_model(config, model_cfg)
    proc0 = jax.process_index() == 0
    if proc0:
        storage.makedirs(output)
    run = {
        "task": config.task,
        "checkpoint": f"{workdir} step {step}",
        "attention": model_cfg.attention,
    }
    t0 = time.perf_counter()
    records, summary = run_task(config, model_cfg, params, tok, mesh, progress=proc0)
    summary["run"] = run | {"seconds": time.perf_counter() - t0, "config": config.to_dict()}
    if proc0:
        print(file=sys.stderr)
        report.write(output, config, model_cfg, records, summary)
        print(report.table(config.task, summary))
        print(f"wrote {output}/results.jsonl, summary.json, report.md")
    return summary


def main(argv: list[str] | None = None) -> None:
    config_flags.DEFINE_config_file("config", None, "Eval config file[:preset].")
    flags.DEFINE_string("checkpoint", None, "WORKDIR or WORKDIR/STEP to evaluate.")
    flags.DEFINE_string("output", None, "Directory for results, plots and the report.")
    cli.define_job_flags()

    def run(_):
        cli.require("config", "checkpoint", "output")
        cli.writable(flags.FLAGS.output, "output")  # before any checkpoint loads
        cli.start_job()
        evaluate(flags.FLAGS.config, flags.FLAGS.checkpoint, flags.FLAGS.output)

    cli.run(run, argv)


if __name__ == "__main__":
    main()
