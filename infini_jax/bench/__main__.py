r"""All benchmarks in one run, with the performance targets checked as ratios.

  python -m infini_jax.bench --quick --output=DIR     # CPU-sized subset, under 5 minutes
  python -m infini_jax.bench --output=DIR             # the full grid
  python -m infini_jax.bench --config=configs/llama_300m_infini.py --output=DIR   # on a GPU/TPU

Writes DIR/results.json: a list of records, each with `bench`, `attention`, `seq_len` and where
they apply `tokens_per_s`, `mfu`, `memory_bytes`, `compile_s`, `layers` (and `target` records
with the measured ratio and whether it meets the target). Everything compared is measured in
this one run, on this machine. docs/performance.md explains each figure.
"""

from absl import flags

from infini_jax import cli
from infini_jax.bench import (
    data_speed,
    eval_memory,
    find_record,
    memory_options,
    memory_path,
    train_speed,
    write_records,
)
from infini_jax.bench.peak import matmul_peak
from infini_jax.errors import ConfigError

QUICK = dict(
    lengths=[2048, 4096],
    full_lengths=[2048],  # full attention is timed only at these lengths
    memory_lengths=[2048, 8192, 32768],
    memory_path_lengths=[2048],  # the memory path alone (bench.memory_path)
    memory_options_lengths=[2048, 4096],  # each memory option's step vs today's infini
    layers=[6, 24],
    eval_lengths=[8192, 1048576],
    steps=3,
    data_seconds=2.0,
)
FULL = dict(
    lengths=[2048, 4096, 8192, 16384, 32768],
    full_lengths=[2048, 4096, 8192, 16384, 32768],
    memory_lengths=[2048, 4096, 8192, 16384, 32768],
    memory_path_lengths=[2048, 8192, 32768],
    memory_options_lengths=[2048, 4096],
    layers=[6, 12, 24],
    eval_lengths=[8192, 65536, 262144, 1048576],
    steps=3,
    data_seconds=5.0,
)


SKIPPABLE = (
    "train_step",
    "memory_path",
    "memory_options",
    "memory",
    "compile",
    "eval_memory",
    "data",
)


def memory_records(lengths: list[int], spec: str, overrides=None) -> list[dict]:
    """Compiled memory (XLA memory analysis) of the train step, compiled but not run."""
    out = []
    for seq in lengths:
        for kind in ("full", "local", "infini"):
            config = train_speed.config_for(spec, kind, seq, overrides=overrides)
            *_, compile_s, memory = train_speed.compile_step(config)
            r = {"bench": "memory", "attention": kind, "seq_len": seq, "memory_bytes": memory}
            r.update(compile_s=compile_s, layers=config.model.num_layers)
            print(f"memory {kind:>6} {seq:>6} tokens: {memory / 2**20:>9,.0f} MiB", flush=True)
            out.append(r)
    return out


def compile_records(layers: list[int], spec: str, seq: int = 2048, overrides=None) -> list[dict]:
    """Compile time of the infini train step against the number of layers."""
    out = []
    for n in layers:
        config = train_speed.config_for(spec, "infini", seq, n, overrides=overrides)
        *_, compile_s, _ = train_speed.compile_step(config)
        print(f"compile infini {n:>3} layers: {compile_s:.1f} s", flush=True)
        out.append(
            {
                "bench": "compile",
                "attention": "infini",
                "seq_len": seq,
                "layers": n,
                "compile_s": compile_s,
            }
        )
    return out


def targets(records: list[dict]) -> list[dict]:
    """The issue's targets, each as a measured ratio from this run."""
    out = []

    def add(name, value, ok, detail):
        out.append(
            {
                "bench": "target",
                "attention": None,
                "seq_len": None,
                "target": name,
                "value": value,
                "met": bool(ok),
                "detail": detail,
            }
        )

    steps = [r for r in records if r["bench"] == "train_step" and "tokens_per_s" in r]
    for r in steps:
        if r["attention"] != "infini":
            continue
        local = find_record(steps, "train_step", attention="local", seq_len=r["seq_len"])
        if local:
            paired = train_speed.paired_ratio(r, local)
            if paired:  # interleaved steps: the median of the per-round ratios
                ratio, low, high = paired
                detail = f"target ≤ 1.05; {len(r['step_times'])} rounds, {low:.3f}–{high:.3f}"
            else:
                ratio, detail = local["tokens_per_s"] / r["tokens_per_s"], "target ≤ 1.05"
            add(f"infini step time / local at {r['seq_len']}", ratio, ratio <= 1.05, detail)
        full = find_record(steps, "train_step", attention="full", seq_len=r["seq_len"])
        if full:
            ratio = r["tokens_per_s"] / full["tokens_per_s"]
            need = r["seq_len"] >= 32768
            add(
                f"infini speed / full at {r['seq_len']}",
                ratio,
                ratio >= 2 or not need,
                "target ≥ 2 at 32K" if need else "reported (target applies at 32K)",
            )
    for r in records:
        if r["bench"] == "memory_options" and r.get("ratio_to_infini") and r["arm"] != "infini":
            ratio, low, high = r["ratio_to_infini"]
            target = r["arm"] in memory_options.TARGETED
            add(
                f"{r['arm']} step time / today's infini at {r['seq_len']}",
                ratio,
                ratio <= 1.10 or not target,
                f"{'target ≤ 1.10' if target else 'reported'}; "
                f"{len(r['step_times'])} rounds, {low:.3f}–{high:.3f}",
            )
    for r in records:
        if r["bench"] == "memory_path" and "time_share" in r:
            add(
                f"memory path's share of the infini step time at {r['seq_len']}",
                r["time_share"],
                True,
                f"reported: at its own rate; its MFU {r['mfu']:.1%} vs the "
                f"step's {r['step_mfu']:.1%}, for {r['flops_share']:.1%} of the FLOPs",
            )
    if steps:
        best = max(steps, key=lambda r: r["mfu"])
        add(
            "best train-step MFU vs measured matmul",
            best["mfu"],
            best["mfu"] >= 0.40,
            f"target ≥ 0.40 ({best['attention']} at {best['seq_len']})",
        )
    # Last record over first: eval memory (longest vs shortest), compile time (deepest vs
    # shallowest).
    for bench, value, axis, unit, limit in (
        ("eval_memory", "peak_rss_bytes", "seq_len", "tokens", 1.2),
        ("compile", "compile_s", "layers", "layers", 1.5),
    ):
        rs = [r for r in records if r["bench"] == bench]
        if len(rs) >= 2:
            ratio = rs[-1][value] / rs[0][value]
            name = f"{bench.replace('_', ' ')} {rs[-1][axis]} / {rs[0][axis]} {unit}"
            add(name, ratio, ratio <= limit, f"target ≤ {limit}")
    mem = [r for r in records if r["bench"] == "memory"]
    for kind in ("local", "infini", "full"):
        rs = sorted((r for r in mem if r["attention"] == kind), key=lambda r: r["seq_len"])
        if len(rs) >= 2:
            growth = rs[-1]["memory_bytes"] / rs[0]["memory_bytes"]
            length = rs[-1]["seq_len"] / rs[0]["seq_len"]
            linear = growth <= 1.1 * length
            add(
                f"{kind} compiled memory growth {rs[0]['seq_len']}→{rs[-1]['seq_len']}",
                growth,
                linear if kind != "full" else True,
                f"length ×{length:.0f}; target: at most linear"
                if kind != "full"
                else f"length ×{length:.0f}; reported (no target for full attention)",
            )
    return out


GRID_FLAGS = (
    "lengths",
    "full_lengths",
    "memory_lengths",
    "memory_path_lengths",
    "memory_options_lengths",
    "layers",
    "eval_lengths",
)


def run_all(grid: dict, config: str, skip: set[str], output: str, overrides=None) -> list[dict]:
    """Every benchmark of `grid` not in `skip`; writes output/results.json; returns the records."""
    peak = matmul_peak()
    print(f"peak: {peak['device']} {peak['dtype']} matmul {peak['flops_per_s'] / 1e9:,.0f} GFLOP/s")
    records = [peak]
    if "train_step" not in skip:
        for seq in grid["lengths"]:
            kinds = ["full"] if seq in grid["full_lengths"] else []
            records += train_speed.run(
                kinds + ["local", "infini"],
                [seq],
                peak["flops_per_s"],
                config,
                grid["steps"],
                overrides,
            )
    if "memory_path" not in skip:
        lengths, steps = grid["memory_path_lengths"], grid["steps"]
        records += memory_path.run(lengths, peak["flops_per_s"], config, steps, overrides, records)
    if "memory_options" not in skip:
        lengths, steps = grid["memory_options_lengths"], grid["steps"]
        records += memory_options.run(lengths, peak["flops_per_s"], config, steps, overrides)
    if "memory" not in skip:
        records += memory_records(grid["memory_lengths"], config, overrides)
    if "compile" not in skip:
        records += compile_records(grid["layers"], config, overrides=overrides)
    if "eval_memory" not in skip:
        records += eval_memory.measure(grid["eval_lengths"])
    if "data" not in skip:
        records += data_speed.measure("configs/llama_300m_infini.py", grid["data_seconds"])
    records += targets(records)
    print("\n| target | measured | met | |\n|---|---:|---|---|")
    for t in (r for r in records if r["bench"] == "target"):
        print(
            f"| {t['target']} | {t['value']:.3g} | {'yes' if t['met'] else 'no'} | {t['detail']} |"
        )
    path = write_records(output, "results.json", records)
    print(f"wrote {path} ({len(records)} records)")
    return records


def main(argv: list[str] | None = None) -> None:
    flags.DEFINE_bool("quick", False, "CPU-sized subset (< 5 min).")
    flags.DEFINE_string("output", None, "Directory for results.json.")
    flags.DEFINE_string("config", "bench", "'bench' model or a config file.")
    flags.DEFINE_string("attention_impl", "auto", "model.attention_impl of every point.")
    flags.DEFINE_list("set", [], "Dotted overrides of every point, e.g. model.remat_policy=none.")
    flags.DEFINE_list(
        "skip",
        [],
        "Benchmarks to skip: " + ",".join(SKIPPABLE) + ".",
    )
    for name in GRID_FLAGS:
        flags.DEFINE_list(name, [], "Overrides the grid's list (comma-separated integers).")

    def run(_):
        f = flags.FLAGS
        cli.require("output")
        unknown = set(f.skip) - set(SKIPPABLE)
        if unknown:
            raise ConfigError(f"--skip={','.join(f.skip)}: {sorted(unknown)} not in {SKIPPABLE}")
        cli.writable(f.output, "output")  # before minutes of benchmarks
        grid = dict(QUICK if f.quick else FULL)
        for name in GRID_FLAGS:
            if f[name].value:
                grid[name] = cli.int_list(f[name].value, name)
        overrides = train_speed.point_overrides(f.attention_impl, f.set)
        run_all(grid, f.config, set(f.skip), f.output, overrides)

    cli.run(run, argv)


if __name__ == "__main__":
    main()
