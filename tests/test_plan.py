"""`infini_jax.plan` against the real thing: parameter count, sharded bytes, compiled memory."""

import json
import os
import subprocess
import sys

import pytest

from infini_jax.config import load_config
from infini_jax.planning.plan import param_group, parse_mesh
from tests.conftest import ROOT, config_path

# Runs with 8 fake devices: builds the real sharded state the way training does and measures it.
MEASURE = r"""
import json, sys
import jax
from infini_jax import model, sections
from infini_jax.training import optim
from infini_jax.parallel import sharding
from infini_jax.config import load_config, validate
from infini_jax.training.step import init_state

config = load_config("configs/tiny.py")
config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
config.data.batch_size = 8
cfg = validate(config)
mesh = sharding.make_mesh(sections.MeshConfig.from_config(config.mesh))
opt = sections.OptimizerConfig.from_config(config.optimizer)
tx, _ = optim.make_optimizer(opt, config.total_steps)
abstract = jax.eval_shape(lambda: init_state(cfg, tx, config.seed))
params_sh = sharding.param_shardings(model.param_logical_axes(cfg), mesh, config.sharding_rules)
state_sh = sharding.tree_shardings(abstract, params_sh, mesh)
state = jax.jit(lambda: init_state(cfg, tx, config.seed), out_shardings=state_sh)()
dev = jax.devices()[0]
def on_device0(tree):
    return sum(s.data.nbytes for leaf in jax.tree.leaves(tree)
               for s in leaf.addressable_shards if s.device == dev)
json.dump({"parameters": model.count_params(state.params),
           "param_bytes": on_device0(state.params),
           "opt_bytes": on_device0(state.opt_state),
           "state_bytes": on_device0(state)}, sys.stdout)
"""


def run(args, **env):
    e = dict(os.environ, JAX_PLATFORMS="cpu", **env)
    r = subprocess.run(args, cwd=ROOT, env=e, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.mark.slow
def test_plan_matches_the_real_state_and_compiled_step(tmp_path):
    out = run(
        [
            sys.executable,
            "-m",
            "infini_jax.plan",
            "--config=configs/tiny.py",
            "--mesh=data:2,fsdp:2,tensor:2",
            "--config.data.batch_size=8",
            f"--json={tmp_path}/plan.json",
        ]
    )
    plan = json.loads((tmp_path / "plan.json").read_text())
    real = json.loads(
        run([sys.executable, "-c", MEASURE], XLA_FLAGS="--xla_force_host_platform_device_count=8")
    )
    # The paper's model has 524,936; a write strength and a data-dependent decay add per layer
    # a projection each, d_model × kv_heads + kv_heads (the gated delta memory).
    m = load_config(config_path("tiny.py")).model
    gates = 2 * (m.write_strength + (m.decay == "data")) * (128 * 2 + 2) + 2 * 2 * (
        m.decay == "learned"
    )
    assert plan["parameters"] == real["parameters"] == 524_936 + gates
    assert plan["parameters_by_group"].get("memory write gates", 0) == gates
    assert sum(plan["parameters_by_group"].values()) == real["parameters"]
    assert plan["parameters_by_group"]["balance factors"] == 2 * 4  # layers × heads
    b = plan["bytes_per_device"]
    assert b["parameters"] == real["param_bytes"]
    assert b["optimizer_state"] == real["opt_bytes"]
    # Sharding really divides the state: fsdp × tensor = 4 ways for the large matrices.
    assert real["param_bytes"] < 0.4 * 4 * real["parameters"]
    # XLA's arguments are this device's state plus its share of the batch (4 int32/bool
    # arrays of [8 / (data×fsdp), 256]).
    batch_bytes = 2 * 256 * (4 + 4 + 4 + 1)
    assert b["xla_arguments"] == real["state_bytes"] + batch_bytes
    assert b["xla_temporaries"] > 0 and b["peak"] >= b["xla_arguments"]
    assert plan["fits"]["h100"] and "| h100 | 80 | yes" in out
    assert f"{524_936 + gates:,} parameters; mesh data=2, fsdp=2, tensor=2 (8 devices)" in out


def test_plan_argument_parsing():
    assert parse_mesh("data:2,fsdp:4") == {"data": 2, "fsdp": 4, "tensor": 1}
    with pytest.raises(ValueError, match="--mesh entry 'pipe:2'"):
        parse_mesh("pipe:2")
    assert param_group(("layers", "attention", "balance")) == "balance factors"
    assert param_group(("layers", "mlp_norm", "scale")) == "norms"
    assert param_group(("layers", "attention", "decay_bias")) == "memory write gates"
    assert param_group(("layers", "attention", "write_strength", "bias")) == "memory write gates"
    assert param_group(("unembed", "kernel")) == "output projection"


@pytest.mark.slow
def test_plan_of_the_seed_config_with_default_flags_fills_the_mesh_the_batch_splits_over():
    out = run([sys.executable, "-m", "infini_jax.plan", "--config=configs/llama_300m_infini.py"])
    assert "302,015,584 parameters; mesh data=4, fsdp=1, tensor=1 (4 devices)" in out
    assert "| h100 | 80 | yes" in out
