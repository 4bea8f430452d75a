r"""A tiny Infini-attention LLaMA that trains on 2 CPU cores in minutes (the built-in default).

Presets: "" (infini), "local" or "full" (the baselines, trained the same way).

  python -m infini_jax.train --config=configs/tiny.py --workdir=/tmp/tiny
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # Seeds parameter init, data order and every other random choice.
    c.total_steps = 2500  # Optimizer steps (retrieval through the memory appears after ~1,500).
    c.log_every_steps = 50  # Metrics every this many steps.
    c.checkpoint_every_steps = 500  # Checkpoint every this many steps.
    c.keep_checkpoints = 2  # How many recent checkpoints to keep.
    c.eval_every_steps = 0  # Validation loss on held-out data every this many steps; 0 = off.
    c.eval_batches = 4  # Held-out batches per validation (the same ones every time).

    c.permanent_checkpoint_every_steps = 0  # Also keep every M-th step's checkpoint; 0 = none.
    c.init_from = ""  # Start a new run from this checkpoint's parameters (WORKDIR[/STEP]).

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # Data-parallel replicas; -1 = all devices left over.
    c.mesh.fsdp = 1  # Parameter / optimizer-state sharding axis.
    c.mesh.tensor = 1  # Tensor parallelism.

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
    m.vocab_size = 512  # Vocabulary size; the tokenizer must fit in it.
    m.num_layers = 2  # Decoder blocks.
    m.d_model = 128  # Hidden size; head_dim = d_model // num_heads = 32.
    m.num_heads = 4  # Query heads.
    m.num_kv_heads = 2  # Key/value heads (GQA: 2 query heads share each memory).
    m.mlp_dim = 384  # SwiGLU hidden size.
    m.tie_embeddings = False  # Share input and output embeddings.
    m.init_std = 0.03125  # Std of the normal init of weights and embeddings.
    m.norm_eps = 1e-5  # RMSNorm epsilon.
    m.rope_theta = 10_000.0  # RoPE base (positions restart in every segment).
    m.attention = "infini"  # "full", "local" or "infini".
    m.segment_len = 64  # Tokens per segment.
    m.memory_update = "delta"  # Memory update rule: "linear" or "delta".
    m.gate = "hard_sigmoid"  # g(b): "sigmoid" or "hard_sigmoid".
    m.balance_init = 0.0  # Initial balance factor b (g = 0.5).
    m.empty_memory = "gate"  # Empty memory: "gate" (mix A_mem = 0) or "local" (plain A_dot).
    m.bptt_segments = 0  # 0 = full backprop through memory; k > 0 cuts it every k segments.
    m.remat_policy = "nothing_saveable"  # Segment-step remat policy, or "none".
    m.remat_layers = False  # Also rematerialise each layer.
    m.dtype = "float32"  # Compute dtype (float32 is faster than bfloat16 on CPU).

    d = c.data = ml_collections.ConfigDict()
    d.seq_len = 256  # Training length: 4 segments of 64.
    d.batch_size = 16  # Global batch in sequences.
    d.source = "synthetic"  # "synthetic" and/or globs of prepared ArrayRecord shards.
    d.weights = ""  # Mixture weights, one per entry of data.source ("" = equal shares).
    d.tokenizer = ""  # sentencepiece .model; "" = built-in, trained on the synthetic corpus.
    d.packing = "padding"  # "padding": one document per row; "concat": pack (segment_ids).
    d.validation_fraction = 0.01  # Share of prepared documents held out for validation.
    d.worker_count = 0  # grain prefetch processes; 0 = inside the training process.
    # Several processes: "replicated" = each reads the global stream and keeps its rows (same
    # data and resume on any process count); "sharded" = each reads only its documents.
    d.host_sharding = "replicated"
    d.synthetic = ml_collections.ConfigDict()
    d.synthetic.min_length = 192  # Shortest synthetic document, in tokens (3+ segments).
    d.synthetic.max_length = 256  # Longest synthetic document, in tokens.
    d.synthetic.key_digits = 2  # Digits of passkeys and values (2: learnable in minutes).
    d.synthetic.passkey_weight = 1.0  # Share of passkey documents.
    d.synthetic.kv_recall_weight = 0.0  # Share of key-value recall documents.
    d.synthetic.tokenizer_vocab_size = 512  # Vocabulary of the built-in tokenizer.

    c.report = ml_collections.ConfigDict()
    c.report.passkey_multiples = (
        1,
        4,
        16,
    )  # Passkey check at these multiples of seq_len; () = off.
    c.report.passkey_samples = 8  # Samples per depth (5 depths: 0, 25, 50, 75, 100%).

    o = c.optimizer = ml_collections.ConfigDict()
    o.learning_rate = 1e-2  # Peak LR (high: a tiny model, a short run).
    o.end_learning_rate = 1e-3  # LR at the end of the cosine.
    o.warmup_steps = 100  # Linear warmup steps.
    o.b1 = 0.9  # AdamW β1.
    o.b2 = 0.95  # AdamW β2.
    o.eps = 1e-8  # AdamW ε.
    o.weight_decay = 0.1  # Weight decay of matrices and embeddings.
    o.clip_norm = 1.0  # Global gradient-norm clipping.
    o.gate_learning_rate = 0.01  # Balance factors' own peak LR.
    o.gate_weight_decay = 0.0  # Balance factors' weight decay.
    o.no_weight_decay = "scale"  # Comma-separated path parts exempt from weight decay (norms).
    o.micro_batches = 1  # Gradient accumulation: micro-batches per step (scan).
    o.max_nonfinite_steps = 3  # Stop after this many non-finite steps in a row (each skipped).

    if arg in ("local", "full"):
        m.attention = arg
    elif arg not in (None, ""):
        raise ValueError(f"unknown preset {arg!r} for tiny.py: use '', 'local' or 'full'")
    return c
