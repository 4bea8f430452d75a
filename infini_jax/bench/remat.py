r"""Remat policy × micro-batches × per-device batch, from `plan`'s compiled memory: which fit an
accelerator, and the cheapest (least recomputation) that does.

  python -m infini_jax.bench.remat --config=configs/llama_300m_infini.py \
      [--batches=4,8,16] [--output=DIR]

Each setting's train step is compiled (not run) for one CPU device, as `plan` does; its peak
is XLA's memory analysis. The policies are ranked by what the backward pass recomputes
(`POLICIES`, docs/performance.md#remat-and-batch): a step without remat costs about 3 forward
passes; `nothing_saveable` on the segment step adds one, per-layer remat inside it one more.
The best setting for an accelerator is the cheapest policy that fits, then the largest
per-device batch, then the fewest micro-batches.
"""

import json

from infini_jax import storage

# (remat_policy, remat_layers, what the backward pass recomputes), cheapest first.
POLICIES = (
    ("none", False, "nothing (every activation kept)"),
    ("dots_saveable", False, "elementwise ops (every matmul output kept)"),
    ("dots_with_no_batch_dims_saveable", False, "attention core + elementwise (projections kept)"),
    ("attention_out", False, "a forward pass but the attention output projection"),
    ("nothing_saveable", False, "one forward pass"),
    ("nothing_saveable", True, "two forward passes (segment, then each layer)"),
)
MICRO_BATCHES = (1, 2, 4)
ACCELERATORS = ("h100", "v5e", "v5p")


def settings(batches: list[int]) -> list[dict]:
    """Every (policy, micro-batches, per-device batch) to compile, cheapest policies first."""
    out = []
    for rank, (policy, layers, recomputed) in enumerate(POLICIES):
        for batch in batches:
            for micro in MICRO_BATCHES:
                if batch % micro == 0:
                    out.append(
                        dict(
                            remat_policy=policy,
                            remat_layers=layers,
                            micro_batches=micro,
                            batch=batch,
                            rank=rank,
                            recomputed=recomputed,
                        )
                    )
    return out


def measure(config, setting: dict) -> dict:
    """Compiles `config` with `setting` on one device; the setting plus its peak bytes."""
    from infini_jax.plan import plan

    c = config.copy_and_resolve_references()
    c.model.remat_policy, c.model.remat_layers = setting["remat_policy"], setting["remat_layers"]
    c.model.layer_remat_policy = "nothing_saveable"
    c.optimizer.micro_batches = setting["micro_batches"]
    c.data.batch_size = setting["batch"]
    p = plan(c, {"data": 1, "fsdp": 1, "tensor": 1})
    return setting | {
        "peak_bytes": p["bytes_per_device"]["peak_estimate"],
        "temporaries_bytes": p["bytes_per_device"]["xla_temporaries"],
        "fits": {a: p["fits"][a] for a in ACCELERATORS},
    }


def best(records: list[dict], accelerator: str) -> dict | None:
    """The fitting setting with the least recomputation, then the largest per-device batch,
    then the fewest micro-batches."""
    fitting = [r for r in records if r["fits"][accelerator]]
    return min(fitting, key=lambda r: (r["rank"], -r["batch"], r["micro_batches"]), default=None)


def table(records: list[dict]) -> str:
    head = "| remat_policy | remat_layers | recomputed | micro_batches | batch/device | peak GiB | "
    head += " | ".join(ACCELERATORS) + " |"
    lines = [head, "|" + "---|" * (6 + len(ACCELERATORS))]
    for r in records:
        fits = " | ".join("fits" if r["fits"][a] else "no" for a in ACCELERATORS)
        lines.append(
            f"| {r['remat_policy']} | {r['remat_layers']} | {r['recomputed']} | "
            f"{r['micro_batches']} | {r['batch']} | {r['peak_bytes'] / 2**30:.1f} | {fits} |"
        )
    for a in ACCELERATORS:
        b = best(records, a)
        choice = (
            f"remat_policy={b['remat_policy']}, remat_layers={b['remat_layers']}, "
            f"micro_batches={b['micro_batches']}, batch/device={b['batch']}"
            if b
            else "nothing fits"
        )
        lines.append(f"\nbest on {a}: {choice}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from absl import flags
    from ml_collections import config_flags

    from infini_jax import cli

    config_flags.DEFINE_config_file("config", "configs/llama_300m_infini.py", "Config[:preset].")
    flags.DEFINE_list("batches", ["4", "8"], "Per-device batches (sequences) to try.")
    flags.DEFINE_string("output", "", "Also write DIR/remat.json and DIR/remat.md.")

    def run(_):
        import jax

        jax.config.update("jax_platforms", "cpu")
        f = flags.FLAGS
        records = []
        for s in settings([int(b) for b in f.batches]):
            records.append(measure(f.config, s))
            print(
                f"{s['remat_policy']:>16} layers={s['remat_layers']!s:5} micro={s['micro_batches']}"
                f" batch={s['batch']}: peak {records[-1]['peak_bytes'] / 2**30:.1f} GiB",
                flush=True,
            )
        text = table(records)
        print(text)
        if f.output:
            storage.write_text(storage.join(f.output, "remat.json"), json.dumps(records, indent=1))
            storage.write_text(storage.join(f.output, "remat.md"), text + "\n")

    cli.run(run, argv)


if __name__ == "__main__":
    main()
