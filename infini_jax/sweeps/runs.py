"""A sweep's runs: the sweep file expanded into runs (each with its workdir, overrides and
evaluations), the commands that train and evaluate them, and whether they are done
(`python -m infini_jax.sweep`).
"""

import itertools
import os
import shlex
import subprocess
import sys

from infini_jax import storage
from infini_jax.config import REPO as ROOT_DIR  # the repository: commands run from here
from infini_jax.config import call_python_file, load_config, override, validate
from infini_jax.errors import ConfigError


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
    """A checkpoint at (or past) total_steps exists: training ended (it always saves there).

    A run whose checkpoints/ folder was deleted after it ended (to free disk, or a run's
    results archived without its weights and restored into a new root) counts as finished when
    metrics.jsonl reached total_steps (the loop always logs the last step); evaluations it still
    lacks then fail with the evaluator's one line about the missing checkpoint."""
    ckpt = storage.join(run["workdir"], "checkpoints")
    if storage.exists(ckpt):
        steps = [int(d) for d in storage.listdir(ckpt) if d.isdigit()]
        return bool(steps) and max(steps) >= run["total_steps"]
    metrics = storage.join(run["workdir"], "metrics.jsonl")
    rows = storage.read_jsonl(metrics) if storage.exists(metrics) else []
    return max((r.get("step", 0) for r in rows), default=0) >= run["total_steps"]


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
