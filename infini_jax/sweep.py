r"""Config sweeps: expand a sweep file into runs, launch them, resume them, summarise them.

  python -m infini_jax.sweep --sweep=configs/sweeps/balance.py --workdir=ROOT \
      [--launcher=local|print|slurm|tpu] [--dry_run]
  python -m infini_jax.sweep summarize ROOT [--sweep=FILE] [--group=seed] [--columns=GLOBS]
      [--field=F] [--metric=M] [--curve=PREFIX] [--output=NAME]  (infini_jax/sweep_summary.py)

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
(they run side by side where the cluster has room), waits for the jobs, then runs each
finished run's evaluations here (`infini_jax/sweep_slurm.py`; `--nowait` submits and exits: run
the same command again to collect); `tpu` runs each on the whole TPU VM pod through
`launch/tpu.sh run`. `--dry_run` prints what slurm / tpu would submit. After tpu jobs finish,
run the sweep again with `--launcher=local` to evaluate them.
"""

import itertools
import json
import os
import shlex
import subprocess
import sys
import time

from infini_jax import storage
from infini_jax.config import call_python_file, load_config, override, validate
from infini_jax.errors import ConfigError

LAUNCHERS = ("local", "print", "slurm", "tpu")
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_sweep(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(
            f"sweep file {path} does not exist; pass --sweep=configs/sweeps/<name>.py"
        )
    sweep = call_python_file(path, "get_sweep", what="sweep file")
    unknown = set(sweep) - {"base", "fixed", "grid", "runs", "evals"}
    if unknown or "base" not in sweep:
        raise ConfigError(
            f"sweep file {path}: get_sweep() must return base plus fixed/grid/runs/evals; "
            f"got keys {sorted(sweep)}"
        )
    for name, spec in sweep.get("evals", {}).items():
        if not (isinstance(spec, tuple | list) and len(spec) in (2, 3)):
            raise ConfigError(
                f"sweep file {path}: evals[{name!r}] must be (config file, {{field: value}}"
                "[, {train field: value}])"
            )
    return sweep


def expand(sweep: dict) -> list[dict]:
    """The runs' own overrides (not `fixed`): the grid crossed with the list of runs."""
    grid = sweep.get("grid", {})
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    runs = sweep.get("runs") or [{}]
    return [{**run, **combo} for run in runs for combo in combos]


def run_name(overrides: dict) -> str:
    """A directory name from the overrides: last field names (full ones where they clash)."""
    if not overrides:
        return "base"
    short = [k.rsplit(".", 1)[-1] for k in overrides]
    keys = [s if short.count(s) == 1 else k for s, k in zip(short, overrides, strict=True)]
    parts = [f"{k}={_text(v)}" for k, v in zip(keys, overrides.values(), strict=True)]
    return ",".join(parts).replace("/", "_").replace(" ", "")


def _text(value) -> str:
    return value if isinstance(value, str) else repr(value)


def plan_runs(sweep: dict, root: str) -> list[dict]:
    """Every run with its workdir, resolved config (validated) and train command."""
    base = sweep["base"]  # relative paths are relative to the repository (commands run there)
    path, _, preset = base.partition(":")
    absolute = os.path.join(ROOT_DIR, path) + (f":{preset}" if preset else "")
    out = []
    for overrides in expand(sweep):
        everything = {**sweep.get("fixed", {}), **overrides}
        config = override(load_config(absolute), everything, "sweep override")
        validate(config)
        workdir = storage.join(root, run_name(overrides))
        args = [f"--config={base}", f"--workdir={workdir}"]
        args += [f"--config.{k}={_text(v)}" for k, v in everything.items()]
        out.append(
            dict(
                name=run_name(overrides),
                overrides=overrides,
                workdir=workdir,
                total_steps=config.total_steps,
                train_args=args,
                evals=_evals(sweep.get("evals", {}), config, workdir),
            )
        )
    names = [r["name"] for r in out]
    if len(set(names)) != len(names):
        raise ConfigError("sweep expands to two runs with the same overrides; remove duplicates")
    return out


def _evals(evals: dict, config, workdir: str) -> list[tuple[str, list[str]]]:
    """(name, evaluate arguments) of each evaluation whose conditions the run's config meets;
    each eval config is loaded and checked now, before anything runs."""
    from infini_jax.eval.config import validate_eval

    out = []
    for name, (path, fields, *when) in evals.items():
        if any(_get(config, k) != v for k, v in (when[0] if when else {}).items()):
            continue
        file, _, preset = path.partition(":")
        eval_config = override(
            load_config(os.path.join(ROOT_DIR, file) + (f":{preset}" if preset else "")),
            fields,
            f"sweep evals[{name!r}]",
        )
        validate_eval(eval_config)
        args = [f"--config={path}", f"--checkpoint={workdir}"]
        args += [f"--output={storage.join(workdir, name)}"]
        out.append((name, args + [f"--config.{k}={_text(v)}" for k, v in fields.items()]))
    return out


def _get(config, dotted: str):
    for part in dotted.split("."):
        if part not in config:
            raise ConfigError(f"sweep evals condition {dotted}: the config has no such field")
        config = config[part]
    return config


def finished(run: dict) -> bool:
    """A checkpoint at (or past) total_steps exists: training ended (it always saves there)."""
    names = storage.listdir(storage.join(run["workdir"], "checkpoints"))
    steps = [int(d) for d in names if d.isdigit()]
    return bool(steps) and max(steps) >= run["total_steps"]


def launch_command(run: dict, launcher: str, sbatch_args: str = "") -> list[str]:
    train = [sys.executable, "-m", "infini_jax.train", *run["train_args"]]
    if launcher in ("local", "print"):
        return train
    if launcher == "slurm":
        log = storage.join(run["workdir"], "slurm-%j.out")
        script = os.path.join(ROOT_DIR, "launch", "slurm", "train.sbatch")
        return [
            "sbatch",
            "--parsable",
            f"--job-name={run['name']}",
            f"--output={log}",
            *shlex.split(sbatch_args),
            script,
            *run["train_args"],
        ]
    script = os.path.join(ROOT_DIR, "launch", "tpu.sh")
    return ["bash", script, "run", "--", "python3", "-m", "infini_jax.train", *run["train_args"]]


def run_sweep(
    sweep_path: str,
    root: str,
    launcher: str = "local",
    dry_run: bool = False,
    sbatch_args: str = "",
    wait: bool = True,
) -> int:
    """Launches every unfinished run; returns the number of runs that failed."""
    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher={launcher} is not one of {LAUNCHERS}")
    # Every run is expanded and validated before the first one starts.
    runs = plan_runs(load_sweep(sweep_path), storage.absolute(root))
    if launcher == "slurm" and not dry_run:
        from infini_jax.sweep_slurm import run_on_slurm

        return run_on_slurm(runs, sbatch_args, wait)
    failed = []
    for i, run in enumerate(runs, 1):
        cmd = launch_command(run, launcher, sbatch_args)
        evals = eval_commands(run)
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


def eval_commands(run: dict) -> list[list[str]]:
    return [[sys.executable, "-m", "infini_jax.evaluate", *a] for _, a in run["evals"]]


def evaluate_run(run: dict, commands: list[list[str]], tag: str) -> bool:
    """Runs the run's evaluations that have no summary.json yet; False if one failed."""
    ok = True
    for (name, _), cmd in zip(run["evals"], commands, strict=True):
        if storage.exists(storage.join(run["workdir"], name, "summary.json")):
            continue
        print(f"{tag} {run['name']}: evaluate {name}", flush=True)
        if subprocess.call(cmd, cwd=ROOT_DIR) != 0:
            print(f"{tag} {run['name']}: evaluation {name} failed", flush=True)
            ok = False
    return ok


def main(argv: list[str] | None = None) -> None:
    from absl import flags

    from infini_jax import cli

    flags.DEFINE_string("sweep", None, "Sweep file; summarize: only the runs it defines.")
    flags.DEFINE_string("workdir", None, "Root directory: one subdirectory per run.")
    flags.DEFINE_enum("launcher", "local", LAUNCHERS, "Where the runs go.")
    flags.DEFINE_bool("dry_run", False, "Print the commands instead of running/submitting.")
    flags.DEFINE_string("sbatch", "", "slurm: extra sbatch options, e.g. '--nodes=2'.")
    flags.DEFINE_bool("wait", True, "slurm: wait for the jobs, then evaluate (else re-run).")
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
            from infini_jax.sweep_summary import summarize

            runs = {run_name(o) for o in expand(load_sweep(f.sweep))} if f.sweep else None
            summarize(args[2], f.metric, f.field, f.group, f.columns, f.curve, f.output, runs)
            return 0
        if len(args) > 1:
            raise ConfigError(f"unknown command {args[1]!r}; the only command is 'summarize'")
        cli.require("sweep", "workdir")
        failed = run_sweep(f.sweep, f.workdir, f.launcher, f.dry_run, f.sbatch, f.wait)
        return 1 if failed else 0

    cli.run(run, argv)


if __name__ == "__main__":
    main()
