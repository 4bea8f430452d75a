r"""Peak resident memory of streaming evaluation against context length.

  python -m infini_jax.bench.eval_memory [--lengths=8192,65536,1048576] [--output=DIR]

Each length runs in a fresh process (so peaks do not mix): the tiny config's model (random
parameters: memory use does not depend on their values) streams one passkey-style sample of
that many tokens through `eval.Engine`, scoring the answer at the end. The process reports its
peak resident set (VmHWM) and wall time. The table compares each peak with the shortest
length's; the target is ≤ 1.2× at 1M tokens vs 8K.
"""

import argparse
import json
import os
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

    from infini_jax import model as M
    from infini_jax.config import load_config, validate
    from infini_jax.eval.engine import Engine

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = validate(load_config(os.path.join(root, "configs", "tiny.py")))
    params = M.init_params(cfg, jax.random.key(0))
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, cfg.vocab_size, size=length, dtype=np.int32)
    engine = Engine(cfg, params, chunk_segments=16)
    engine.run([tokens[:2048]], [np.asarray([2046])])  # compile outside the timing
    t0 = time.perf_counter()
    out = engine.run([tokens], [np.arange(length - 6, length - 1)])
    seconds = time.perf_counter() - t0
    assert np.all(np.isfinite(out.logprob[0]))
    return {
        "bench": "eval_memory",
        "attention": cfg.attention,
        "seq_len": length,
        "peak_rss_bytes": _peak_rss_bytes(),
        "seconds": seconds,
        "tokens_per_s": length / seconds,
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m infini_jax.bench.eval_memory")
    parser.add_argument("--lengths", default="8192,65536,1048576")
    parser.add_argument("--output", default="")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child)))
        return []
    records = []
    for length in [int(x) for x in args.lengths.split(",")]:
        cmd = [sys.executable, "-m", "infini_jax.bench.eval_memory", f"--child={length}"]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode:
            sys.exit(f"length {length} failed:\n{r.stderr[-2000:]}")
        records.append(json.loads(r.stdout.strip().splitlines()[-1]))
    base = records[0]["peak_rss_bytes"]
    print(f"{'tokens':>9} {'peak RSS MiB':>13} {'vs first':>9} {'tokens/s':>10}")
    for rec in records:
        rec["peak_vs_first"] = rec["peak_rss_bytes"] / base
        print(
            f"{rec['seq_len']:>9} {rec['peak_rss_bytes'] / 2**20:>13.0f} "
            f"{rec['peak_vs_first']:>8.3f}x {rec['tokens_per_s']:>10.0f}"
        )
    if args.output:
        write_records(args.output, "eval_memory.json", records)
    return records


if __name__ == "__main__":
    main()
