r"""Config sweeps: expand a sweep file into runs, launch them, resume them, summarise them.

  python -m infini_jax.sweep --sweep=configs/sweeps/balance.py --workdir=ROOT \
      [--launcher=local|print|slurm|tpu] [--dry_run]
  python -m infini_jax.sweep summarize ROOT [--sweep=FILE] [--group=seed] [--columns=GLOBS]
      [--field=F] [--metric=M] [--curve=PREFIX] [--output=NAME]  (infini_jax/sweeps/summary.py)

A sweep file defines `get_sweep()` returning a dict:
  base:  config file[:preset] every run starts from;
  fixed: {dotted field: value} applied to every run (optional);
  grid:  {dotted field: [values]}, every combination is a run; or
  runs:  [{dotted field: value}, ...], one run each (grid and runs may be combined: each listed
         run is crossed with the grid);
  evals: {name: (eval config file[:preset], {field: value}[, {dotted train field: value}])}
         (optional): after a run's training, `infini_jax.evaluate` writes ROOT/<run>/<name>/
         for each, if the run's config has the values of the optional third dict (e.g.
         {"model.attention": "infini"} for memory_stats).
Each run gets ROOT/<name>, the name built from its own overrides, and `sweep_run.json` with its
overrides, command and wall time. Re-running the sweep skips finished runs (a checkpoint at
total_steps) and evaluations (their summary.json exists), and resumes unfinished runs
(training resumes from its latest checkpoint).

Launchers: `local` runs them one after another here; `print` prints the commands; `slurm`
submits every unfinished run at once with `sbatch [--sbatch=OPTIONS] launch/slurm/train.sbatch`
(they run side by side where the cluster has room) and each missing evaluation as its own job
`sbatch [--sbatch_eval=OPTIONS] launch/slurm/evaluate.sbatch` that starts after its run's
training job completes (and is cancelled if it fails), waits for every job and reports
(`infini_jax/sweeps/slurm.py`; `--nowait` submits and exits: run the same command again to
collect); `tpu` runs each on the whole TPU VM pod through `launch/tpu.sh run`. `--dry_run`
prints what slurm / tpu would submit. After tpu jobs finish, run the sweep again with
`--launcher=local` to evaluate them.
"""

import json
import shlex
import subprocess
import time

from infini_jax import storage
from infini_jax.errors import ConfigError
from infini_jax.sweeps.runs import (
    ROOT_DIR,
    eval_commands,
    evaluate_run,
    expand,
    finished,
    launch_command,
    load_sweep,
    plan_runs,
    run_name,
)

LAUNCHERS = ("local", "print", "slurm", "tpu")


def run_sweep(
    sweep_path: str,
    root: str,
    launcher: str = "local",
    dry_run: bool = False,
    sbatch_args: str = "",
    wait: bool = True,
    eval_sbatch_args: str = "",
) -> int:
    """Launches every unfinished run (and, with slurm, every missing evaluation as its own
    job); returns the number of runs that failed."""
    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher={launcher} is not one of {LAUNCHERS}")
    # Every run is expanded and validated before the first one starts.
    runs = plan_runs(load_sweep(sweep_path), storage.absolute(root))
    if launcher == "slurm" and not dry_run:
        from infini_jax.sweeps.slurm import run_on_slurm

        return run_on_slurm(runs, sbatch_args, wait, eval_sbatch_args)
    failed = []
    for i, run in enumerate(runs, 1):
        cmd = launch_command(run, launcher, sbatch_args)
        evals = eval_commands(run)
        if launcher == "slurm":  # each after the training job (its id is known at submission)
            from infini_jax.sweeps.slurm import eval_command

            evals = [
                eval_command(run, args, name, "TRAINING_JOB", eval_sbatch_args)
                for name, args in run["evals"]
            ]
        if launcher == "print" or dry_run:
            print("\n".join(shlex.join(c) for c in [cmd, *evals]))
            continue
        meta_path = storage.join(run["workdir"], "sweep_run.json")
        old = json.loads(storage.read_text(meta_path)) if storage.exists(meta_path) else {}
        meta = {"name": run["name"], "overrides": run["overrides"], "command": cmd}
        meta["seconds"] = old.get("seconds", 0.0)  # wall time of training and evaluations
        storage.write_text(meta_path, json.dumps(meta))
        t0 = time.perf_counter()
        if finished(run):
            print(f"[{i}/{len(runs)}] {run['name']}: finished, skipped")
        else:
            print(f"[{i}/{len(runs)}] {run['name']}: {shlex.join(cmd)}", flush=True)
            code = subprocess.call(cmd, cwd=ROOT_DIR)
            if code != 0 or (launcher == "local" and not finished(run)):
                print(f"[{i}/{len(runs)}] {run['name']}: exited with status {code}", flush=True)
                failed.append(run["name"])
                continue
        if launcher == "local" and not evaluate_run(run, evals, f"[{i}/{len(runs)}]"):
            failed.append(run["name"])
        meta["seconds"] += time.perf_counter() - t0
        storage.write_text(meta_path, json.dumps(meta))
    if failed:
        print(f"{len(failed)} of {len(runs)} runs failed or stopped early: {', '.join(failed)}")
    return len(failed)


def main(argv: list[str] | None = None) -> None:
    from absl import flags

    from infini_jax import cli

    flags.DEFINE_string("sweep", None, "Sweep file; summarize: only the runs it defines.")
    flags.DEFINE_string("workdir", None, "Root directory: one subdirectory per run.")
    flags.DEFINE_enum("launcher", "local", LAUNCHERS, "Where the runs go.")
    flags.DEFINE_bool("dry_run", False, "Print the commands instead of running/submitting.")
    flags.DEFINE_string("sbatch", "", "slurm: extra sbatch options of the training jobs.")
    flags.DEFINE_string(
        "sbatch_eval", "", "slurm: extra sbatch options of the evaluation jobs (one task each)."
    )
    flags.DEFINE_bool("wait", True, "slurm: wait for the jobs and report (else re-run later).")
    flags.DEFINE_string("metric", "loss", "summarize: the metric to plot.")
    flags.DEFINE_string("field", None, "summarize: the swept field on the x axis.")
    flags.DEFINE_string("group", "", "summarize: average runs differing only in this field.")
    flags.DEFINE_string("columns", "", "summarize: comma-separated globs of columns to show.")
    flags.DEFINE_string("curve", "", "summarize: plot columns PREFIX<x> against x instead.")
    flags.DEFINE_string("output", "summary", "summarize: ROOT/<output>.csv, .md and .png.")

    def run(args):
        f = flags.FLAGS
        if args[1:2] == ["summarize"]:
            if len(args) != 3:
                raise ConfigError("usage: python -m infini_jax.sweep summarize ROOT [--metric=]")
            from infini_jax.sweeps.summary import summarize

            runs = {run_name(o) for o in expand(load_sweep(f.sweep))} if f.sweep else None
            summarize(args[2], f.metric, f.field, f.group, f.columns, f.curve, f.output, runs)
            return 0
        if len(args) > 1:
            raise ConfigError(f"unknown command {args[1]!r}; the only command is 'summarize'")
        cli.require("sweep", "workdir")
        if f.launcher != "print" and not f.dry_run:
            cli.writable(f.workdir, "workdir")
        failed = run_sweep(
            f.sweep, f.workdir, f.launcher, f.dry_run, f.sbatch, f.wait, f.sbatch_eval
        )
        return 1 if failed else 0

    cli.run(run, argv)


if __name__ == "__main__":
    main()
