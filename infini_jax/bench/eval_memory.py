r"""Peak resident memory of streaming evaluation against context length.

  python -m infini_jax.bench.eval_memory [--lengths=8192,65536,1048576] [--output=DIR]

Each length runs in a fresh process (so peaks do not mix): the tiny config's model (random
parameters: memory use does not depend on their values) streams one passkey-style sample of
that many tokens through `eval.Engine`, scoring the answer at the end. The process reports its
peak resident set (VmHWM) and wall time. The table compares each peak with the shortest
length's; the target is ≤ 1.2× at 1M tokens vs 8K.
"""

import json
import subprocess
import sys
import time

import numpy as np

from infini_jax.bench import write_records


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(length: int) -> dict:
    import jax

    from infini_jax import model
    from infini_jax.config import load_preset, validate
    from infini_jax.eval.engine import Engine

    model_cfg = validate(load_preset("tiny:paper"))
    params = model.init_params(model_cfg, jax.random.key(0))
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, model_cfg.vocab_size, size=length, dtype=np.int32)
    engine = Engine(model_cfg, params, chunk_segments=16)
    engine.run([tokens[:2048]], [np.asarray([2046])])  # compile outside the timing
    t0 = time.perf_counter()
    out = engine.run([tokens], [np.arange(length - 6, length - 1)])
    seconds = time.perf_counter() - t0
    assert np.all(np.isfinite(out.logprob[0]))
    return {
        "bench": "eval_memory",
        "attention": model_cfg.attention,
        "seq_len": length,
        "peak_rss_bytes": _peak_rss_bytes(),
        "seconds": seconds,
        "tokens_per_s": length / seconds,
    }


def measure(lengths: list[int]) -> list[dict]:
    """One record per length, each measured in a fresh process; prints the table."""
    records = []
    for length in lengths:
        cmd = [sys.executable, "-m", "infini_jax.bench.eval_memory", f"--child={length}"]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode:
            raise RuntimeError(f"eval_memory at {length} tokens failed:\n{r.stderr[-2000:]}")
        records.append(json.loads(r.stdout.strip().splitlines()[-1]))
    base = records[0]["peak_rss_bytes"]
    print(f"{'tokens':>9} {'peak RSS MiB':>13} {'vs first':>9} {'tokens/s':>10}")
    for rec in records:
        rec["peak_vs_first"] = rec["peak_rss_bytes"] / base
        print(
            f"{rec['seq_len']:>9} {rec['peak_rss_bytes'] / 2**20:>13.0f} "
            f"{rec['peak_vs_first']:>8.3f}x {rec['tokens_per_s']:>10.0f}"
        )
    return records


def main(argv: list[str] | None = None) -> None:
    from absl import flags

    from infini_jax import cli

    flags.DEFINE_list("lengths", ["8192", "65536", "1048576"], "Context lengths in tokens.")
    flags.DEFINE_string("output", "", "Directory for eval_memory.json ('' = none).")
    flags.DEFINE_integer("child", 0, "Internal: measure this one length and print JSON.")

    def run(_):
        f = flags.FLAGS
        if f.child:
            print(json.dumps(_child(f.child)))
            return
        lengths = cli.int_list(f.lengths, "lengths")
        cli.writable(f.output, "output")
        records = measure(lengths)
        if f.output:
            write_records(f.output, "eval_memory.json", records)

    cli.run(run, argv)


if __name__ == "__main__":
    main()
