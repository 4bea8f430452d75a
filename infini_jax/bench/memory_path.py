r"""The memory path alone: how fast Infini-attention's memory products run on this device.

  python -m infini_jax.bench.memory_path [--lengths=2048,8192]
      [--config=bench|configs/llama_300m_infini.py] [--output=DIR]

The train-step bench measures infini against local; this one says why the difference is what it
is. For the model's shape at each length it times, forward and backward, only the memory path of
every layer: the read and gated mix (`ops.mix`) and the write (`ops.memory_write`), over the
segments in a `jax.lax.scan` whose body is rematerialised as the train step's is. The local
attention's output is a fixed random input. Then it times the infini train step in the same
process and prints, next to each other:

- the memory path's share of the step's model FLOPs (`infini_jax.model.flops`, same convention),
- its MFU and the step's, both against the matmul ceiling measured in the same process,
- the share of the step's time the memory path takes at its own rate: FLOPs share × step MFU
  / memory-path MFU, i.e. its time alone over the step's. This is not a prediction of
  infini / local: in the step the path can overlap other work, and the step also pays for what
  surrounds it (the sums of two gradients into q and k, the layer scan's stacked residuals).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from infini_jax import ops
from infini_jax.bench import find_record, train_speed, write_records
from infini_jax.config import validate
from infini_jax.model.config import REMAT_POLICIES, ModelConfig
from infini_jax.model.flops import memory_flops_per_token


def inputs(model_cfg: ModelConfig, batch: int, seq_len: int, seed: int = 0) -> dict:
    """Random inputs of the memory path, split per segment and layer, heads first as the
    segment step moves them (`ops.local.group_heads`): q, a_dot and the output's cotangent
    `[S, L, b, kv, g, n, d]`, k and v `[S, L, b, kv, n, d]` (q, k, v in the compute dtype, the
    rest float32), balance `[L, h]`; S = seq_len / segment_len, L layers."""
    c = model_cfg
    s, n, d = seq_len // c.segment_len, c.segment_len, c.head_dim
    lead = (s, c.num_layers, batch, c.num_kv_heads)
    grouped = (*lead, c.num_heads // c.num_kv_heads, n, d)
    shapes = {"q": grouped, "k": (*lead, n, d), "v": (*lead, n, d)}
    shapes.update(a_dot=grouped, cotangent=grouped)
    rng = np.random.default_rng(seed)  # numpy: no compile per shape
    out = {k: jnp.asarray(rng.standard_normal(shape, np.float32)) for k, shape in shapes.items()}
    for name in ("q", "k", "v"):  # the projections' outputs, in the compute dtype
        out[name] = out[name].astype(c.compute_dtype)
    out["balance"] = jnp.asarray(rng.standard_normal((c.num_layers, c.num_heads), np.float32))
    return out


def path_loss(model_cfg: ModelConfig, x: dict) -> tuple[jax.Array, ops.Memory]:
    """Σ(memory-path output × cotangent) over all segments and layers, and the final memories
    (stacked `[L, ...]`): the model's own ops, in the train step's loop structure."""
    c = model_cfg
    options = c.infini_options
    b, n = x["q"].shape[2], x["q"].shape[5]
    ones = jnp.ones((b, n), bool)
    ids = jnp.zeros((b, n), jnp.int32)

    def layer(_, xs):
        q, k, v, a_dot, cot, balance, memory = xs
        out = ops.mix(q, a_dot, balance, memory, ones, options)
        memory = ops.memory_write(ops.sigma(k), v, memory, ones, ids, options.update)
        return None, (jnp.sum(out * cot), memory)

    def segment(memories, xs):
        q, k, v, a_dot, cot = xs
        _, (loss, memories) = jax.lax.scan(
            layer, None, (q, k, v, a_dot, cot, x["balance"], memories)
        )
        return memories, jnp.sum(loss)

    policy = REMAT_POLICIES[c.remat_policy]
    if c.remat_policy != "none":
        segment = jax.checkpoint(segment, policy=policy, prevent_cse=False)
    empty = ops.init_memory(b, c.num_kv_heads, c.head_dim)
    memories = jax.tree.map(lambda m: jnp.broadcast_to(m, (c.num_layers, *m.shape)), empty)
    xs = tuple(x[name] for name in ("q", "k", "v", "a_dot", "cotangent"))
    memories, losses = jax.lax.scan(segment, memories, xs)
    return jnp.sum(losses), memories


def memory_flops(model_cfg: ModelConfig, batch: int, seq_len: int) -> float:
    """Training FLOPs of the memory path (`infini_jax.model.flops`' memory term × tokens)."""
    return float(memory_flops_per_token(model_cfg) * batch * seq_len)


def time_path(model_cfg: ModelConfig, batch: int, seq_len: int, steps: int) -> float:
    """Median seconds of one forward + backward of the memory path (after a warm-up)."""
    x = inputs(model_cfg, batch, seq_len)
    cot = x.pop("cotangent")  # fixed, as the loss's gradient is: not differentiated
    grad = jax.jit(jax.grad(lambda x, cot: path_loss(model_cfg, {**x, "cotangent": cot})[0]))
    jax.block_until_ready(grad(x, cot))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(grad(x, cot))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(
    lengths: list[int],
    peak: float,
    spec: str = "bench",
    steps: int = 3,
    overrides=None,
    step_records=(),
) -> list[dict]:
    """One `memory_path` record per length, each compared with the infini train step at that
    length: the one in `step_records` (timed in this process), else one timed here and returned
    too."""
    records = []
    for seq in lengths:
        config = train_speed.config_for(spec, "infini", seq, overrides=overrides)
        model_cfg, batch = validate(config), config.data.batch_size
        path_s = time_path(model_cfg, batch, seq, steps)
        step = find_record(step_records, "train_step", attention="infini", seq_len=seq)
        if step is None:
            step = train_speed.run(["infini"], [seq], peak, spec, steps, overrides)[0]
            records.append(step)
        flops = memory_flops(model_cfg, batch, seq)
        r = {"bench": "memory_path", "attention": "infini", "seq_len": seq, "batch": batch}
        r.update(layers=model_cfg.num_layers, path_s=path_s, flops=flops, mfu=flops / path_s / peak)
        if "mfu" in step:
            share = flops / (step["flops_per_token"] * batch * seq)
            r.update(flops_share=share, step_mfu=step["mfu"])
            r["time_share"] = share * step["mfu"] / r["mfu"]
        records.append(r)
        print(format_record(r), flush=True)
    return records


def format_record(r: dict) -> str:
    head = f"memory_path {r['seq_len']:>6} tokens, {r['layers']} layers: MFU {r['mfu']:.1%}"
    if "step_mfu" not in r:
        return head
    return head + (
        f" (train step {r['step_mfu']:.1%}); {r['flops_share']:.1%} of the step's FLOPs, "
        f"{r['time_share']:.1%} of its time at its own rate"
    )


def main(argv: list[str] | None = None) -> None:
    from absl import flags

    from infini_jax import cli
    from infini_jax.bench.peak import printed_peak

    flags.DEFINE_list("lengths", ["2048", "8192"], "Sequence lengths.")
    flags.DEFINE_string("config", "bench", "'bench' or a config file.")
    flags.DEFINE_integer("steps", 3, "Timed steps per point (the median is kept).", lower_bound=1)
    flags.DEFINE_string("output", "", "Directory for memory_path.json ('' = none).")

    def run_all(_):
        f = flags.FLAGS
        lengths = cli.int_list(f.lengths, "lengths")
        cli.writable(f.output, "output")
        peak = printed_peak()
        records = [peak, *run(lengths, peak["flops_per_s"], f.config, f.steps)]
        if f.output:
            write_records(f.output, "memory_path.json", records)

    cli.run(run_all, argv)


if __name__ == "__main__":
    main()
