import dataclasses
import gc
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from infini_jax.config import load_config, validate  # noqa: E402
from tests import forkrun  # noqa: E402


def config_path(name: str) -> str:
    return os.path.join(ROOT, "configs", name)


def small_model(**overrides):
    """The tiny config's model with the paper's memory (base_config()'s, which `overrides` change
    option by option), shrunk further for fast tests."""
    cfg = validate(load_config(config_path("tiny.py:paper")))
    base = dict(
        vocab_size=64,
        num_layers=2,
        d_model=32,
        num_heads=4,
        num_kv_heads=2,
        mlp_dim=48,
        segment_len=8,
        head_dim=0,  # d_model / num_heads of these sizes
    )
    base.update(overrides)
    return dataclasses.replace(cfg, **base)


@pytest.fixture
def tiny_config():
    return load_config(config_path("tiny.py"))


def run_cli(module: str, *args: str, devices: int = 1, timeout: int = 300):
    """Runs `python -m module args` from the repository root (forked from a process that has
    imported jax: tests/forkrun.py); returns the CompletedProcess."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return forkrun.run(module, list(args), cwd=ROOT, env=env, timeout=timeout)


def pytest_sessionfinish():
    forkrun.stop()


# The files that take longest go to the two workers first (pytest-xdist hands out whole files
# in collection order), so the run does not end waiting on one long file.
LONGEST_FIRST = ("test_train.py", "test_slurm.py", "test_gcs.py", "test_tpu.py", "test_model.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = os.path.basename(str(item.fspath))
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside each file is kept


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
    """Each test file's compiled programs are dropped when it ends: a worker runs many files,
    and keeping every file's executables (GBs by the end of the suite) serves no later file."""
    yield
    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
    gc.collect()
