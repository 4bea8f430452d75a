"""Model FLOPs per token of a training step (forward + backward), per attention kind.

Convention (PaLM, appendix B): matmul FLOPs only, 2 per multiply-add, backward = 2 × forward.
- weights: 6 · (parameters − input embedding) — every weight matrix is one matmul per token;
- attention scores and values: 12 · layers · heads · head_dim · window, where window is the
  sequence length for "full" and `segment_len` for "local" / "infini" (the whole window is
  counted, as PaLM does, not the causal half);
- infini memory: read σ(q)M and σ(q)z per query head, write σ(k)ᵀv (and the delta rule's
  retrieval σ(k)M) per kv head: 6 · layers · head_dim² · (heads + kv_heads · (2 if delta else 1));
  the exact delta rule adds, per kv head and token, its chunk's Gram row and the two products
  with the system's inverse (3 · c · head_dim multiply-adds) and that inverse's share
  (2 · (⌈log₂ c⌉ − 1) · c), c = min(delta_chunk, segment_len).
  The write gates' projections are weights (in the first term).
"""

import math

from infini_jax.model.config import ModelConfig


def param_count(model_cfg: ModelConfig) -> int:
    """Parameters of the model, from its shape alone (equals `model.count_params`)."""
    d, h, k, hd = model_cfg.d_model, model_cfg.num_heads, model_cfg.num_kv_heads, model_cfg.head_dim
    per_layer = d * hd * (2 * h + 2 * k) + 3 * d * model_cfg.mlp_dim + 2 * d
    if model_cfg.attention == "infini":
        per_layer += h  # balance factors
        per_layer += (d * k + k) * model_cfg.write_strength  # W_β, b_β
        per_layer += k * (model_cfg.decay != "none") + d * k * (model_cfg.decay == "data")
    embed = model_cfg.vocab_size * d * (1 if model_cfg.tie_embeddings else 2)
    return model_cfg.num_layers * per_layer + embed + d


def forward_flops_per_token(model_cfg: ModelConfig, seq_len: int) -> dict[str, float]:
    """Forward FLOPs per token by part (weights, attention, memory): a third of training's."""
    weights = param_count(model_cfg) - model_cfg.vocab_size * model_cfg.d_model
    if model_cfg.tie_embeddings:  # the tied table is also the output matmul
        weights += model_cfg.vocab_size * model_cfg.d_model
    window = seq_len if model_cfg.attention == "full" else model_cfg.segment_len
    attention = 4 * model_cfg.num_layers * model_cfg.num_heads * model_cfg.head_dim * window
    memory = memory_flops_per_token(model_cfg) / 3 if model_cfg.attention == "infini" else 0
    return {"weights": 2.0 * weights, "attention": float(attention), "memory": float(memory)}


def flops_per_token(model_cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward) under the convention above."""
    return 3.0 * sum(forward_flops_per_token(model_cfg, seq_len).values())


def memory_flops_per_token(model_cfg: ModelConfig) -> int:
    """Training FLOPs per token of the infini memory path alone (the last term above)."""
    c = model_cfg
    writes = c.num_kv_heads * (1 if c.memory_update == "linear" else 2)
    per_layer = c.head_dim**2 * (c.num_heads + writes)
    if c.memory_update == "exact_delta":
        chunk = min(c.delta_chunk, c.segment_len)
        inverse = 2 * max(math.ceil(math.log2(chunk)) - 1, 0) * chunk
        per_layer += c.num_kv_heads * (3 * chunk * c.head_dim + inverse)
    return 6 * c.num_layers * per_layer
