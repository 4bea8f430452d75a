"""`plan --search`: remat policy × micro-batches × batch per data shard, compiled for the target.

Each setting is the config with `model.remat_policy` / `model.remat_layers`,
`optimizer.micro_batches` and `data.batch_size` (= batch per shard × data × fsdp × slices)
changed, compiled by `plan.plan` (the TPU compiler with `--topology`). Recomputed FLOPs are the
model FLOPs (`infini_jax.model.flops`'s matmul convention) the backward pass spends redoing the
forward under each policy (`POLICIES`). The best setting fits with headroom, has the most tokens
per device, then the least recomputation, then the fewest micro-batches, then the lowest peak.

The grid is bounded and pruned: policies cheapest first; for each, batches from small to large,
each with the fewest micro-batches that fit; a batch that fits with none ends the policy (a
larger one needs more memory), and a policy that fits the largest batch without micro-batches
ends the search (a costlier policy can only recompute more for the same tokens).
"""

from collections.abc import Callable

from infini_jax.config import validate
from infini_jax.model.flops import forward_flops_per_token
from infini_jax.planning.plan import HEADROOM, plan

MICRO_BATCHES = (1, 2, 4)
# (remat_policy, remat_layers, what the backward pass recomputes), cheapest first.
POLICIES = (
    ("none", False, "nothing (every activation kept)"),
    ("dots_saveable", False, "elementwise ops (every matmul output kept)"),
    ("dots_with_no_batch_dims_saveable", False, "attention core + elementwise"),
    ("attention_out", False, "about one forward pass (the attention's inputs are not kept)"),
    ("nothing_saveable", False, "one forward pass"),
    ("nothing_saveable", True, "two forward passes (segment, then each layer)"),
)


def recomputed_flops_per_token(model_cfg, seq_len: int, policy: str, layers: bool) -> float:
    """Matmul FLOPs per token that the backward pass recomputes under a remat policy."""
    fwd = forward_flops_per_token(model_cfg, seq_len)
    total = sum(fwd.values())
    return {
        "none": 0.0,
        "dots_saveable": 0.0,
        "dots_with_no_batch_dims_saveable": fwd["attention"] + fwd["memory"],
        "attention_out": total,
        "nothing_saveable": total * (2 if layers else 1),
    }[policy]


def _setting(config, mesh_axes, target, policy, layers, micro, per_shard) -> tuple[object, dict]:
    c = config.copy_and_resolve_references()
    c.model.remat_policy, c.model.remat_layers = policy, layers
    c.model.layer_remat_policy = "nothing_saveable"
    c.optimizer.micro_batches = micro
    c.data.batch_size = per_shard * mesh_axes["data"] * mesh_axes["fsdp"] * target.slices
    return c, dict(
        remat_policy=policy,
        remat_layers=layers,
        micro_batches=micro,
        batch_per_shard=per_shard,
        batch=c.data.batch_size,
    )


def search(
    config,
    mesh_axes: dict[str, int],
    target,
    batches: list[int],
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Compiles the pruned grid; returns `{"target", "mesh", "records", "best"}`."""
    name = target.name or "h100"  # the CPU estimate's row to pick the best for
    batches = sorted(set(batches))
    records, base = [], None
    for rank, (policy, layers, recomputed) in enumerate(POLICIES):
        fits_largest = False
        for b in batches:
            fitted = False
            for micro in (m for m in MICRO_BATCHES if b % m == 0):
                c, setting = _setting(config, mesh_axes, target, policy, layers, micro, b)
                model_cfg = validate(c)
                p = plan(c, mesh_axes, target)
                base = base or p
                flops = recomputed_flops_per_token(model_cfg, c.data.seq_len, policy, layers)
                r = setting | {
                    "rank": rank,
                    "recomputed": recomputed,
                    "tokens_per_device": p["tokens_per_step"] / p["devices"],
                    "recomputed_flops_per_device": flops * p["tokens_per_step"] / p["devices"],
                    "peak_bytes": p["bytes_per_device"]["peak"],
                    "out_of_memory": p["out_of_memory"],
                    "compile_s": p["compile_s"],
                    "fits": p["fits"][name],
                    "kernel": p["kernel"],
                    "fused_attention_calls": p["fused_attention_calls"],
                }
                records.append(r)
                peak = "out of memory" if r["peak_bytes"] is None else _gib(r["peak_bytes"])
                log(
                    f"{policy}{' + remat_layers' if layers else ''}, micro-batches {micro}, "
                    f"batch/shard {b}: peak {peak}, {'fits' if r['fits'] else 'does not fit'} "
                    f"({r['compile_s']:.0f} s)"
                )
                if r["fits"]:
                    fitted = True
                    fits_largest = b == batches[-1] and micro == 1
                    break
            if not fitted:
                break
        if fits_largest:
            break
    return {
        "target": name,
        "compiler": target.compiler,
        "mesh": base["mesh"] if base else mesh_axes,
        "headroom": HEADROOM,
        "records": records,
        "best": best(records),
    }


def best(records: list[dict]) -> dict | None:
    """The fitting setting with the most tokens per device, then the least recomputation,
    then the fewest micro-batches, then the lowest peak (attention_out and nothing_saveable
    recompute alike)."""

    def key(r):
        tokens, flops = r["tokens_per_device"], r["recomputed_flops_per_device"]
        return (-tokens, flops, r["micro_batches"], r["peak_bytes"])

    return min((r for r in records if r["fits"]), key=key, default=None)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def format_search(result: dict) -> str:
    """The table of compiled settings and the best one, as Markdown."""
    mesh = ", ".join(f"{k}={v}" for k, v in result["mesh"].items())
    lines = [
        f"target {result['target']} ({result['compiler']}), mesh {mesh}; fits = peak ≤ "
        f"{result['headroom']:.0%} of the device's memory",
        "",
        "| remat_policy | remat_layers | micro-batches | batch/shard | tokens/device | "
        "recomputed TFLOP/device/step | peak | fits |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    chosen = result["best"]
    for r in result["records"]:
        peak = "out of memory" if r["peak_bytes"] is None else _gib(r["peak_bytes"])
        mark = " **best**" if r is chosen else ""
        lines.append(
            f"| {r['remat_policy']} | {r['remat_layers']} | {r['micro_batches']} | "
            f"{r['batch_per_shard']} | {r['tokens_per_device']:,.0f} | "
            f"{r['recomputed_flops_per_device'] / 1e12:.2f} | {peak} | "
            f"{'yes' if r['fits'] else 'no'}{mark} |"
        )
    if chosen is None:
        lines.append("\nnothing fits: add chips (fsdp), or shorten data.seq_len")
    else:
        lines.append(
            f"\nbest: --config.model.remat_policy={chosen['remat_policy']} "
            f"--config.model.remat_layers={chosen['remat_layers']} "
            f"--config.optimizer.micro_batches={chosen['micro_batches']} "
            f"--config.data.batch_size={chosen['batch']}"
        )
    return "\n".join(lines)
