r"""Input-pipeline throughput vs the train step's consumption, measured in one run.

  python -m infini_jax.bench.data [--config=configs/llama_300m_infini.py] [--output=DIR]

Pins itself to one CPU core, then measures tokens/s of the grain pipeline at the config's batch
shape for (a) the built-in synthetic corpus and (b) prepared ArrayRecord shards it writes
first. The step's consumption is bounded above by (a matmul's FLOP/s measured in the same
process) / (model FLOPs per token): a real step is slower, so the ratio printed is a lower
bound on the pipeline's headroom. It also prints the per-chip rate the pipeline would need to
feed an H100 or TPU v5p at 40% MFU.
"""

import argparse
import os
import tempfile
import time

import numpy as np

from infini_jax.bench import write_records
from infini_jax.config import load_config, validate
from infini_jax.data import pipeline, prepare, tokenizer
from infini_jax.flops import flops_per_token
from infini_jax.metrics import measured_matmul_flops

PEAKS = {"H100 bf16": 989e12, "TPU v5p bf16": 459e12}  # datasheet dense peaks


def pipeline_rate(data, tok_path: str, batch: int, seconds: float) -> float:
    it = iter(pipeline.make_dataset(data, tokenizer_path=tok_path, seed=0, batch_size=batch))
    next(it)  # warm up
    tokens, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        tokens += int(next(it)["mask"].sum())
    return tokens / (time.perf_counter() - start)


def write_corpus(directory: str, tok_path: str, files: int = 4, docs: int = 400) -> str:
    rng = np.random.default_rng(0)
    words = np.array(
        "the of and to in is was for on that with as by it at from his an were "
        "are which this be have or had not but first one their its new".split()
    )
    for f in range(files):
        with open(os.path.join(directory, f"text{f}.txt"), "w") as fh:
            fh.write(
                "\n\n".join(
                    " ".join(rng.choice(words, rng.integers(100, 1500))) for _ in range(docs)
                )
            )
    out = os.path.join(directory, "shards")
    prepare.prepare(os.path.join(directory, "text*.txt"), tok_path, out, workers=1, progress=False)
    return os.path.join(out, "*.array_record")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m infini_jax.bench.data")
    parser.add_argument("--config", default="configs/llama_300m_infini.py")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--output", default=None, help="directory for results.json")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    config = load_config(args.config)
    cfg = validate(config)
    seq, batch = config.data.seq_len, config.data.batch_size
    peak = measured_matmul_flops(n=2048, repeats=10)
    step_rate = peak / flops_per_token(cfg, seq)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        tok = tokenizer.default_tokenizer(tmp, config.data.synthetic.tokenizer_vocab_size)
        for name, source in (
            ("synthetic", "synthetic"),
            ("array_record", write_corpus(tmp, tok.path)),
        ):
            data = config.data.copy_and_resolve_references()
            data.source, data.weights = source, ""
            rate = pipeline_rate(data, tok.path, batch, args.seconds)
            records.append(
                {
                    "bench": "data",
                    "attention": cfg.attention,
                    "source": name,
                    "seq_len": seq,
                    "batch": batch,
                    "packing": data.packing,
                    "tokens_per_s": rate,
                    "step_tokens_per_s_upper_bound": step_rate,
                    "headroom": rate / step_rate,
                }
            )
    print(
        f"config {args.config}: batch {batch} x {seq}, {flops_per_token(cfg, seq):.3g} "
        f"FLOPs/token; matmul on this device {peak / 1e9:.0f} GFLOP/s; one CPU core"
    )
    print(f"{'source':<14}{'pipeline tok/s':>16}{'step tok/s (max)':>18}{'headroom':>10}")
    for r in records:
        print(
            f"{r['source']:<14}{r['tokens_per_s']:>16,.0f}"
            f"{r['step_tokens_per_s_upper_bound']:>18,.1f}{r['headroom']:>9,.0f}x"
        )
    for chip, chip_peak in PEAKS.items():
        need = 0.4 * chip_peak / flops_per_token(cfg, seq)
        cores = need / min(r["tokens_per_s"] for r in records)
        print(
            f"to feed one {chip} at 40% MFU: {need:,.0f} tok/s per chip "
            f"= {cores:.1f} pipeline cores (data.worker_count) per chip"
        )
    if args.output:
        write_records(args.output, "data.json", records)
    return records


if __name__ == "__main__":
    main()
