import dataclasses
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from infini_jax.config import load_config, validate  # noqa: E402


def config_path(name: str) -> str:
    return os.path.join(ROOT, "configs", name)


def small_model(**overrides):
    """The tiny config's model, shrunk further for fast tests."""
    cfg = validate(load_config(config_path("tiny.py")))
    base = dict(
        vocab_size=64,
        num_layers=2,
        d_model=32,
        num_heads=4,
        num_kv_heads=2,
        mlp_dim=48,
        segment_len=8,
    )
    base.update(overrides)
    return dataclasses.replace(cfg, **base)


@pytest.fixture
def tiny_config():
    return load_config(config_path("tiny.py"))
