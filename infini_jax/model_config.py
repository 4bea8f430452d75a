"""The model's hyper-parameters as a frozen, hashable dataclass (built from `config.model`).

The meaning of every field is documented next to it in `configs/*.py` and in docs/config.md.
"""

import dataclasses

import jax.numpy as jnp
import ml_collections

ATTENTION_KINDS = ("full", "local", "infini")
REMAT_POLICIES = ("none", "nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    num_layers: int
    d_model: int
    num_heads: int
    num_kv_heads: int
    mlp_dim: int
    tie_embeddings: bool
    init_std: float
    norm_eps: float
    rope_theta: float
    attention: str
    segment_len: int
    memory_update: str
    gate: str
    balance_init: float
    empty_memory: str
    bptt_segments: int
    remat_policy: str
    remat_layers: bool
    dtype: str

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @classmethod
    def from_config(cls, model: ml_collections.ConfigDict) -> "ModelConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        values = model.to_dict()
        unknown = sorted(set(values) - fields)
        missing = sorted(fields - set(values))
        if unknown or missing:
            raise ValueError(f"config.model: unknown fields {unknown}, missing fields {missing}")
        return cls(**values)
