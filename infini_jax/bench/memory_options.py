r"""What each memory option costs: the train step of every arm of the memory study against
today's infini step, timed in the same interleaved rounds.

  python -m infini_jax.bench.memory_options [--lengths=2048,4096] [--steps=5]
      [--config=bench|configs/llama_300m_infini.py] [--output=DIR]

Every arm (`ARMS`, the study's: configs/sweeps/study_memory.py) is the same model with its
memory options set; local attention is timed too, as the floor. As in `train_speed`, all
points of a length are compiled first, then one step of each is timed per round, so the
ratio to today's infini is a median of paired per-round ratios (min–max beside it).
"""

from absl import flags

from infini_jax import cli
from infini_jax.bench import train_speed, write_records
from infini_jax.bench.peak import matmul_peak

EXACT = {"model.memory_update": "exact_delta"}
L2 = {**EXACT, "model.memory_features": "l2"}
BETA = {**L2, "model.write_strength": True}
ARMS = {  # name → (attention, memory overrides)
    "local": ("local", {}),
    "infini": ("infini", {}),  # today's: one-step delta, ELU+1
    "exact_delta": ("infini", EXACT),
    "exact_delta_l2": ("infini", L2),
    "exact_delta_l2_beta": ("infini", BETA),
    "gated_delta": ("infini", {**BETA, "model.decay": "data"}),
    "linear_decay": ("infini", {"model.memory_update": "linear", "model.decay": "data"}),
}
TARGETED = ("gated_delta",)  # the arms held to ≤ 1.10× today's infini step (issue 33)


def run(
    lengths: list[int], peak: float, spec: str = "bench", steps: int = 5, overrides=None
) -> list[dict]:
    """One `train_step`-style record per (length, arm), with `arm`, `step_times` and, for the
    infini arms, `ratio_to_infini` = (median, min, max) of the paired step-time ratios."""
    records = []
    for seq in lengths:
        points = []
        for name, (kind, arm) in ARMS.items():
            config = train_speed.config_for(spec, kind, seq, overrides={**(overrides or {}), **arm})
            record, step = train_speed.prepare(config)
            points.append((name, record, step))
        times = {name: [] for name, *_ in points}
        for _ in range(steps):
            for name, _, step in points:
                times[name].append(step())
        done = {name: train_speed.finish(record, times[name], peak) for name, record, _ in points}
        for name, record in done.items():
            record.update(bench="memory_options", arm=name)
            if ARMS[name][0] == "infini":
                record["ratio_to_infini"] = train_speed.paired_ratio(record, done["infini"])
            records.append(record)
            ratio = record.get("ratio_to_infini")
            ratio = f"{ratio[0]:.3f} ({ratio[1]:.3f}–{ratio[2]:.3f})" if ratio else "-"
            print(f"{seq:>6} {name:>20}: {record['tokens_per_s']:>9,.0f} tok/s, × infini {ratio}")
    return records


def main(argv: list[str] | None = None) -> None:
    flags.DEFINE_list("lengths", ["2048", "4096"], "Sequence lengths.")
    flags.DEFINE_integer("steps", 5, "Timed rounds per length.", lower_bound=1)
    flags.DEFINE_string("config", "bench", "'bench' model or a config file.")
    flags.DEFINE_string("output", None, "Directory for memory_options.json.")

    def go(_):
        f = flags.FLAGS
        lengths = cli.int_list(f.lengths, "lengths")
        cli.writable(f.output, "output")
        peak = matmul_peak()
        overrides = train_speed.point_overrides("auto", [])
        records = run(lengths, peak["flops_per_s"], f.config, f.steps, overrides)
        if f.output:
            print(f"wrote {write_records(f.output, 'memory_options.json', [peak, *records])}")

    cli.run(go, argv)


if __name__ == "__main__":
    main()
