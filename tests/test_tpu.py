"""The train step compiled by the TPU compiler (libtpu, compile-only devices) on this CPU host:
slice names, the splash kernel really in the compiled step (GQA, packed documents, padding; an
fsdp × tensor mesh; two slices), splash blocks on v5e / v5p / v6e, the seed config on v5p-8,
`plan --search`, and one-line errors. Without libtpu these tests skip (fail under CI=true)."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from infini_jax import ops, sections
from infini_jax.config import load_config
from infini_jax.errors import ConfigError
from infini_jax.ops import kernels
from infini_jax.parallel import sharding, tpu
from infini_jax.planning import plan
from infini_jax.planning import search as plan_search
from tests import forkrun
from tests.conftest import ROOT, config_path

if importlib.util.find_spec("libtpu") is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError('CI needs libtpu for the TPU-compile tests: pip install -e ".[test]"')
    pytest.skip(f"no libtpu (the TPU compiler): {tpu.INSTALL}", allow_module_level=True)

jax.config.update("jax_platforms", "cpu")


def _tiny(**overrides):
    """The tiny config with 128-token segments (splash blocks need multiples of 128)."""
    c = load_config(config_path("tiny.py"))
    c.model.segment_len, c.data.seq_len, c.data.batch_size = 128, 512, 8
    for key, value in overrides.items():
        section, field = key.split(".")
        c[section][field] = value
    return c


# The tiny config on the command line, with 128-token segments.
TINY_ARGS = (
    "--config=configs/tiny.py",
    "--config.model.segment_len=128",
    "--config.data.seq_len=512",
)


def _cli(*args, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return forkrun.run("infini_jax.plan", list(args), cwd=ROOT, env=env, timeout=timeout)


def test_cloud_tpu_names_map_to_the_compilers_topologies_and_devices():
    want = {
        "v4-8": ("v4:2x2x1", 4),
        "v5e-8": ("v5e:2x4", 8),
        "v5e-256": ("v5e:16x16", 256),
        "v5p-8": ("v5p:2x2x1", 4),
        "v5p-128": ("v5p:4x4x4", 64),
        "v6e-16": ("v6e:4x4", 16),
        "v6e-256": ("v6e:16x16", 256),
        "v5litepod-16": ("v5e:4x4", 16),  # the gcloud accelerator type of v5e
        "v5p:2x2x1": ("v5p:2x2x1", 4),  # a topology string of the table
    }
    for name, (topology, chips) in want.items():
        s = tpu.parse_slice(name)
        assert (s.topology, s.chips) == (topology, chips), name
    # One device per chip, as the runtime shows them (v4 with megacore; v5e-1 on a 1-chip host).
    for name in ("v4-8", "v5e-1", "v5e-8", "v5p-8", "v6e-16"):
        s = tpu.parse_slice(name)
        devices = tpu.compile_devices(s)
        assert len(devices) == s.chips and devices[0].platform == "tpu", name
    two = tpu.compile_devices(tpu.parse_slice("v5p-8"), num_slices=2)
    assert sorted({d.slice_index for d in two}) == [0, 1] and len(two) == 8
    with pytest.raises(ConfigError, match=r"'v9-8' is not a known TPU slice.*v5p-\{8,16"):
        tpu.parse_slice("v9-8")


def test_two_slices_put_the_data_axis_across_them():
    c = _tiny()
    c.mesh.slices, c.mesh.fsdp, c.mesh.data = 2, 2, -1
    devices = tpu.compile_devices(tpu.parse_slice("v5p-8"), num_slices=2)
    mesh = sharding.make_mesh(sections.MeshConfig.from_config(c.mesh), devices)
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
    # The first half of the data axis is slice 0, the second slice 1: only the data-parallel
    # reduction crosses the data-center network.
    grid = mesh.devices
    assert {d.slice_index for d in grid[:2].flat} == {0}
    assert {d.slice_index for d in grid[2:].flat} == {1}


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, axes, slices",
    [
        ("v5e-4", {"data": 1, "fsdp": 2, "tensor": 2}, 1),  # fsdp × tensor: heads split too
        ("v5p-8", {"data": 4, "fsdp": 1, "tensor": 1}, 2),  # two slices over DCN
        ("v6e-4", {"data": 1, "fsdp": 4, "tensor": 1}, 1),
    ],
)
def test_the_compiled_train_step_holds_the_mosaic_splash_kernel(name, axes, slices):
    # The tiny model has 4 query heads over 2 kv heads (GQA); the step's batch carries
    # segment ids and a padding mask, which the kernel gets as one id array.
    target = plan.tpu_target(name, slices)
    p = plan.plan(_tiny(), axes, target)
    assert (p["compiler"], p["kernel"], p["slices"]) == ("tpu", "splash", slices)
    assert p["fused_attention_calls"] > 0
    b = p["bytes_per_device"]
    assert b["xla_arguments"] <= b["peak"] < p["memory_per_device"][target.name]
    assert p["fits"] == {target.name: True}


@pytest.mark.slow
def test_without_the_kernel_the_step_has_no_mosaic_call():
    # The count measures the kernel: the same step with the XLA attention has none.
    axes = {"data": 1, "fsdp": 1, "tensor": 1}
    xla = plan.plan(_tiny(**{"model.attention_impl": "xla"}), axes, plan.tpu_target("v5e-1"))
    assert (xla["compiler"], xla["kernel"], xla["fused_attention_calls"]) == ("tpu", "xla", 0)


def test_the_kernel_follows_the_mesh_not_the_host():
    mesh = jax.make_mesh((1, 2, 2), sections.AXES, devices=plan.tpu_target("v5e-4").devices)
    assert kernels.target_platform() == "cpu" and kernels.resolve("auto", 1024)[0] == "xla"
    with jax.set_mesh(mesh):
        assert kernels.target_platform() == "tpu"
        assert kernels.resolve("auto", 1024) == ("splash", "auto on tpu")
        assert not kernels._interpret("splash") and kernels._interpret("pallas_gpu")


def test_splash_blocks_fit_the_window():
    assert kernels.fit_block(512, 384) == 384
    assert kernels.fit_block(512, 1024) == 512
    assert kernels.fit_block(512, 640) == 128  # 512, 384 and 256 do not divide 640
    assert kernels.splash_block_sizes((512, 512, 256), 8192) == (512, 512, 256)
    assert kernels.splash_block_sizes((256, 1024, 512), 768) == (256, 768, 384)


@pytest.mark.parametrize("name", ["v5e-4", "v5p-8", "v6e-4"])
@pytest.mark.parametrize("window, blocks", [(384, (512, 512, 512)), (1024, (256, 512, 256))])
def test_splash_blocks_lower_for_each_tpu_generation(name, window, blocks):
    devices = tpu.compile_devices(tpu.parse_slice(name))[:1]
    mesh = jax.make_mesh((1, 1, 1), sections.AXES, devices=devices)
    spec = jax.sharding.NamedSharding(mesh, jax.P())
    q = jax.ShapeDtypeStruct((2, window, 4, 128), jnp.bfloat16, sharding=spec)
    kv = jax.ShapeDtypeStruct((2, window, 2, 128), jnp.bfloat16, sharding=spec)
    ids = jax.ShapeDtypeStruct((2, window), jnp.int32, sharding=spec)

    def loss(q, k, v, ids):
        out = ops.local_attention(q, k, v, segment_ids=ids, impl="splash", blocks=blocks)
        return jnp.sum(out.astype(jnp.float32))

    with jax.set_mesh(mesh):
        compiled = jax.jit(jax.grad(loss, (0, 1, 2))).lower(q, kv, kv, ids).compile()
    assert compiled.as_text().count(plan.MOSAIC) >= 2  # the forward and the backward kernels


@pytest.mark.slow
def test_the_seed_config_compiles_for_v5p_8(tmp_path):
    r = _cli(
        "--config=configs/llama_300m_infini.py", "--topology=v5p-8", f"--json={tmp_path}/p.json"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    p = json.loads((tmp_path / "p.json").read_text())
    assert (p["topology"], p["chips"], p["compiler"], p["kernel"]) == ("v5p-8", 4, "tpu", "splash")
    assert p["fused_attention_calls"] > 0 and p["parameters"] == 302_015_584
    b = p["bytes_per_device"]
    # The state (f32 parameters + AdamW moments, replicated over data=4) is donated in place.
    assert b["xla_aliased"] >= b["parameters"] + b["optimizer_state"]
    assert b["xla_arguments"] <= b["peak"] < 95 * 2**30
    assert "| v5p-8 | 95 | yes" in r.stdout and "Mosaic kernel calls" in r.stdout
    assert r.stderr.strip() == ""  # libtpu kept quiet


def _tiny_on_v5e(tmp_path, *args):
    """`plan` of the tiny config on v5e-4 with `args`: (the process, its JSON)."""
    r = _cli(*TINY_ARGS, "--topology=v5e-4", *args, f"--json={tmp_path}/p.json")
    assert r.returncode == 0, r.stderr[-3000:]
    return r, json.loads((tmp_path / "p.json").read_text())


@pytest.mark.slow
def test_a_step_that_runs_out_of_hbm_is_a_no_not_a_traceback(tmp_path):
    args = ("--config.data.batch_size=65536", "--config.model.remat_policy=none")
    r, p = _tiny_on_v5e(tmp_path, *args)
    assert p["bytes_per_device"]["peak"] is None and "HBM" in p["out_of_memory"]
    assert p["fits"] == {"v5e-4": False}
    assert "| v5e-4 | 16 | no (out of memory) |" in r.stdout


@pytest.mark.slow
def test_bad_targets_are_one_line(tmp_path):
    r = _cli("--topology=v9-8")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "'v9-8' is not a known TPU slice; use one of v4-{8," in r.stderr
    r = _cli("--config=configs/tiny.py", "--topology=v5p-8", "--mesh=fsdp:3")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "must equal the 4 devices of one v5p-8 slice" in r.stderr
    r = _cli(*TINY_ARGS, "--topology=v5e-4", "--mesh=tensor:4")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    # The first parameter whose kv-head axis (2 heads) cannot split four ways.
    kv_axis = r"/kernel: axis 2 of \(2, 128, 2(, 32)?\) does not split over tensor=4"
    assert re.search(kv_axis, r.stderr), r.stderr
    # Without libtpu: hide it from the import system, then run the real entry point.
    hide = (
        "import importlib.util, sys\n"
        "find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'libtpu' else find(n, *a)\n"
        "from infini_jax.plan import main\n"
        "main(['plan', '--config=configs/tiny.py', '--topology=v5p-8'])\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    r = subprocess.run(
        [sys.executable, "-c", hide], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert 'needs the TPU compiler (libtpu): pip install -e ".[tpu]"' in r.stderr


def test_search_prunes_and_picks_the_most_tokens_then_the_least_recomputation(monkeypatch):
    # A fake compiler: peak = batch/shard × per-sequence activations of the policy / micro.
    activation = {"none": 40, "dots_saveable": 20, "dots_with_no_batch_dims_saveable": 15}
    activation |= {"attention_out": 9, "nothing_saveable": 8}
    compiled = []

    def fake_plan(c, axes, target):
        per_shard = c.data.batch_size // (axes["data"] * axes["fsdp"])
        act = activation[c.model.remat_policy] / (4 if c.model.remat_layers else 1)
        peak = 10 + per_shard * act / c.optimizer.micro_batches
        compiled.append((c.model.remat_policy, c.model.remat_layers, c.optimizer.micro_batches))
        return {
            "tokens_per_step": c.data.batch_size * c.data.seq_len,
            "devices": 1,
            "bytes_per_device": {"peak": peak},
            "out_of_memory": None,
            "compile_s": 0.0,
            "fits": {"fake": peak <= 0.9 * 100},
            "kernel": "xla",
            "fused_attention_calls": 0,
            "mesh": {"data": 1, "fsdp": 1, "tensor": 1},
        }

    class Target:
        name, compiler, slices = "fake", "tpu", 1

    monkeypatch.setattr(plan_search, "plan", fake_plan)
    axes = {"data": 1, "fsdp": 1, "tensor": 1}
    result = plan_search.search(_tiny(), axes, Target(), [1, 2, 4, 8])
    records = result["records"]
    rows = [(r["remat_policy"], r["micro_batches"], r["batch_per_shard"]) for r in records]
    # none: 50 at 1; 90 at 2 fits; 170 at 4, 90 with 2 micro-batches; 8 needs 4 (90).
    assert rows[:6] == [
        ("none", 1, 1),
        ("none", 1, 2),
        ("none", 1, 4),
        ("none", 2, 4),
        ("none", 1, 8),
        ("none", 2, 8),
    ]
    # attention_out fits batch 8 without micro-batches (10 + 8 × 9 = 82): the search ends
    # there, before the costlier nothing_saveable.
    assert rows[-1] == ("attention_out", 1, 8)
    assert all(p != "nothing_saveable" for p, *_ in compiled)
    best = result["best"]
    assert best["batch_per_shard"] == 8
    # At batch 8, none (4 micro-batches) and dots_saveable (2) recompute no matmul: the fewer
    # micro-batches win.
    assert (best["remat_policy"], best["micro_batches"]) == ("dots_saveable", 2)
    assert "**best**" in plan_search.format_search(result)


@pytest.mark.slow
def test_search_on_the_tpu_compiler_writes_its_table(tmp_path):
    r, s = _tiny_on_v5e(tmp_path, "--search", "--search_batches=1,2")
    # The tiny model fits at once: the cheapest policy at the largest batch ends the search.
    got = [(x["remat_policy"], x["micro_batches"], x["batch_per_shard"]) for x in s["records"]]
    assert got == [("none", 1, 1), ("none", 1, 2)]
    assert s["best"]["batch_per_shard"] == 2 and s["best"]["recomputed_flops_per_device"] == 0
    assert s["records"][0]["fused_attention_calls"] > 0 and s["compiler"] == "tpu"
    assert "--config.model.remat_policy=none" in r.stdout


def test_recomputed_flops_follow_the_policies():
    from infini_jax.config import validate
    from infini_jax.model.flops import flops_per_token

    cfg = validate(_tiny())
    forward = flops_per_token(cfg, 512) / 3
    got = {
        (p, layers): plan_search.recomputed_flops_per_token(cfg, 512, p, layers)
        for p, layers, _ in plan_search.POLICIES
    }
    assert got[("none", False)] == got[("dots_saveable", False)] == 0
    assert 0 < got[("dots_with_no_batch_dims_saveable", False)] < forward
    assert got[("nothing_saveable", False)] == pytest.approx(forward)
    assert got[("nothing_saveable", True)] == pytest.approx(2 * forward)
