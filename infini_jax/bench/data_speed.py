r"""Input-pipeline throughput vs the train step's consumption, measured in one run.

  python -m infini_jax.bench.data_speed [--config=configs/llama_300m_infini.py] [--output=DIR]

Pins itself to one CPU core, then measures tokens/s of the grain pipeline at the config's batch
shape for (a) the built-in synthetic corpus and (b) prepared ArrayRecord shards it writes
first. The step's consumption is bounded above by (a matmul's FLOP/s measured in the same
process) / (model FLOPs per token): a real step is slower, so the ratio printed is a lower
bound on the pipeline's headroom. It also prints the per-chip rate the pipeline would need to
feed an H100 or TPU v5p at 40% MFU.
"""

import dataclasses
import os
import tempfile
import time

import numpy as np

from infini_jax.bench import write_records
from infini_jax.config import load_config, validate
from infini_jax.data import pipeline, prepare, tokenizer
from infini_jax.data.config import DataConfig
from infini_jax.model.flops import flops_per_token
from infini_jax.parallel.accelerators import BY_NAME
from infini_jax.training.metrics import measured_matmul_flops


def pipeline_rate(data: DataConfig, tok_path: str, batch: int, seconds: float) -> float:
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


def measure(config_path: str, seconds: float) -> list[dict]:
    """Pins this process to one core; one record per source; prints the table."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    config = load_config(config_path)
    model_cfg = validate(config)
    data_cfg = DataConfig.from_config(config.data)
    seq, batch = data_cfg.seq_len, data_cfg.batch_size
    flops_tok = flops_per_token(model_cfg, seq)
    peak = measured_matmul_flops(n=2048, repeats=10)
    step_rate = peak / flops_tok
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        tok = tokenizer.default_tokenizer(tmp, data_cfg.synthetic.tokenizer_vocab_size)
        for name, source in (
            ("synthetic", "synthetic"),
            ("array_record", write_corpus(tmp, tok.path)),
        ):
            data = dataclasses.replace(data_cfg, source=source, weights="")
            rate = pipeline_rate(data, tok.path, batch, seconds)
            records.append(
                {
                    "bench": "data",
                    "attention": model_cfg.attention,
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
        f"config {config_path}: batch {batch} x {seq}, {flops_tok:.3g} FLOPs/token; matmul on "
        f"this device {peak / 1e9:.0f} GFLOP/s; one CPU core"
    )
    print(f"{'source':<14}{'pipeline tok/s':>16}{'step tok/s (max)':>18}{'headroom':>10}")
    for r in records:
        print(
            f"{r['source']:<14}{r['tokens_per_s']:>16,.0f}"
            f"{r['step_tokens_per_s_upper_bound']:>18,.1f}{r['headroom']:>9,.0f}x"
        )
    for name in ("h100", "v5p"):
        need = 0.4 * BY_NAME[name].bf16_flops / flops_tok
        cores = need / min(r["tokens_per_s"] for r in records)
        print(
            f"to feed one {name} at 40% MFU: {need:,.0f} tok/s per chip "
            f"= {cores:.1f} pipeline cores (data.worker_count) per chip"
        )
    return records


def main(argv: list[str] | None = None) -> None:
    from absl import flags

    from infini_jax import cli

    flags.DEFINE_string("config", "configs/llama_300m_infini.py", "Config file[:preset].")
    flags.DEFINE_float("seconds", 5.0, "Seconds to time each source (> 0).", lower_bound=0.01)
    flags.DEFINE_string("output", None, "Directory for data.json.")

    def run(_):
        cli.writable(flags.FLAGS.output, "output")
        records = measure(flags.FLAGS.config, flags.FLAGS.seconds)
        if flags.FLAGS.output:
            write_records(flags.FLAGS.output, "data.json", records)

    cli.run(run, argv)


if __name__ == "__main__":
    main()
