r"""The README's tiny-default table: trains the default (`configs/tiny.py`) and its local twin
(`configs/tiny.py:local`), then writes their passkey figures with the commit and date.

  python -m infini_jax.bench.tiny_default --workdir=/tmp/tiny_default \
      --output=docs/results/tiny_default.json

Each run is quickstart command 1 as written (the same config, one process); a finished workdir
is reused, not retrained. The results file holds the README table's markdown (`table`), which
`tests/test_readme.py` checks against README.md: re-run this command whenever a change moves
the numerics (ops, model, data, tokenizer), and paste its table into the README.
"""

import datetime
import json
import subprocess
import time

from absl import flags

from infini_jax import cli, storage
from infini_jax.config import load_config
from infini_jax.eval.tasks import accuracy

RUNS = {"infini": "configs/tiny.py", "local": "configs/tiny.py:local"}
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


def table(results: dict) -> str:
    """The README's markdown table of `results` (infini, infini with its reads ablated, local)."""
    columns = [results["infini"], results["infini_ablated"], results["local"]]
    training_len = results["training_len"]

    def pct(c: dict, digits: bool = True) -> str:
        a = f"{c['accuracy']:.0%}"
        return (
            f"{a} ({c['digit_accuracy']:.0%})" if digits and c["digit_accuracy"] is not None else a
        )

    lengths = list(columns[0]["by_length"])
    names = " / ".join(f"{int(n):,}" for n in lengths)
    rows = [
        "| | infini | infini, memory reads ablated | local baseline (`tiny.py:local`, same "
        "training) |",
        "|---|---|---|---|",
        f"| needle 1–3 segments back ({training_len} tokens) | "
        + " | ".join(pct(c["near"]) for c in columns)
        + " |",
        "| needle in any earlier segment (all lengths) | "
        + " | ".join(
            f"{pct(c['beyond'])}{' of ' + str(c['beyond']['n']) if i == 0 else ''}"
            for i, c in enumerate(columns)
        )
        + " |",
        f"| {names} tokens | "
        + " | ".join(" / ".join(pct(c["by_length"][n], False) for n in lengths) for c in columns)
        + " |",
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
    """The README's sentence on the tiny default's retrieval during training."""
    series = results["infini_evals"]
    first = next((p for p in series if p["beyond"]), None)
    cells = ", ".join(f"{p['beyond']:.0%} at {p['step']:,}" for p in series[::2] + series[-1:])
    when = f"first above 0% at step {first['step']:,}" if first else "never above 0%"
    return (
        "During training the tiny default's passkey eval (`config.evals.passkey`) tracks the "
        f"needle in an earlier segment than the question: {when} ({cells}; `evals.png` in "
        "the report)."
    )


def _train(spec: str, workdir: str) -> float:
    """Trains `spec` into `workdir` in this process (resuming or skipping what is done); the
    wall seconds it took."""
    from infini_jax.train import train

    start = time.perf_counter()
    train(load_config(spec), workdir)
    return time.perf_counter() - start


def measure(workdir: str) -> dict:
    """Trains both runs under `workdir` (or reuses them) and gathers the table's figures."""
    out: dict = {"runs": {}}
    for name, spec in RUNS.items():
        run_dir = storage.join(workdir, name)
        wall = _train(spec, run_dir)
        config = json.loads(storage.read_text(storage.join(run_dir, "config.json")))
        passkey = json.loads(storage.read_text(storage.join(run_dir, "passkey.json")))
        rows = storage.read_text(storage.join(run_dir, "metrics.jsonl")).splitlines()
        losses = [json.loads(r)["loss"] for r in rows if r.strip()]
        training_len = config["data"]["seq_len"]
        out["training_len"] = training_len
        out[name] = figures(passkey, training_len)
        if name == "infini":
            ablated = {"samples": passkey["samples_memory_ablated"]}
            out["infini_ablated"] = figures(ablated, training_len)
            out["infini_evals"] = eval_series(storage.join(run_dir, "metrics.jsonl"))
        out["runs"][name] = {
            "config": spec,
            "workdir": run_dir,
            "steps": config["total_steps"],
            "first_loss": losses[0],
            "last_loss": losses[-1],
            "wall_s_this_machine": round(wall, 1),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    flags.DEFINE_string("workdir", None, "Where the two runs train (reused when finished).")
    flags.DEFINE_string("output", None, "The results JSON (docs/results/tiny_default.json).")

    def run(_):
        cli.require("workdir", "output")
        results = measure(flags.FLAGS.workdir)
        results = {
            "command": "python -m infini_jax.bench.tiny_default "
            f"--workdir={flags.FLAGS.workdir} --output={flags.FLAGS.output}",
            "commit": commit(),
            "date": datetime.date.today().isoformat(),
            **results,
        }
        results["table"] = table(results)
        results["evals_sentence"] = evals_sentence(results)
        storage.write_text(flags.FLAGS.output, json.dumps(results, indent=1) + "\n")
        print(results["table"])
        print(results["evals_sentence"])
        print(f"wrote {flags.FLAGS.output}")

    cli.run(run, argv)


if __name__ == "__main__":
    main()
