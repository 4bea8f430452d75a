r"""Infini's promise on a TPU compiler: peak HBM per chip as the sequence grows, tokens per step
fixed, for infini, local and full attention; next to the CPU compiler's estimate of the same.

  python -m infini_jax.bench.context_memory --topology=v5p-8 [--config=...] \
      [--points=8192:16:fsdp,32768:4:fsdp,131072:1:tensor] [--output=DIR]

Each point is `seq_len:batch:axis`: the model at that length and global batch on one slice of
`--topology`, its devices all on `axis` (fsdp: the batch splits over them; tensor: heads and
MLP do, for a batch smaller than the chip count). Every point is compiled twice, never run: for
the TPU (libtpu) and for as many fake CPU devices on the same mesh, whose memory analysis is
what `plan` without `--topology` reports. Writes DIR/context_memory.json and .md.
"""

import json
import os

from infini_jax import storage

KINDS = ("infini", "local", "full")


def parse_points(items: list[str]) -> list[tuple[int, int, str]]:
    """`["8192:16:fsdp", ...]` → `[(8192, 16, "fsdp"), ...]`."""
    from infini_jax.errors import ConfigError

    out = []
    for item in items:
        parts = item.split(":")
        if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
            raise ConfigError(f"--points entry {item!r}: write SEQ_LEN:BATCH:fsdp|tensor")
        if parts[2] not in ("fsdp", "tensor"):
            raise ConfigError(f"--points entry {item!r}: the axis is fsdp or tensor")
        out.append((int(parts[0]), int(parts[1]), parts[2]))
    return out


def measure(config, points, topology: str) -> list[dict]:
    """Compiles every (point, kind) for the TPU and the CPU; one record each."""
    from infini_jax.planning.plan import cpu_target, plan, tpu_target

    tpu = tpu_target(topology)
    chips = len(tpu.devices)
    cpu = cpu_target(chips)
    records = []
    for seq, batch, axis in points:
        for kind in KINDS:
            c = config.copy_and_resolve_references()
            c.model.attention, c.data.seq_len, c.data.batch_size = kind, seq, batch
            axes = {"data": 1, "fsdp": 1, "tensor": 1, axis: chips}
            peaks = {}
            for name, target in (("tpu", tpu), ("cpu", cpu)):
                p = plan(c, axes, target)
                peaks[name] = p
                peak = p["bytes_per_device"]["peak"]
                shown = "out of memory" if peak is None else f"{peak / 2**30:.2f} GiB"
                print(f"{kind:>6} {seq:>7} × {batch:<3} {axis} {name}: {shown}", flush=True)
            t, cpu_p = peaks["tpu"], peaks["cpu"]
            tp, cp = t["bytes_per_device"]["peak"], cpu_p["bytes_per_device"]["peak"]
            records.append(
                {
                    "attention": kind,
                    "seq_len": seq,
                    "batch": batch,
                    "mesh": t["mesh"],
                    "topology": topology,
                    "tpu_peak_bytes": tp,
                    "tpu_out_of_memory": t["out_of_memory"],
                    "tpu_kernel": t["kernel"],
                    "tpu_fused_attention_calls": t["fused_attention_calls"],
                    "tpu_compile_s": t["compile_s"],
                    "cpu_peak_bytes": cp,
                    "cpu_compile_s": cpu_p["compile_s"],
                    "cpu_over_tpu": cp / tp if tp and cp else None,
                    "hbm_bytes": t["memory_per_device"][topology],
                    "fits": t["fits"][topology],
                }
            )
    return records


def table(records: list[dict]) -> str:
    def gib(n):
        return "out of memory" if n is None else f"{n / 2**30:.2f}"

    lines = [
        "| attention | tokens × batch | mesh | TPU peak GiB/chip | fits | kernel (Mosaic calls) "
        "| CPU estimate GiB | CPU / TPU |",
        "|---|---|---|---:|---|---|---:|---:|",
    ]
    for r in records:
        mesh = ",".join(f"{k}:{v}" for k, v in r["mesh"].items() if v > 1) or "1"
        ratio = f"{r['cpu_over_tpu']:.2f}" if r["cpu_over_tpu"] else "—"
        lines.append(
            f"| {r['attention']} | {r['seq_len']:,} × {r['batch']} | {mesh} | "
            f"{gib(r['tpu_peak_bytes'])} | {'yes' if r['fits'] else 'no'} | "
            f"{r['tpu_kernel']} ({r['tpu_fused_attention_calls'] or 0}) | "
            f"{gib(r['cpu_peak_bytes'])} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from absl import flags
    from ml_collections import config_flags

    from infini_jax import cli
    from infini_jax.parallel import tpu

    config_flags.DEFINE_config_file("config", "configs/llama_300m_infini.py", "Config[:preset].")
    flags.DEFINE_string("topology", "v5p-8", "The Cloud TPU slice (plan --topology's names).")
    flags.DEFINE_list(
        "points", ["8192:16:fsdp", "32768:4:fsdp", "131072:1:tensor"], "SEQ_LEN:BATCH:AXIS."
    )
    flags.DEFINE_string("output", "", "Also write DIR/context_memory.json and .md.")

    def run(_):
        f = flags.FLAGS
        points = parse_points(f.points)
        cli.writable(f.output, "output")
        s = tpu.parse_slice(f.topology)
        devices = s.chips  # one device per chip on every generation (v4: megacore)
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
        )
        import jax

        jax.config.update("jax_platforms", "cpu")
        records = measure(f.config, points, s.name)
        text = table(records)
        print(text)
        if f.output:
            storage.write_text(
                storage.join(f.output, "context_memory.json"), json.dumps(records, indent=1)
            )
            storage.write_text(storage.join(f.output, "context_memory.md"), text + "\n")

    cli.run(run, argv)


if __name__ == "__main__":
    main()
