"""Every config field, its default and a comment saying what it means: the one place fields are
declared. The typed sections (`ModelConfig`, `DataConfig`, `OptimizerConfig`, `MeshConfig`)
take their fields from here, and docs/config.md's tables are generated from these comments.
"""

import ml_collections

# The exact delta rule over each segment with L2-normalised keys and queries, no write strength
# and no decay: table m's best arm (docs/study.md). The presets named "delta_l2"
# (configs/tiny.py, study.py, llama_300m_infini.py) apply these fields.
DELTA_L2 = {
    "model.memory_update": "exact_delta",
    "model.memory_features": "l2",
    "model.write_strength": False,
    "model.decay": "none",
}
# The gated delta rule (docs/study.md, table m): DELTA_L2 with a write strength per token and a
# data-dependent decay per segment; the presets named "gated" apply these fields.
GATED_DELTA = {**DELTA_L2, "model.write_strength": True, "model.decay": "data"}


def base_config() -> ml_collections.ConfigDict:
    """Every field, with its default and a comment saying what it means."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # Seeds parameter init, data order and every other random choice.
    config.total_steps = 10_000  # Optimizer steps.
    config.log_every_steps = 50  # Metrics to metrics.jsonl and TensorBoard every this many steps.
    config.checkpoint_every_steps = 1_000  # Asynchronous orbax checkpoint every this many steps.
    config.keep_checkpoints = 3  # How many recent checkpoints to keep.
    config.permanent_checkpoint_every_steps = 0  # Also keep every M-th step's checkpoint; 0 = none.
    # Also a temporary checkpoint when this many minutes have passed since the last one (checked
    # at each logging step); only the newest temporary one is kept. 0 = off.
    config.checkpoint_every_minutes = 0.0
    # Longest wait (s) for a checkpoint to commit, its writes retried meanwhile (a bucket that
    # stopped answering); then one error line, the earlier checkpoints intact. 0 = no limit.
    config.checkpoint_timeout_s = 1_800
    config.eval_every_steps = 0  # Validation loss on held-out data every this many steps; 0 = off.
    config.eval_batches = 4  # Held-out batches per validation (the same ones every time).
    config.init_from = ""  # Start from this checkpoint's parameters (WORKDIR[/STEP]); "" = fresh.
    config.init_from_required = False  # A start-up error if init_from is empty (fine-tune configs).
    # Take the model's shape, norms and RoPE (and data.tokenizer, if unset) from init_from's
    # checkpoint: continual pretraining of an imported model (configs/continual_infini.py).
    config.init_from_model = False

    # Device mesh: one axis may be -1 (all devices left over).
    mesh = config.mesh = ml_collections.ConfigDict()
    mesh.data = -1  # Pure data-parallel replicas.
    mesh.fsdp = 1  # Parameters and optimizer state sharded over this axis (ZeRO-3 style).
    mesh.tensor = 1  # Tensor (head / MLP) parallelism.
    # TPU slices joined over the data-center network (multi-slice): the data axis spans them
    # (data-parallel across slices, data × fsdp × tensor inside each, over ICI); the sizes
    # above are per slice. 1 = one slice (or any non-TPU job).
    mesh.slices = 1

    # Logical parameter axis -> mesh axes (embed, vocab, mlp, heads, kv_heads, head_dim, layers).
    config.sharding_rules = (
        ("embed", "fsdp"),
        ("vocab", "tensor"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("kv_heads", "tensor"),
        ("head_dim", None),
        ("layers", None),
    )

    # The LLaMA decoder and its attention (infini_jax/model/config.py checks these).
    model = config.model = ml_collections.ConfigDict()
    model.vocab_size = 512  # Vocabulary size; the tokenizer must fit in it.
    model.num_layers = 2  # Decoder blocks.
    model.d_model = 128  # Hidden size.
    model.num_heads = 4  # Query heads.
    model.head_dim = 0  # Features per head (even); 0 = d_model / num_heads.
    model.num_kv_heads = 2  # Key/value heads (< num_heads = GQA); the memory lives per kv head.
    model.mlp_dim = 384  # SwiGLU hidden size.
    model.tie_embeddings = False  # Share the input embedding and the output projection.
    model.init_std = 0.03125  # Std of the normal init of every weight matrix and embedding.
    model.norm_eps = 1e-5  # RMSNorm epsilon.
    model.rope_theta = 10_000.0  # RoPE base of the local attention (positions restart per segment).
    model.rope_scaling = "none"  # RoPE frequency scaling: "none" or "llama3" (Llama 3.1 rule).
    model.rope_scaling_factor = 8.0  # llama3: the lowest frequencies are divided by this.
    model.rope_low_freq_factor = 1.0  # llama3: wavelengths > original_len / this are scaled.
    model.rope_high_freq_factor = 4.0  # llama3: wavelengths < original_len / this are kept.
    model.rope_original_len = 8192  # llama3: the context length of the unscaled base model.
    model.attention = "infini"  # "full" (causal over the sequence), "local" (segments) or "infini".
    model.segment_len = 64  # Tokens per segment N: the local attention window and the scan step.
    # Kernel of the causal attention inside each window (infini_jax/ops/kernels.py): "auto"
    # (splash on TPU, pallas_gpu on GPU, else xla), "xla", "splash", "pallas_gpu" or "cudnn".
    model.attention_impl = "auto"
    # Splash kernel blocks (tokens; multiples of 128), each lowered to the largest multiple of
    # 128 that divides the window; the same sizes in the forward and backward passes.
    model.splash_block_q = 512  # Query block.
    model.splash_block_kv = 512  # Key/value block.
    model.splash_block_kv_compute = 512  # Key/value sub-block of the inner loop (<= kv block).
    # The memory's update: "linear" (M += σ(K)ᵀV), "delta" (subtract the read first, in one step
    # from the state before the segment: the paper's) or "exact_delta" (the delta rule token by
    # token, in order, in chunks of triangular systems; docs/infini_attention.md).
    model.memory_update = "delta"
    # Feature map of the memory's queries and keys: "elu" (σ = ELU+1, read σ(q)M / σ(q)z: the
    # paper's) or "l2" (SiLU then unit L2 norm per head, read q̂M with no normaliser: DeltaNet).
    model.memory_features = "elu"
    model.delta_chunk = 32  # exact_delta: tokens per triangular system, 1–64; divides segment_len.
    # A per-token, per-kv-head write strength β = sigmoid(W_β x + b_β) scaling each token's write.
    model.write_strength = False
    model.write_strength_init = 0.5  # β's bias at init: sigmoid(b_β) = this, in (0, 1).
    # Decay α of M and z once per segment, per kv head, before the write: "none", "learned"
    # (α = exp(−softplus(b_α))) or "data" (b_α plus a projection of the segment's mean input).
    model.decay = "none"
    model.decay_init = 0.99  # α at init, per segment (not per token), in (0, 1).
    model.gate = "hard_sigmoid"  # g(b): "sigmoid" or "hard_sigmoid" = clip(0.2·b + 0.5, 0, 1).
    model.balance_init = 0.0  # Initial balance factor b per head (g = 0.5); hard_sigmoid: |b| < 2.5
    model.empty_memory = "gate"  # Empty memory: "gate" mixes A_mem = 0 (seed); "local" = A_dot.
    model.bptt_segments = 0  # 0 = full backprop through memory; k > 0 cuts it every k segments.
    # What the backward pass keeps of the segment step's forward (the rest is recomputed):
    # "none" (remat off), "nothing_saveable", "dots_saveable",
    # "dots_with_no_batch_dims_saveable" or "attention_out" (each layer's attention output).
    model.remat_policy = "nothing_saveable"
    model.remat_layers = False  # Also rematerialise each layer inside the segment step.
    model.layer_remat_policy = "nothing_saveable"  # What remat_layers keeps per layer (as above).
    model.dtype = "float32"  # Compute dtype (float32 or bfloat16); params and memory stay float32.

    # The input pipeline (infini_jax/data/config.py checks these).
    data = config.data = ml_collections.ConfigDict()
    data.seq_len = 256  # Training length: a multiple of model.segment_len unless attention=full.
    data.batch_size = 8  # Global batch in sequences.
    data.source = "synthetic"  # Comma-separated: "synthetic" and/or globs of prepared shards.
    # Mixture weights, one per entry of data.source ("" = equal shares); 0 = a validation-only
    # source (never trained on: all its documents are held out).
    data.weights = ""
    # Names of the sources in the validation metrics (val/<name>/loss, val/<name>/bpb), one
    # per entry of data.source; "" = derived: "synthetic", or the directory above the shards.
    data.source_names = ""
    # A sentencepiece .model, a Hugging Face tokenizer.json, or a directory holding one;
    # "" = built-in (sentencepiece trained on the synthetic corpus, cached in the workdir).
    data.tokenizer = ""
    data.packing = "padding"  # "padding": one document per row; "concat": pack with segment_ids.
    # "padding" and a prepared document longer than seq_len: "truncate" keeps its start;
    # "random_window" a seeded random window of it, drawn anew every epoch (long books).
    data.long_documents = "truncate"
    data.validation_fraction = 0.01  # Share of prepared documents held out, in (0, 0.5].
    data.worker_count = 0  # grain prefetch processes; 0 = inside the training process.
    # Several processes: "replicated" = each reads the global stream and keeps its rows (same
    # data and resume on any process count); "sharded" = each reads only its documents.
    data.host_sharding = "replicated"

    # The built-in synthetic corpus (passkey and key-value recall documents).
    synthetic = data.synthetic = ml_collections.ConfigDict()
    synthetic.min_length = 192  # Shortest synthetic document, in tokens (>= 64).
    synthetic.max_length = 256  # Longest synthetic document, in tokens.
    synthetic.key_digits = 5  # Digits of passkeys and values.
    synthetic.passkey_weight = 0.5  # Share of passkey documents.
    synthetic.kv_recall_weight = 0.5  # Share of key-value recall documents.
    synthetic.tokenizer_vocab_size = 512  # Vocabulary of the built-in tokenizer.

    # The end-of-run report: a passkey check with the evaluation harness.
    report = config.report = ml_collections.ConfigDict()
    report.passkey_multiples = (1,)  # Passkey check at these multiples of seq_len; () = off.
    report.passkey_samples = 4  # Samples per depth (5 depths: 0, 25, 50, 75, 100%).

    # Weights & Biases, beside metrics.jsonl and TensorBoard (pip install 'infini_jax[wandb]').
    # Process 0 logs; the run id is kept in WORKDIR/wandb_run.json, so a resumed run continues
    # the same W&B run (docs/training.md).
    wandb = config.wandb = ml_collections.ConfigDict()
    wandb.mode = "disabled"  # "disabled", "offline" (files only, `wandb sync` later) or "online".
    wandb.project = "infini_jax"  # W&B project.
    wandb.entity = ""  # W&B team or user; "" = the account's default.
    wandb.name = ""  # Run name; "" = the workdir's name.
    wandb.group = ""  # Run group (e.g. a sweep's name); "" = none.
    wandb.tags = ()  # Run tags, e.g. ("baseline", "seed0").
    wandb.dir = ""  # Where W&B writes its files; "" = the workdir (required for gs:// workdirs).

    # Evaluations during training on the live parameters, {} = none (docs/evaluation.md): name
    # -> ConfigDict(config="configs/eval/<task>.py[:preset]", every_steps=N (0 = off),
    # fields={eval config field: value}); results go to the metrics as eval/<name>/...
    config.evals = ml_collections.ConfigDict()

    # A jax.profiler trace of a few training steps in WORKDIR/profile (docs/performance.md).
    profile = config.profile = ml_collections.ConfigDict()
    profile.start_step = 0  # First traced step; 0 = off. Past compilation: e.g. 10.
    profile.num_steps = 3  # Steps traced.

    # AdamW with parameter groups (infini_jax/training/optim.py checks these).
    optimizer = config.optimizer = ml_collections.ConfigDict()
    optimizer.learning_rate = 3e-4  # Peak LR of all parameters but the balance factors.
    optimizer.end_learning_rate = 3e-5  # LR at the end of the cosine decay.
    optimizer.warmup_steps = 500  # Linear warmup from 0 to the peak.
    optimizer.b1 = 0.9  # AdamW β1.
    optimizer.b2 = 0.95  # AdamW β2.
    optimizer.eps = 1e-8  # AdamW ε.
    optimizer.weight_decay = 0.1  # Decoupled weight decay of weight matrices and embeddings.
    optimizer.clip_norm = 1.0  # Global gradient-norm clipping.
    optimizer.gate_learning_rate = 0.01  # Balance factors' own peak LR (same schedule shape).
    optimizer.gate_weight_decay = 0.0  # Balance factors' weight decay (0: else g is pinned at 0.5).
    # Comma-separated path parts exempt from weight decay (norms); biases (the memory gates') never
    # decay.
    optimizer.no_weight_decay = "scale"
    optimizer.micro_batches = 1  # Gradient accumulation: micro-batches per step (scan).
    optimizer.max_nonfinite_steps = 3  # Stop after this many non-finite steps in a row (skipped).
    return config
