"""The model's hyper-parameters as a frozen, hashable dataclass (built from `config.model`).

The fields, their defaults and their meaning are declared once, in `base_config().model`
(`infini_jax/defaults.py`, and docs/config.md); their checks live here.
"""

import jax
import jax.numpy as jnp

from infini_jax.defaults import base_config
from infini_jax.errors import Section, check, check_choice, check_positive_ints, is_int, section
from infini_jax.ops import (
    EMPTY_MEMORY_MODES,
    FEATURES,
    GATES,
    ROPE_SCALINGS,
    UPDATE_RULES,
    InfiniOptions,
    Rope,
    kernels,
)

ATTENTION_KINDS = ("full", "local", "infini")
DECAYS = ("none", "learned", "data")
# What a rematerialised function keeps from its forward pass (jax.checkpoint policies).
# "attention_out": only each layer's attention output (named "attention_out" in layers.py).
REMAT_POLICIES = {
    "none": None,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "attention_out": jax.checkpoint_policies.save_only_these_names("attention_out"),
}
DTYPES = ("float32", "bfloat16")


class _ModelMethods(Section):
    PREFIX = "model"

    def __post_init__(self):
        # head_dim = 0 means d_model / num_heads (when that divides; else `check` says so).
        if self.head_dim == 0 and is_int(self.num_heads) and self.num_heads > 0:
            if is_int(self.d_model) and self.d_model % self.num_heads == 0:
                object.__setattr__(self, "head_dim", self.d_model // self.num_heads)

    @property
    def rope(self) -> Rope:
        return Rope(
            self.rope_theta,
            self.rope_scaling,
            self.rope_scaling_factor,
            self.rope_low_freq_factor,
            self.rope_high_freq_factor,
            self.rope_original_len,
        )

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def infini_options(self) -> InfiniOptions:
        """The options of the Infini-attention op, carried together."""
        return InfiniOptions(
            self.memory_update,
            self.gate,
            self.empty_memory,
            self.rope,
            splash_blocks=self.splash_blocks,
            features=self.memory_features,
            delta_chunk=self.delta_chunk,
        )

    @property
    def splash_blocks(self) -> tuple[int, int, int]:
        """The splash kernel's (q, kv, kv_compute) blocks, before fitting to the window."""
        return (self.splash_block_q, self.splash_block_kv, self.splash_block_kv_compute)

    def window_len(self, seq_len: int) -> int:
        """Tokens per scan step: the whole sequence for "full", else `segment_len`."""
        if self.attention == "full":
            return seq_len
        if seq_len % self.segment_len:
            raise ValueError(
                f"sequence length {seq_len} is not a multiple of model.segment_len="
                f"{self.segment_len}"
            )
        return self.segment_len

    def check(self) -> None:
        shape = ("vocab_size", "num_layers", "d_model", "num_heads", "num_kv_heads", "mlp_dim")
        check_positive_ints({k: getattr(self, k) for k in (*shape, "segment_len")}, "model.")
        check(
            self.head_dim != 0,
            f"config.model.num_heads={self.num_heads} does not divide config.model.d_model="
            f"{self.d_model}; choose them so that d_model / num_heads is an integer, or set "
            "config.model.head_dim",
        )
        check(
            is_int(self.head_dim) and self.head_dim > 0 and self.head_dim % 2 == 0,
            f"config.model: head_dim = {self.head_dim!r} must be a positive even integer (RoPE)",
        )
        check(
            self.num_heads % self.num_kv_heads == 0,
            f"config.model.num_kv_heads={self.num_kv_heads} does not divide config.model."
            f"num_heads={self.num_heads} (grouped-query attention needs whole groups)",
        )
        check_choice(self.attention, ATTENTION_KINDS, "model.attention")
        check_choice(self.attention_impl, kernels.IMPLS, "model.attention_impl")
        if self.attention_impl == "cudnn":
            check(
                self.dtype == "bfloat16" and self.head_dim % 8 == 0 and self.head_dim <= 256,
                "config.model.attention_impl='cudnn' needs model.dtype='bfloat16' and a head_dim "
                f"that is a multiple of 8 and <= 256 (here {self.dtype}, {self.head_dim}); "
                "use 'pallas_gpu' or 'auto'",
            )
        for name in ("splash_block_q", "splash_block_kv", "splash_block_kv_compute"):
            value = getattr(self, name)
            check(
                is_int(value) and value > 0 and value % kernels.BLOCK == 0,
                f"config.model.{name}={value!r} must be a positive multiple of {kernels.BLOCK} "
                "(TPU lanes); it is fitted to the window (docs/config.md)",
            )
        check_choice(self.memory_update, UPDATE_RULES, "model.memory_update")
        check_choice(self.gate, GATES, "model.gate")
        check_choice(self.memory_features, FEATURES, "model.memory_features")
        check_choice(self.decay, DECAYS, "model.decay")
        check(  # a unit key repeated r times in a segment is written with gain 1 − r
            not (self.memory_features == "l2" and self.memory_update == "delta"),
            "config.model.memory_features='l2' with memory_update='delta' diverges (the one-step "
            "delta rule has no normaliser to bound repeated unit keys); use "
            "memory_update='exact_delta' (or 'linear')",
        )
        check(  # the inverse in matmuls keeps float32 accuracy up to 64 (ops/delta_rule.py)
            is_int(self.delta_chunk) and 0 < self.delta_chunk <= 64,
            f"config.model.delta_chunk={self.delta_chunk!r} must be an integer in 1..64",
        )
        check(
            self.memory_update != "exact_delta"
            or self.segment_len % min(self.delta_chunk, self.segment_len) == 0,
            f"config.model.delta_chunk={self.delta_chunk} does not divide config.model."
            f"segment_len={self.segment_len}; choose a divisor (32 is the default)",
        )
        for name in ("write_strength_init", "decay_init"):
            value = getattr(self, name)
            check(
                isinstance(value, int | float) and 0 < value < 1,
                f"config.model.{name}={value!r} must be in (0, 1) (exclusive)",
            )
        check(  # hard_sigmoid(b) = clip(0.2·b + 0.5, 0, 1) is flat past |b| = 2.5: b never moves
            self.attention != "infini"
            or self.gate != "hard_sigmoid"
            or abs(self.balance_init) < 2.5,
            f"config.model.balance_init={self.balance_init!r} is where the hard-sigmoid gate is "
            "clipped (|b| >= 2.5): its gradient is 0 and the gate would never learn; use "
            "|b| < 2.5 or model.gate='sigmoid'",
        )
        check_choice(self.empty_memory, EMPTY_MEMORY_MODES, "model.empty_memory")
        check_choice(self.remat_policy, tuple(REMAT_POLICIES), "model.remat_policy")
        policies = tuple(p for p in REMAT_POLICIES if p != "none")
        check_choice(self.layer_remat_policy, policies, "model.layer_remat_policy")
        check_choice(self.dtype, DTYPES, "model.dtype")
        check_choice(self.rope_scaling, ROPE_SCALINGS, "model.rope_scaling")
        names = ("init_std", "norm_eps", "rope_theta", "rope_scaling_factor")
        names += ("rope_low_freq_factor", "rope_high_freq_factor", "rope_original_len")
        check(
            self.rope_high_freq_factor > self.rope_low_freq_factor,
            f"config.model.rope_high_freq_factor={self.rope_high_freq_factor} must be > "
            f"rope_low_freq_factor={self.rope_low_freq_factor}",
        )
        for name in names:
            value = getattr(self, name)
            check(value > 0, f"config.model.{name}={value!r} must be > 0")
        check(
            is_int(self.bptt_segments) and self.bptt_segments >= 0,
            f"config.model.bptt_segments={self.bptt_segments!r} must be 0 (full) or a positive k",
        )


ModelConfig = section("ModelConfig", _ModelMethods, base_config().model)
