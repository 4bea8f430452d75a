"""Benchmarks produce well-formed records and check targets as ratios (no timing asserted)."""

import pytest

from infini_jax.bench import train_speed
from infini_jax.bench.__main__ import targets
from infini_jax.bench.peak import matmul_peak


@pytest.mark.slow
def test_train_step_record_has_the_documented_fields():
    peak = matmul_peak(n=1024, repeats=3)  # a 256³ matmul underrates the peak: MFU > 1
    assert peak["bench"] == "peak" and peak["flops_per_s"] > 0
    overrides = train_speed.point_overrides(
        "xla", ["model.remat_policy=none", "optimizer.micro_batches=2"]
    )
    c = train_speed.config_for("bench", "infini", 512, layers=1, overrides=overrides)
    record, step = train_speed.prepare(c)
    r = train_speed.finish(record, [step()], peak["flops_per_s"])
    assert (r["kernel"], r["remat_policy"], r["micro_batches"]) == ("xla", "none", 2)
    for key in ("bench", "attention", "seq_len", "tokens_per_s", "mfu", "memory_bytes"):
        assert key in r
    assert (r["attention"], r["seq_len"], r["layers"]) == ("infini", 512, 1)
    assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1.5 and r["memory_bytes"] > 0
    assert r["compile_s"] > 0


def test_bench_set_flag_needs_field_equals_value():
    import pytest

    from infini_jax.errors import ConfigError

    assert train_speed.point_overrides("auto", ["data.batch_size=8"])["data.batch_size"] == 8
    with pytest.raises(ConfigError, match="--set=model.remat_policy: write FIELD=VALUE"):
        train_speed.point_overrides("auto", ["model.remat_policy"])


def test_targets_are_ratios_of_records_from_one_run():
    def step(kind, seq, tps, mfu=0.3):
        return {
            "bench": "train_step",
            "attention": kind,
            "seq_len": seq,
            "tokens_per_s": tps,
            "mfu": mfu,
        }

    records = [
        step("local", 32768, 1000.0),
        step("infini", 32768, 960.0, mfu=0.45),  # 1.042 × local: within 1.05
        step("full", 32768, 100.0),
        {"bench": "eval_memory", "seq_len": 8192, "peak_rss_bytes": 100},
        {"bench": "eval_memory", "seq_len": 1 << 20, "peak_rss_bytes": 130},
        {"bench": "compile", "layers": 6, "compile_s": 2.0},
        {"bench": "compile", "layers": 24, "compile_s": 2.5},
        {"bench": "memory_path", "seq_len": 32768, "mfu": 0.1, "step_mfu": 0.45},
    ]
    records[-1].update(flops_share=0.04, time_share=0.04 * 0.45 / 0.1)
    for arm, ratio in (("gated_delta", 1.25), ("exact_delta", 2.0), ("infini", 1.0)):
        records.append(
            {"bench": "memory_options", "arm": arm, "seq_len": 2048, "step_times": [1, 1, 1]}
            | {"ratio_to_infini": (ratio, ratio - 0.1, ratio + 0.1)}
        )
    got = {t["target"]: (round(t["value"], 3), t["met"]) for t in targets(records)}
    assert got["memory path's share of the infini step time at 32768"] == (0.18, True)
    assert got["infini step time / local at 32768"] == (round(1000 / 960, 3), True)
    assert got["infini speed / full at 32768"] == (9.6, True)
    assert got["best train-step MFU vs measured matmul"] == (0.45, True)
    assert got["eval memory 1048576 / 8192 tokens"] == (1.3, False)
    assert got["compile 24 / 6 layers"] == (1.25, True)
    assert got["gated_delta step time / today's infini at 2048"] == (1.25, False)  # ≤ 1.10
    assert got["exact_delta step time / today's infini at 2048"] == (2.0, True)  # reported
    assert "infini step time / today's infini at 2048" not in got


def test_kinds_are_timed_in_interleaved_rounds_and_the_ratio_is_paired(monkeypatch):
    order = []
    slow = {"local": 1.0, "infini": 1.1}  # seconds per step before a round's slowdown

    def fake_prepare(config):
        kind = config.model.attention
        record = {"bench": "train_step", "attention": kind, "seq_len": config.data.seq_len}
        record.update(batch=1, layers=1, flops_per_token=1.0, memory_bytes=1, compile_s=1.0)

        def step():
            order.append(kind)
            return slow[kind] * (1 + (len(order) - 1) // 2)  # each round slower than the last

        return record, step

    monkeypatch.setattr(train_speed, "prepare", fake_prepare)
    records = train_speed.run(["local", "infini"], [512], peak=1.0, steps=3)
    assert order == ["local", "infini"] * 3
    infini, local = records[1], records[0]
    assert len(infini["step_times"]) == 3
    got = {t["target"]: t for t in targets(records)}["infini step time / local at 512"]
    assert round(got["value"], 6) == 1.1 and "3 rounds" in got["detail"]
    # Not interleaved (different numbers of steps): the ratio of the median speeds.
    local["step_times"] = local["step_times"][:2]
    got = {t["target"]: t for t in targets(records)}["infini step time / local at 512"]
    assert "rounds" not in got["detail"]


def test_memory_path_bench_runs_the_model_ops_and_counts_their_flops():
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np

    from infini_jax import ops
    from infini_jax.bench import memory_path
    from infini_jax.config import validate

    c = validate(train_speed.config_for("bench", "infini", 512, layers=2))
    x = memory_path.inputs(c, 2, 512)
    _, memories = memory_path.path_loss(c, x)
    # Layer 1's memory after the 2 segments equals the op's over the whole sequence.
    q = ops.merge_segments(jax.vmap(ops.ungroup_heads)(x["q"][:, 1]))  # [b, seq, heads, d]
    k, v = (ops.merge_segments(jnp.swapaxes(x[name][:, 1], 2, 3)) for name in ("k", "v"))
    _, want = ops.infini_attention(
        q, k, v, x["balance"][1], segment_len=c.segment_len, update=c.memory_update, gate=c.gate
    )
    np.testing.assert_allclose(memories.m[1], want.m, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(memories.z[1], want.z, rtol=1e-6)
    # FLOPs by hand: per token and layer, 2·d·d per query head read, per kv head written and per
    # kv head retrieved by the delta rule; training = 3 × forward.
    d, h, kv = c.head_dim, c.num_heads, c.num_kv_heads
    assert memory_path.memory_flops(c, 2, 512) == 3 * 2 * d * d * (h + 2 * kv) * 2 * 2 * 512
    linear = dataclasses.replace(c, memory_update="linear")
    assert memory_path.memory_flops(linear, 2, 512) == 3 * 2 * d * d * (h + kv) * 2 * 2 * 512


def test_memory_path_bench_compares_with_the_step_timed_in_the_same_run():
    import pytest

    from infini_jax.bench import memory_path
    from infini_jax.config import validate
    from infini_jax.model.flops import flops_per_token as per_token

    config = train_speed.config_for("bench", "infini", 512)
    step_s, peak = 2.0, 1e11
    flops_per_token = per_token(validate(config), 512)
    tokens = config.data.batch_size * 512
    step = {"bench": "train_step", "attention": "infini", "seq_len": 512, "step_s": step_s}
    step.update(flops_per_token=flops_per_token, mfu=flops_per_token * tokens / step_s / peak)
    records = memory_path.run([512], peak, steps=1, step_records=[step])
    assert [r["bench"] for r in records] == ["memory_path"]  # the step is not timed again
    r = records[0]
    # FLOPs share × step MFU / path MFU is the path's time over the step's.
    assert r["time_share"] == pytest.approx(r["path_s"] / step_s, rel=1e-9)
    assert r["flops_share"] == pytest.approx(r["flops"] / (flops_per_token * tokens))
