"""Hugging Face Llama ↔ infini_jax: the config fields and the weight layout, as pure functions.

The decoders are the same network (rotate-half RoPE, no q/k permutation, SwiGLU, RMSNorm), so
every weight maps one to one: a Hugging Face `Linear` weight `[out, in]` is our kernel
`[in, out]`, with the head axes split out. Layer `i`'s tensors are row `i` of our stacked
`layers` parameters. Reading and writing the files is `infini_jax.convert`.
"""

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from infini_jax.errors import ConvertError
from infini_jax.model.config import ModelConfig

ROPE_TYPES = ("default", "llama3")
SOURCE_DTYPES = ("float32", "bfloat16", "float16")
# Tensors some checkpoints carry that are not weights (recomputed from the config).
IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")


def model_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """`config.model` fields of the Llama described by a Hugging Face `config.json`.

    Anything this import would get silently wrong (another architecture, biases, a RoPE
    scaling we do not implement) is a `ConvertError` naming the field."""
    kind = hf.get("model_type")
    if kind != "llama":
        raise ConvertError(
            f"config.json: model_type={kind!r}; only Llama checkpoints (model_type 'llama') "
            "convert: other architectures differ in ways a weight copy cannot capture"
        )
    for field, wanted in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
        if hf.get(field, wanted) != wanted:
            raise ConvertError(
                f"config.json: {field}={hf[field]!r}; infini_jax's Llama has {field}={wanted!r}"
            )
    heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    fields = dict(
        vocab_size=hf["vocab_size"],
        num_layers=hf["num_hidden_layers"],
        d_model=hf["hidden_size"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=0 if head_dim * heads == hf["hidden_size"] else head_dim,
        mlp_dim=hf["intermediate_size"],
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        init_std=float(hf.get("initializer_range", 0.02)),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
    )
    fields.update(_rope_fields(hf))
    return fields


def _rope_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """RoPE fields from either layout: `rope_parameters` (transformers 5) or `rope_theta` +
    `rope_scaling` (older files)."""
    params = hf.get("rope_parameters")
    if params is None:
        params = dict(hf.get("rope_scaling") or {})
        params.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise ConvertError(
            f"config.json: rope_type={kind!r} is not supported (only {', '.join(ROPE_TYPES)}); "
            "importing it would silently change the model's positions"
        )
    out = dict(rope_theta=float(params["rope_theta"]), rope_scaling="none")
    if kind == "llama3":
        out.update(
            rope_scaling="llama3",
            rope_scaling_factor=float(params["factor"]),
            rope_low_freq_factor=float(params["low_freq_factor"]),
            rope_high_freq_factor=float(params["high_freq_factor"]),
            rope_original_len=int(params["original_max_position_embeddings"]),
        )
    return out


def hf_config(
    model_cfg: ModelConfig, max_positions: int, dtype: str, special_ids: dict[str, int | None]
) -> dict[str, Any]:
    """The `config.json` of `LlamaForCausalLM` for `model_cfg` (older `rope_theta` +
    `rope_scaling` layout, which transformers 4 and 5 both read)."""
    c = model_cfg
    rope_scaling = None
    if c.rope_scaling == "llama3":
        rope_scaling = dict(
            rope_type="llama3",
            factor=c.rope_scaling_factor,
            low_freq_factor=c.rope_low_freq_factor,
            high_freq_factor=c.rope_high_freq_factor,
            original_max_position_embeddings=c.rope_original_len,
        )
    return dict(
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        vocab_size=c.vocab_size,
        hidden_size=c.d_model,
        intermediate_size=c.mlp_dim,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads,
        head_dim=c.head_dim,
        hidden_act="silu",
        max_position_embeddings=max_positions,
        initializer_range=c.init_std,
        rms_norm_eps=c.norm_eps,
        tie_word_embeddings=c.tie_embeddings,
        rope_theta=c.rope_theta,
        rope_scaling=rope_scaling,
        attention_bias=False,
        mlp_bias=False,
        torch_dtype=dtype,
        bos_token_id=special_ids.get("bos"),
        eos_token_id=special_ids.get("eos"),
        pad_token_id=special_ids.get("pad"),
    )


class Weight:
    """One Hugging Face tensor ↔ one of our parameters (a row of it, for per-layer tensors).

    `path`: our parameter's keys; `to_ours(w, c)` / `to_hf(x, c)` reshape between the layouts.
    """

    def __init__(self, path: tuple[str, ...], to_ours: Callable, to_hf: Callable):
        self.path, self.to_ours, self.to_hf = path, to_ours, to_hf


def _linear(shape: Callable[[ModelConfig], tuple[int, ...]], split_in: bool = False):
    """A Linear weight `[out, in]` ↔ our kernel: `in` first (`split_in`: the output
    projection, whose `in` is heads × head_dim) and the head axes split out."""

    def to_ours(w, c):
        return w.T.reshape(shape(c))

    def to_hf(x, c):
        rows = int(np.prod(x.shape[:2])) if split_in else x.shape[0]
        return x.reshape(rows, -1).T

    return to_ours, to_hf


def _same(w, c):
    return w


_LAYER = {
    "self_attn.q_proj.weight": (
        ("attention", "query", "kernel"),
        *_linear(lambda c: (c.d_model, c.num_heads, c.head_dim)),
    ),
    "self_attn.k_proj.weight": (
        ("attention", "key", "kernel"),
        *_linear(lambda c: (c.d_model, c.num_kv_heads, c.head_dim)),
    ),
    "self_attn.v_proj.weight": (
        ("attention", "value", "kernel"),
        *_linear(lambda c: (c.d_model, c.num_kv_heads, c.head_dim)),
    ),
    "self_attn.o_proj.weight": (
        ("attention", "out", "kernel"),
        *_linear(lambda c: (c.num_heads, c.head_dim, c.d_model), split_in=True),
    ),
    "mlp.gate_proj.weight": (("mlp", "gate", "kernel"), *_linear(lambda c: (c.d_model, -1))),
    "mlp.up_proj.weight": (("mlp", "up", "kernel"), *_linear(lambda c: (c.d_model, -1))),
    "mlp.down_proj.weight": (("mlp", "down", "kernel"), *_linear(lambda c: (c.mlp_dim, -1))),
    "input_layernorm.weight": (("attention_norm", "scale"), _same, _same),
    "post_attention_layernorm.weight": (("mlp_norm", "scale"), _same, _same),
}
# Our attention's projections that Llama has; its other parameters (the balance factors, the
# memory's write gates) are Infini-attention's own, freshly initialised on import.
ATTENTION_PROJECTIONS = frozenset(w[0][1] for w in _LAYER.values() if w[0][0] == "attention")


def weights(model_cfg: ModelConfig) -> dict[str, tuple[Weight, int | None]]:
    """Every Hugging Face tensor name of `model_cfg`'s Llama → (its `Weight`, layer or None)."""
    out = {
        "model.embed_tokens.weight": (Weight(("embed", "embedding"), _same, _same), None),
        "model.norm.weight": (Weight(("final_norm", "scale"), _same, _same), None),
    }
    if not model_cfg.tie_embeddings:
        to_ours, to_hf = _linear(lambda c: (c.d_model, c.vocab_size))
        out["lm_head.weight"] = (Weight(("unembed", "kernel"), to_ours, to_hf), None)
    for i in range(model_cfg.num_layers):
        for name, (path, to_ours, to_hf) in _LAYER.items():
            out[f"model.layers.{i}.{name}"] = (Weight(("layers", *path), to_ours, to_hf), i)
    return out


def get(tree: dict, path: tuple[str, ...]) -> np.ndarray:
    for key in path:
        tree = tree[key]
    return tree
