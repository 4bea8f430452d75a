r"""Train-step benchmarks: speed, MFU, compiled memory and compile time per attention kind.

  python -m infini_jax.bench.train_speed [--lengths=2048,8192] [--kinds=full,local,infini]
      [--config=bench|configs/llama_300m_infini.py] [--output=DIR]

Every point compiles the real jitted, donated train step (`train_step.jit_train_step`) for one
config, reads XLA's memory analysis, then times `--steps` steps on a random batch (after one
warm-up step) and keeps the median step time. At each length the kinds' timed steps are
interleaved, one of each per round, so their ratios are paired (`paired_ratio`). MFU = model
FLOPs per token (`infini_jax.model.flops`) × tokens/s over the peak matmul FLOP/s measured in
the same process (`bench.peak`) and, where the device is known, over the datasheet peak. A
point whose compiled memory would not fit in this machine's memory is recorded as skipped, not
run.
"""

import ast
import os
import time
from collections.abc import Callable

import jax
import numpy as np

from infini_jax import ops, sections
from infini_jax.bench import write_records
from infini_jax.config import REPO, load_config, load_preset, override, validate
from infini_jax.errors import ConfigError
from infini_jax.model.flops import flops_per_token
from infini_jax.parallel import sharding
from infini_jax.parallel.accelerators import datasheet_flops
from infini_jax.training.step import compiled_peak_bytes, init_state, make_training


def bench_config(attention: str, seq_len: int, layers: int = 4):
    """The bench model: tiny.py grown to a CPU-sized LLaMA of 13.7M parameters: 4 layers,
    d_model 512, 4 heads of 128 (2 kv heads), SwiGLU 1536, vocab 512, segment 256, batch 2."""
    config = load_preset("tiny:paper")  # the paper's memory, as the seed config
    m = config.model
    m.attention, m.num_layers, m.d_model, m.num_heads, m.num_kv_heads = attention, layers, 512, 4, 2
    m.mlp_dim, m.segment_len, m.vocab_size = 1536, 256, 512
    config.data.seq_len, config.data.batch_size = seq_len, 2
    m.dtype = "float32" if jax.devices()[0].platform == "cpu" else "bfloat16"
    return config


def file_config(path: str, attention: str, seq_len: int, layers: int | None = None):
    config = load_config(path if os.path.isabs(path) else os.path.join(REPO, path))
    config.model.attention, config.data.seq_len = attention, seq_len
    config.data.batch_size = config.data.batch_size // max(1, config.data.seq_len // 8192) or 1
    if layers:
        config.model.num_layers = layers
    return config


def config_for(spec: str, attention: str, seq_len: int, layers=None, overrides: dict | None = None):
    """The `spec` model ("bench" or a config file) with `attention` at `seq_len`, then the
    dotted `overrides` (e.g. {"model.attention_impl": "xla", "model.remat_policy": "none"})."""
    if spec == "bench":
        config = bench_config(attention, seq_len, layers or 4)
    else:
        config = file_config(spec, attention, seq_len, layers)
    return override(config, overrides or {}, "bench override")


def compile_step(config):
    """`(compiled step, state, batch, compile seconds, memory bytes)` for one device."""
    model_cfg = validate(config)
    mesh = sharding.make_mesh(sections.MeshConfig.from_config(config.mesh), jax.devices()[:1])
    t = make_training(config, model_cfg, mesh)
    b, n = config.data.batch_size, config.data.seq_len
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, model_cfg.vocab_size, (b, n + 1)).astype(np.int32)
    batch = {
        "tokens": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "segment_ids": np.ones((b, n), np.int32),
        "mask": np.ones((b, n), bool),
    }
    batch = jax.device_put(batch, t.batch_sh)
    start = time.perf_counter()
    compiled = t.step.lower(t.abstract, batch).compile()
    compile_s = time.perf_counter() - start
    return compiled, (model_cfg, t.tx, t.state_sh), batch, compile_s, compiled_peak_bytes(compiled)


def _available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            info = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f}
        host = info["MemAvailable"]
    except (OSError, KeyError):
        host = 1 << 40
    dev = jax.devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else host


def prepare(config) -> tuple[dict, Callable[[], float] | None]:
    """Compiles `config`'s train step and runs its warm-up step: `(record, step)`, where
    `step()` runs one more step and returns its seconds (None when the point is skipped)."""
    compiled, (model_cfg, tx, state_sh), batch, compile_s, memory = compile_step(config)
    seq = config.data.seq_len
    record = {
        "bench": "train_step",
        "attention": model_cfg.attention,
        "seq_len": seq,
        "batch": config.data.batch_size,
        "layers": model_cfg.num_layers,
        "dtype": model_cfg.dtype,
        "kernel": ops.kernels.resolve(model_cfg.attention_impl, model_cfg.window_len(seq))[0],
        "remat_policy": model_cfg.remat_policy,
        "remat_layers": model_cfg.remat_layers,
        "micro_batches": config.optimizer.micro_batches,
        "memory_bytes": memory,
        "compile_s": compile_s,
        "flops_per_token": flops_per_token(model_cfg, seq),
    }
    if memory > 0.8 * _available_bytes():
        record["skipped"] = f"needs {memory / 2**30:.1f} GiB"
        return record, None
    state = [jax.jit(lambda: init_state(model_cfg, tx, config.seed), out_shardings=state_sh)()]

    def step() -> float:
        start = time.perf_counter()
        state[0], metrics = compiled(state[0], batch)
        jax.block_until_ready(metrics)
        return time.perf_counter() - start

    step()  # warm-up
    return record, step


def finish(record: dict, times: list[float], peak: float) -> dict:
    """`record` with its timed steps: the median step time, tokens/s and MFU."""
    step_s = float(np.median(times))
    tokens_per_s = record["batch"] * record["seq_len"] / step_s
    record.update(step_s=step_s, step_times=times, tokens_per_s=tokens_per_s)
    record["mfu"] = tokens_per_s * record["flops_per_token"] / peak
    datasheet = datasheet_flops(jax.devices()[0].device_kind)
    if datasheet:
        record["mfu_datasheet"] = tokens_per_s * record["flops_per_token"] / datasheet
    return record


def _why(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error)[:200]}"


def _skipped(config, kind: str, seq: int, error: Exception) -> dict:
    return {
        "bench": "train_step",
        "attention": kind,
        "seq_len": seq,
        "layers": config.model.num_layers,
        "skipped": _why(error),
    }


def run(
    kinds, lengths, peak: float, spec: str = "bench", steps: int = 3, overrides=None
) -> list[dict]:
    """One record per (length, kind) of the `spec` model: "bench" or a config file.

    At each length every kind is compiled first, then the timed steps are interleaved (one
    step of each kind per round), so a slow spell of a shared machine slows every kind alike
    and the ratios between kinds (`paired_ratio`) stay trustworthy.
    """
    records = []
    for seq in lengths:
        points = []
        for kind in kinds:
            config = config_for(spec, kind, seq, overrides=overrides)
            try:  # one failing point (e.g. out of memory) does not end the run
                points.append(prepare(config))
            except Exception as e:
                points.append((_skipped(config, kind, seq, e), None))
        times = [[] for _ in points]
        for _ in range(steps):
            for (record, step), t in zip(points, times, strict=True):
                if step and "skipped" not in record:
                    try:
                        t.append(step())
                    except Exception as e:
                        record["skipped"] = _why(e)
        for (record, step), t in zip(points, times, strict=True):
            r = finish(record, t, peak) if step and "skipped" not in record else record
            records.append(r)
            print(format_record(r), flush=True)
    return records


def paired_ratio(slow: dict, fast: dict) -> tuple[float, float, float] | None:
    """Median, min and max over rounds of `slow`'s step time / `fast`'s, for two records timed
    in the same interleaved rounds (`run`); None when they were not."""
    a, b = slow.get("step_times"), fast.get("step_times")
    if not a or not b or len(a) != len(b):
        return None
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return float(np.median(ratios)), min(ratios), max(ratios)


def point_overrides(attention_impl: str, assignments: list[str]) -> dict:
    """`--attention_impl` and `--set=field=value,...` as one dict of dotted overrides (values
    parsed as Python literals where they are one, else kept as strings)."""
    out = {"model.attention_impl": attention_impl}
    for a in assignments:
        key, sep, text = a.partition("=")
        if not sep:
            raise ConfigError(f"--set={a}: write FIELD=VALUE, e.g. model.remat_policy=none")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def format_record(r: dict) -> str:
    head = f"train_step {r['attention']:>6} {r['seq_len']:>6} tokens, {r['layers']} layers: "
    if "skipped" in r:
        return head + f"skipped ({r['skipped']})"
    return head + (
        f"{r['tokens_per_s']:>9,.0f} tok/s, MFU {r['mfu']:.1%}, compiled memory "
        f"{r['memory_bytes'] / 2**20:,.0f} MiB, compile {r['compile_s']:.1f} s"
    )


def main(argv: list[str] | None = None) -> None:
    from absl import flags

    from infini_jax import cli
    from infini_jax.bench.peak import printed_peak

    flags.DEFINE_list("kinds", ["full", "local", "infini"], "Attention kinds.")
    flags.DEFINE_list("lengths", ["2048", "4096", "8192", "16384", "32768"], "Sequence lengths.")
    flags.DEFINE_string("config", "bench", "'bench' or a config file.")
    flags.DEFINE_string("attention_impl", "auto", "model.attention_impl of every point.")
    flags.DEFINE_list("set", [], "Dotted overrides of every point, e.g. model.remat_policy=none.")
    flags.DEFINE_integer("steps", 3, "Timed steps per point (the median is kept).", lower_bound=1)
    flags.DEFINE_string("output", "", "Directory for train_step.json ('' = none).")

    def run_all(_):
        f = flags.FLAGS
        peak = printed_peak()
        lengths = cli.int_list(f.lengths, "lengths")
        unknown = set(f.kinds) - {"full", "local", "infini"}
        if unknown:
            raise ConfigError(
                f"--kinds={','.join(f.kinds)}: {sorted(unknown)} are not attention kinds"
            )
        cli.writable(f.output, "output")
        records = [peak]
        overrides = point_overrides(f.attention_impl, f.set)
        records += run(f.kinds, lengths, peak["flops_per_s"], f.config, f.steps, overrides)
        if f.output:
            write_records(f.output, "train_step.json", records)

    cli.run(run_all, argv)


if __name__ == "__main__":
    main()
