r"""Config sweeps: expand a sweep file into runs, launch them, resume them, summarise them.

  python -m infini_jax.sweep --sweep=configs/sweeps/balance.py --workdir=ROOT \
      [--launcher=local|print|slurm|tpu] [--dry_run]
  python -m infini_jax.sweep summarize ROOT [--metric=loss] [--field=optimizer.gate_learning_rate]

A sweep file defines `get_sweep()` returning a dict:
  base:  config file[:preset] every run starts from;
  fixed: {dotted field: value} applied to every run (optional);
  grid:  {dotted field: [values]}, every combination is a run; or
  runs:  [{dotted field: value}, ...], one run each (grid and runs may be combined: each listed
         run is crossed with the grid).
Each run gets ROOT/<name>, the name built from its own overrides, and `sweep_run.json` with its
overrides and command. Re-running the sweep skips finished runs (a checkpoint at total_steps)
and resumes unfinished ones (training resumes from its latest checkpoint).

Launchers: `local` runs them one after another here; `print` prints the commands; `slurm`
submits each with `sbatch launch/slurm/train.sbatch`; `tpu` runs each on the whole TPU VM pod
through `launch/tpu.sh run`. `--dry_run` prints what slurm / tpu would submit.
"""

import csv
import importlib.util
import io
import itertools
import json
import os
import shlex
import subprocess
import sys

from infini_jax import storage
from infini_jax.config import load_config, override, validate
from infini_jax.errors import ConfigError

LAUNCHERS = ("local", "print", "slurm", "tpu")
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_sweep(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(
            f"sweep file {path} does not exist; pass --sweep=configs/sweeps/<name>.py"
        )
    spec = importlib.util.spec_from_file_location("sweep_file", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sweep = module.get_sweep()
    unknown = set(sweep) - {"base", "fixed", "grid", "runs"}
    if unknown or "base" not in sweep:
        raise ConfigError(
            f"sweep file {path}: get_sweep() must return base plus fixed/grid/runs; "
            f"got keys {sorted(sweep)}"
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
            )
        )
    names = [r["name"] for r in out]
    if len(set(names)) != len(names):
        raise ConfigError("sweep expands to two runs with the same overrides; remove duplicates")
    return out


def finished(run: dict) -> bool:
    """A checkpoint at (or past) total_steps exists: training ended (it always saves there)."""
    names = storage.listdir(storage.join(run["workdir"], "checkpoints"))
    steps = [int(d) for d in names if d.isdigit()]
    return bool(steps) and max(steps) >= run["total_steps"]


def launch_command(run: dict, launcher: str) -> list[str]:
    train = [sys.executable, "-m", "infini_jax.train", *run["train_args"]]
    if launcher in ("local", "print"):
        return train
    if launcher == "slurm":
        log = storage.join(run["workdir"], "slurm-%j.out")
        script = os.path.join(ROOT_DIR, "launch", "slurm", "train.sbatch")
        return [
            "sbatch",
            f"--job-name={run['name']}",
            f"--output={log}",
            script,
            *run["train_args"],
        ]
    script = os.path.join(ROOT_DIR, "launch", "tpu.sh")
    return ["bash", script, "run", "--", "python3", "-m", "infini_jax.train", *run["train_args"]]


def run_sweep(sweep_path: str, root: str, launcher: str = "local", dry_run: bool = False) -> int:
    """Launches every unfinished run; returns the number of runs that failed."""
    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher={launcher} is not one of {LAUNCHERS}")
    # Every run is expanded and validated before the first one starts.
    runs = plan_runs(load_sweep(sweep_path), storage.absolute(root))
    failed = []
    for i, run in enumerate(runs, 1):
        cmd = launch_command(run, launcher)
        if launcher == "print" or dry_run:
            print(shlex.join(cmd))
            continue
        meta = {"name": run["name"], "overrides": run["overrides"], "command": cmd}
        storage.write_text(storage.join(run["workdir"], "sweep_run.json"), json.dumps(meta))
        if finished(run):
            print(f"[{i}/{len(runs)}] {run['name']}: finished, skipped")
            continue
        print(f"[{i}/{len(runs)}] {run['name']}: {shlex.join(cmd)}", flush=True)
        code = subprocess.call(cmd, cwd=ROOT_DIR)
        if code != 0 or (launcher == "local" and not finished(run)):
            print(f"[{i}/{len(runs)}] {run['name']}: exited with status {code}", flush=True)
            failed.append(run["name"])
    if failed:
        print(f"{len(failed)} of {len(runs)} runs failed or stopped early: {', '.join(failed)}")
    return len(failed)


def _last_metrics(workdir: str) -> dict:
    path = storage.join(workdir, "metrics.jsonl")
    if not storage.exists(path):
        return {}
    last, val = {}, None
    for line in storage.read_text(path).splitlines():
        if line.strip():
            last = json.loads(line)
            val = last.get("val_loss", val)
    return {"step": last.get("step"), "loss": last.get("loss"), "val_loss": val}


def _passkey(workdir: str) -> dict:
    path = storage.join(workdir, "passkey.json")
    if not storage.exists(path):
        return {}
    s = json.loads(storage.read_text(path))["summary"]
    beyond = s.get("beyond_first_segment") or {}
    return {
        "passkey": s["overall"]["accuracy"],
        "passkey_beyond_first_segment": beyond.get("accuracy"),
        "passkey_digits_beyond_first_segment": beyond.get("digit_accuracy"),
    }


def collect(root: str) -> list[dict]:
    """One row per run under `root`: its overrides, last metrics and passkey figures."""
    rows = []
    root = storage.absolute(root)
    for meta in storage.glob(storage.join(root, "*", "sweep_run.json")):
        info = json.loads(storage.read_text(meta))
        workdir = storage.dirname(meta)
        name = storage.basename(workdir)
        evals = {}  # evaluate outputs written inside the run
        for summary in storage.glob(storage.join(workdir, "*", "summary.json")):
            overall = json.loads(storage.read_text(summary)).get("overall") or {}
            evals[f"{storage.basename(storage.dirname(summary))}_accuracy"] = overall.get(
                "accuracy"
            )
        rows.append(
            {
                "run": name,
                **info["overrides"],
                **_last_metrics(workdir),
                **_passkey(workdir),
                **evals,
            }
        )
    return rows


def summarize(root: str, metric: str = "loss", field: str | None = None) -> list[dict]:
    """Writes ROOT/summary.md, summary.csv and summary.png (`metric` against `field`)."""
    rows = collect(root)
    if not rows:
        raise ConfigError(f"{root} holds no sweep runs (no */sweep_run.json); run the sweep first")
    columns = list(dict.fromkeys(k for r in rows for k in r))
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, columns)
    writer.writeheader()
    writer.writerows(rows)
    root = storage.absolute(root)
    storage.write_text(storage.join(root, "summary.csv"), table.getvalue())

    def cell(v):
        return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    storage.write_text(storage.join(root, "summary.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    _plot(rows, root, metric, field)
    return rows


def _plot(rows: list[dict], root: str, metric: str, field: str | None) -> None:
    """`metric` against `field`, one line per combination of the other swept fields."""
    from infini_jax.eval import plots

    fields = [c for c in rows[0] if c in _swept_fields(rows)]
    field = field or (fields[0] if fields else None)
    if field is None or field not in fields:
        raise ConfigError(f"--field={field} is not a swept field; choose one of {fields}")
    others = [f for f in fields if f != field]
    series: dict[str, dict] = {}
    for r in rows:
        if r.get(metric) is None:
            continue
        label = ", ".join(f"{o.rsplit('.', 1)[-1]}={r[o]}" for o in others) or metric
        series.setdefault(label, {})[r[field]] = r[metric]
    xs = sorted({x for s in series.values() for x in s}, key=_sort_key)
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
    log = numeric and min(xs) > 0 and max(xs) >= 10 * min(xs)
    plots.curve(
        xs if numeric else [str(x) for x in xs],
        {label: [s.get(x, float("nan")) for x in xs] for label, s in series.items()},
        storage.join(root, "summary.png"),
        xlabel=field,
        ylabel=metric,
        title=storage.basename(root),
        xscale="log" if log else "linear",
    )


def _swept_fields(rows: list[dict]) -> set[str]:
    results = {"run", "step", "loss", "val_loss"}
    return {
        k
        for r in rows
        for k in r
        if k not in results and "passkey" not in k and "_accuracy" not in k
    }


def _sort_key(x):
    return (0, x, "") if isinstance(x, int | float) else (1, 0, str(x))


def main(argv: list[str] | None = None) -> None:
    from absl import flags

    from infini_jax import cli

    flags.DEFINE_string("sweep", None, "Sweep file (configs/sweeps/<name>.py).")
    flags.DEFINE_string("workdir", None, "Root directory: one subdirectory per run.")
    flags.DEFINE_enum("launcher", "local", LAUNCHERS, "Where the runs go.")
    flags.DEFINE_bool("dry_run", False, "Print the commands instead of running/submitting.")
    flags.DEFINE_string("metric", "loss", "summarize: the metric to plot.")
    flags.DEFINE_string("field", None, "summarize: the swept field on the x axis.")

    def run(args):
        f = flags.FLAGS
        if args[1:2] == ["summarize"]:
            if len(args) != 3:
                raise ConfigError("usage: python -m infini_jax.sweep summarize ROOT [--metric=]")
            summarize(args[2], f.metric, f.field)
            return 0
        if len(args) > 1:
            raise ConfigError(f"unknown command {args[1]!r}; the only command is 'summarize'")
        cli.require("sweep", "workdir")
        return 1 if run_sweep(f.sweep, f.workdir, f.launcher, f.dry_run) else 0

    cli.run(run, argv)


if __name__ == "__main__":
    main()
