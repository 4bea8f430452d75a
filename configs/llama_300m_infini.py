r"""The seed study's 300M LLaMA with Infini-attention (arXiv 2512.23862), exactly.

302,015,584 parameters; 8 segments of 1024 tokens per 8192-token sequence; delta update,
hard-sigmoid gate with its own learning rate. Presets: "" (delta, the seed) or "linear".

  python -m infini_jax.train --config=configs/llama_300m_infini.py --workdir=DIR
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # Seeds parameter init, data order and every other random choice.
    c.total_steps = 30_000  # Optimizer steps (seed: 30,000 ≈ 983M tokens).
    c.log_every_steps = 50  # Metrics to metrics.jsonl / TensorBoard every this many steps.
    c.checkpoint_every_steps = 1_000  # Asynchronous orbax checkpoint every this many steps.
    c.keep_checkpoints = 3  # How many recent checkpoints to keep.
    c.eval_every_steps = 0  # Validation loss on held-out data every this many steps; 0 = off.
    c.eval_batches = 4  # Held-out batches per validation (the same ones every time).

    c.permanent_checkpoint_every_steps = 0  # Also keep every M-th step's checkpoint; 0 = none.
    c.init_from = ""  # Start a new run from this checkpoint's parameters (WORKDIR[/STEP]).

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # Pure data-parallel replicas; -1 = all devices left over.
    c.mesh.fsdp = 1  # Parameters and optimizer state sharded over this axis (ZeRO-3 style).
    c.mesh.tensor = 1  # Tensor (head / MLP) parallelism.

    # Logical axis -> mesh axes. Parameters: embed, vocab, mlp, heads, kv_heads, head_dim, layers.
    c.sharding_rules = (
        ("embed", "fsdp"),
        ("vocab", "tensor"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("kv_heads", "tensor"),
        ("head_dim", None),
        ("layers", None),
    )

    m = c.model = ml_collections.ConfigDict()
    m.vocab_size = 49_152  # Vocabulary size (seed: 49,152); the tokenizer must fit in it.
    m.num_layers = 12  # Decoder blocks.
    m.d_model = 1024  # Hidden size; head_dim = d_model // num_heads (128 here).
    m.num_heads = 8  # Query heads.
    m.num_kv_heads = 8  # Key/value heads (< num_heads = GQA); memory lives per kv head.
    m.mlp_dim = 4096  # SwiGLU hidden size.
    m.tie_embeddings = False  # Share input embedding and output projection (seed: untied).
    m.init_std = 0.03125  # Std of the normal init of every weight matrix and embedding.
    m.norm_eps = 1e-5  # RMSNorm epsilon.
    m.rope_theta = 10_000.0  # RoPE base of the local attention (positions restart per segment).
    m.attention = "infini"  # "full" (causal over the sequence), "local" (segments), "infini".
    m.segment_len = 1024  # Tokens per segment N (the local attention window and scan step).
    m.memory_update = "delta"  # "linear" (M += σ(K)ᵀV) or "delta" (subtract the retrieval first).
    m.gate = "hard_sigmoid"  # g(b): "sigmoid" or "hard_sigmoid" = clip(0.2·b + 0.5, 0, 1).
    m.balance_init = 0.0  # Initial balance factor b of every head (0 → g = 0.5).
    m.empty_memory = "gate"  # Empty memory: "gate" mixes A_mem = 0 (seed); "local" = A_dot.
    m.bptt_segments = 0  # 0 = full backprop through memory; k > 0 cuts it every k segments.
    m.remat_policy = "nothing_saveable"  # jax.checkpoint policy of the segment step, or "none".
    m.remat_layers = False  # Also rematerialise each layer inside the segment step.
    m.dtype = "bfloat16"  # Compute dtype; parameters, optimizer and memory stay float32.

    d = c.data = ml_collections.ConfigDict()
    d.seq_len = 8192  # Training sequence length: a multiple of model.segment_len.
    d.batch_size = 4  # Global batch in sequences (seed: 4 × 8192 tokens).
    d.source = "synthetic"  # Your prepared FineWeb shards: DIR/*.array_record.
    d.weights = ""  # Mixture weights, one per entry of data.source ("" = equal shares).
    d.tokenizer = ""  # sentencepiece .model; "" = built-in, trained on the synthetic corpus.
    d.packing = "padding"  # Seed: padded, not packed. "concat" packs with segment_ids.
    d.validation_fraction = 0.001  # Share of prepared documents held out for validation.
    d.worker_count = 0  # grain prefetch processes; 0 = inside the training process.
    # Several processes: "replicated" = each reads the global stream and keeps its rows (same
    # data and resume on any process count); "sharded" = each reads only its documents.
    d.host_sharding = "replicated"
    d.synthetic = ml_collections.ConfigDict()
    d.synthetic.min_length = 1024  # Shortest synthetic document, in tokens.
    d.synthetic.max_length = 8192  # Longest synthetic document, in tokens.
    d.synthetic.key_digits = 5  # Digits of passkeys and values.
    d.synthetic.passkey_weight = 0.5  # Share of passkey documents.
    d.synthetic.kv_recall_weight = 0.5  # Share of key-value recall documents.
    d.synthetic.tokenizer_vocab_size = 512  # Vocabulary of the built-in tokenizer.

    c.report = ml_collections.ConfigDict()
    c.report.passkey_multiples = (1,)  # Passkey check at these multiples of seq_len; () = off.
    c.report.passkey_samples = 4  # Samples per depth (5 depths: 0, 25, 50, 75, 100%).

    o = c.optimizer = ml_collections.ConfigDict()
    o.learning_rate = 6e-5  # Peak LR of all parameters but the balance factors.
    o.end_learning_rate = 6e-6  # LR at the end of the cosine decay.
    o.warmup_steps = 500  # Linear warmup from 0 to the peak.
    o.b1 = 0.9  # AdamW β1.
    o.b2 = 0.95  # AdamW β2.
    o.eps = 1e-8  # AdamW ε.
    o.weight_decay = 0.1  # Decoupled weight decay of weight matrices and embeddings.
    o.clip_norm = 1.0  # Global gradient-norm clipping.
    o.gate_learning_rate = 0.01  # Balance factors' own peak LR (same schedule shape).
    o.gate_weight_decay = 0.0  # Balance factors' weight decay (0: else g is pinned at 0.5).
    o.no_weight_decay = "scale"  # Comma-separated path parts exempt from weight decay (norms).
    o.micro_batches = 1  # Gradient accumulation: micro-batches per step (scan).
    o.max_nonfinite_steps = 3  # Stop after this many non-finite steps in a row (each skipped).

    if arg == "linear":
        m.memory_update = "linear"
    elif arg not in (None, ""):
        raise ValueError(f"unknown preset {arg!r} for llama_300m_infini.py: use '' or 'linear'")
    return c
