r"""The README's tiny-default table: trains the default (`configs/tiny.py`) and its local twin
(`configs/tiny.py:local`) with several seeds, then writes their passkey figures, each cell the
median and range over the seeds, with the commit and date.

  python -m infini_jax.bench.tiny_default --workdir=/tmp/tiny_default \
      --output=docs/results/tiny_default.json [--seeds=0,1,2]

Each run is quickstart command 1 as written (the same config, one process), with
`config.seed` set; a finished workdir is reused, not retrained. Retrieval through the memory
appears as a phase change late in training, and float rounding that differs between CPUs tips
it one way or the other, so one run's figure is not what a newcomer gets: the seeds' median
and range are. The results file holds the README table's markdown (`table`), which
`tests/test_readme.py` checks against README.md: re-run this command whenever a change moves
the numerics (ops, model, data, tokenizer), and paste its table into the README.
"""

import datetime
import json
import subprocess
import time

import numpy as np
from absl import flags

from infini_jax import cli, storage
from infini_jax.config import load_config
from infini_jax.errors import ConfigError
from infini_jax.eval.tasks import accuracy

RUNS = {"infini": "configs/tiny.py", "local": "configs/tiny.py:local"}
SEEDS = (0, 1, 2)
NEEDLE_NEAR = (1, 2, 3)  # segments back of the table's first row (within the training length)


def commit() -> str:
    """The checked-out commit (results files name it)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def figures(passkey: dict, training_len: int) -> dict:
    """The table's cells from a run's passkey.json: the needle 1-3 segments back at the
    training length, any earlier segment (all lengths), and accuracy per length."""
    records = passkey["samples"]
    near = [r for r in records if r["length"] == training_len and r["segments_back"] in NEEDLE_NEAR]
    by_length = {
        str(n): accuracy([r for r in records if r["length"] == n])
        for n in sorted({r["length"] for r in records})
    }
    return {
        "near": accuracy(near),
        "beyond": accuracy([r for r in records if r["segments_back"] > 0]),
        "by_length": by_length,
    }


def spread(values: list[float]) -> dict:
    """The median and range of one cell's accuracies over the seeds."""
    return {"median": float(np.median(values)), "low": min(values), "high": max(values)}


def cell(per_seed: list[dict], key, length: str | None = None) -> str:
    """ "median% (low–high)" of one table cell over the seeds' figures."""
    values = [(f[key] if length is None else f[key][length])["accuracy"] for f in per_seed]
    s = spread(values)
    if len(values) == 1:
        return f"{s['median']:.0%}"
    return f"{s['median']:.0%} ({s['low']:.0%}–{s['high']:.0%})"


def table(results: dict) -> str:
    """The README's markdown table of `results`: infini, infini with its reads ablated, local;
    every cell the median (range) of exact match over the seeds."""
    names = ("infini", "infini_ablated", "local")
    columns = [[seed[name] for seed in results["seeds"].values()] for name in names]
    training_len = results["training_len"]
    lengths = list(columns[0][0]["by_length"])
    n = columns[0][0]["beyond"]["n"]
    rows = [
        "| | infini | infini, memory reads ablated | local baseline (`tiny.py:local`, same "
        "training) |",
        "|---|---|---|---|",
        f"| needle 1–3 segments back ({training_len} tokens) | "
        + " | ".join(cell(c, "near") for c in columns)
        + " |",
        f"| needle in any earlier segment (all lengths, {n} samples per seed) | "
        + " | ".join(cell(c, "beyond") for c in columns)
        + " |",
        *(
            f"| {int(length):,} tokens | "
            + " | ".join(cell(c, "by_length", length) for c in columns)
            + " |"
            for length in lengths
        ),
    ]
    return "\n".join(rows)


def eval_series(metrics_path: str) -> list[dict]:
    """The passkey evaluations during training (`config.evals.passkey`): step, accuracy and
    accuracy with the needle in an earlier segment than the question."""
    keys = {"accuracy": "eval/passkey/accuracy", "beyond": "eval/passkey/beyond_first_segment"}
    return [
        {"step": r["step"], **{k: r.get(v) for k, v in keys.items()}}
        for r in storage.read_jsonl(metrics_path)
        if keys["accuracy"] in r
    ]


def evals_sentence(results: dict) -> str:
    """The README's sentence on the tiny default's retrieval during training, per seed: the
    first eval above 0% beyond the question's segment, and the first at 90% or more (where a
    seed reaches it)."""

    def first_steps(at_least: float) -> list[str]:
        out = []
        for seed, figures_ in results["seeds"].items():
            hit = next(
                (p for p in figures_["infini_evals"] if (p["beyond"] or 0) >= at_least), None
            )
            out.append(f"{hit['step']:,} (seed {seed})" if hit else f"never (seed {seed})")
        return out

    above_zero = first_steps(1e-9)
    ninety = first_steps(0.9)
    reached = (
        ""
        if all(s.startswith("never") for s in ninety)
        else (f", and first reaches 90% at step {', '.join(ninety)}")
    )
    return (
        "During training the tiny default's passkey eval (`config.evals.passkey`) tracks the "
        "needle in an earlier segment than the question; it first rises above 0% at step "
        f"{', '.join(above_zero)}{reached} (`evals.png` in each report)."
    )


def _train(spec: str, workdir: str, seed: int) -> float:
    """Trains `spec` with `seed` into `workdir` in this process (resuming or skipping what is
    done); the wall seconds it took."""
    from infini_jax.train import train

    start = time.perf_counter()
    config = load_config(spec)
    config.seed = seed
    train(config, workdir)
    return time.perf_counter() - start


def measure(workdir: str, seeds=SEEDS, infini: str = RUNS["infini"]) -> dict:
    """Trains both runs of every seed under `workdir/seed=S/` (or reuses them) and gathers
    the table's figures per seed; `infini` is the infini run's config (e.g. a preset)."""
    out: dict = {"runs": {}, "seeds": {}}
    runs = {**RUNS, "infini": infini}
    for seed in seeds:
        out["seeds"][str(seed)] = _measure_seed(
            storage.join(workdir, f"seed={seed}"), seed, out, runs
        )
    return out


def _measure_seed(workdir: str, seed: int, out: dict, runs: dict[str, str]) -> dict:
    figures_: dict = {}
    for name, spec in runs.items():
        run_dir = storage.join(workdir, name)
        wall = _train(spec, run_dir, seed)
        config = json.loads(storage.read_text(storage.join(run_dir, "config.json")))
        passkey = json.loads(storage.read_text(storage.join(run_dir, "passkey.json")))
        rows = storage.read_text(storage.join(run_dir, "metrics.jsonl")).splitlines()
        losses = [json.loads(r)["loss"] for r in rows if r.strip()]
        training_len = config["data"]["seq_len"]
        out["training_len"] = training_len
        figures_[name] = figures(passkey, training_len)
        if name == "infini":
            ablated = {"samples": passkey["samples_memory_ablated"]}
            figures_["infini_ablated"] = figures(ablated, training_len)
            figures_["infini_evals"] = eval_series(storage.join(run_dir, "metrics.jsonl"))
        out["runs"][f"{name}, seed {seed}"] = {
            "config": spec,
            "seed": seed,
            "workdir": run_dir,
            "steps": config["total_steps"],
            "first_loss": losses[0],
            "last_loss": losses[-1],
            "wall_s_this_machine": round(wall, 1),
        }
    return figures_


def main(argv: list[str] | None = None) -> None:
    flags.DEFINE_string("workdir", None, "Where the two runs train (reused when finished).")
    flags.DEFINE_string("output", None, "The results JSON (docs/results/tiny_default.json).")
    flags.DEFINE_list("seeds", [str(s) for s in SEEDS], "config.seed of each pair of runs.")
    flags.DEFINE_string("infini", RUNS["infini"], "The infini run's config[:preset].")

    def run(_):
        f = flags.FLAGS
        cli.require("workdir", "output")
        if not all(x.isdigit() for x in f.seeds):
            raise ConfigError(f"--seeds={','.join(f.seeds)} must be integers >= 0, e.g. 0,1,2")
        load_config(f.infini)  # a bad spec: one line, before any training
        results = measure(f.workdir, [int(x) for x in f.seeds], f.infini)
        infini = "" if f.infini == RUNS["infini"] else f" --infini={f.infini}"
        results = {
            "command": "python -m infini_jax.bench.tiny_default "
            f"--workdir={f.workdir} --output={f.output} --seeds={','.join(f.seeds)}{infini}",
            "infini_config": f.infini,
            "commit": commit(),
            "date": datetime.date.today().isoformat(),
            **results,
        }
        beyond = [seed["infini"]["beyond"]["accuracy"] for seed in results["seeds"].values()]
        results["infini_beyond"] = spread(beyond)  # the recipe's robustness across seeds
        results["table"] = table(results)
        results["evals_sentence"] = evals_sentence(results)
        storage.write_text(flags.FLAGS.output, json.dumps(results, indent=1) + "\n")
        print(results["table"])
        print(results["evals_sentence"])
        print(f"wrote {flags.FLAGS.output}")

    cli.run(run, argv)


if __name__ == "__main__":
    main()
