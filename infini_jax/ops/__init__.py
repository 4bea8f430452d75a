"""Pure functions: the math of Infini-attention, with no parameters and no Flax."""

from infini_jax.ops import kernels
from infini_jax.ops.decode import KVCache, infini_decode, init_cache, local_decode
from infini_jax.ops.delta_rule import (
    FEATURES,
    decay_from_logits,
    decay_logit,
    exact_delta_write,
    features,
    unit_lower_inverse,
)
from infini_jax.ops.infini import infini_attention, infini_segment, merge_segments, split_segments
from infini_jax.ops.local import (
    attend,
    group_heads,
    grouped_attention,
    kv_heads_first,
    local_attention,
    ungroup_heads,
)
from infini_jax.ops.memory import (
    EMPTY_MEMORY_MODES,
    GATES,
    UPDATE_RULES,
    InfiniOptions,
    Memory,
    gate_value,
    init_memory,
    memory_read,
    memory_stats,
    memory_write,
    mix,
    sigma,
)
from infini_jax.ops.rope import ROPE_SCALINGS, Rope, apply_rope, rope_angles

__all__ = [
    "EMPTY_MEMORY_MODES",
    "FEATURES",
    "GATES",
    "InfiniOptions",
    "KVCache",
    "ROPE_SCALINGS",
    "Rope",
    "UPDATE_RULES",
    "Memory",
    "apply_rope",
    "attend",
    "decay_from_logits",
    "decay_logit",
    "exact_delta_write",
    "features",
    "gate_value",
    "group_heads",
    "grouped_attention",
    "infini_attention",
    "infini_decode",
    "init_cache",
    "kernels",
    "kv_heads_first",
    "infini_segment",
    "init_memory",
    "local_attention",
    "local_decode",
    "memory_read",
    "memory_stats",
    "memory_write",
    "merge_segments",
    "mix",
    "rope_angles",
    "sigma",
    "split_segments",
    "ungroup_heads",
    "unit_lower_inverse",
]
