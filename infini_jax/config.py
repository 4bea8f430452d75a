"""Every config field, its default and its meaning (`base_config`); loading, presets, checking
and saving configs.

Preset files in `configs/` start from `base_config()` and set only what differs. The typed
sections (`ModelConfig`, `DataConfig`, `OptimizerConfig`, `MeshConfig`) each check their own
fields; `validate` checks the rest and the fields that depend on two sections, once, before
anything compiles. docs/config.md's field tables are generated from `base_config`'s comments:
`python -m infini_jax.config --docs=docs/config.md` (a test fails when they are stale).
"""

import ast
import importlib.util
import inspect
import io
import json
import os
import tokenize

import ml_collections

from infini_jax.data.config import DataConfig
from infini_jax.errors import ConfigError, check, check_positive_ints, is_int
from infini_jax.model_config import ModelConfig
from infini_jax.optim import OptimizerConfig
from infini_jax.sharding import MeshConfig, check_rules

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def base_config() -> ml_collections.ConfigDict:
    """Every field, with its default and a comment saying what it means."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # Seeds parameter init, data order and every other random choice.
    config.total_steps = 10_000  # Optimizer steps.
    config.log_every_steps = 50  # Metrics to metrics.jsonl and TensorBoard every this many steps.
    config.checkpoint_every_steps = 1_000  # Asynchronous orbax checkpoint every this many steps.
    config.keep_checkpoints = 3  # How many recent checkpoints to keep.
    config.permanent_checkpoint_every_steps = 0  # Also keep every M-th step's checkpoint; 0 = none.
    config.eval_every_steps = 0  # Validation loss on held-out data every this many steps; 0 = off.
    config.eval_batches = 4  # Held-out batches per validation (the same ones every time).
    config.init_from = ""  # Start from this checkpoint's parameters (WORKDIR[/STEP]); "" = fresh.
    config.init_from_required = False  # A start-up error if init_from is empty (fine-tune configs).

    # Device mesh: one axis may be -1 (all devices left over).
    mesh = config.mesh = ml_collections.ConfigDict()
    mesh.data = -1  # Pure data-parallel replicas.
    mesh.fsdp = 1  # Parameters and optimizer state sharded over this axis (ZeRO-3 style).
    mesh.tensor = 1  # Tensor (head / MLP) parallelism.

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

    # The LLaMA decoder and its attention (infini_jax/model_config.py checks these).
    model = config.model = ml_collections.ConfigDict()
    model.vocab_size = 512  # Vocabulary size; the tokenizer must fit in it.
    model.num_layers = 2  # Decoder blocks.
    model.d_model = 128  # Hidden size; head_dim = d_model / num_heads must be an even integer.
    model.num_heads = 4  # Query heads.
    model.num_kv_heads = 2  # Key/value heads (< num_heads = GQA); the memory lives per kv head.
    model.mlp_dim = 384  # SwiGLU hidden size.
    model.tie_embeddings = False  # Share the input embedding and the output projection.
    model.init_std = 0.03125  # Std of the normal init of every weight matrix and embedding.
    model.norm_eps = 1e-5  # RMSNorm epsilon.
    model.rope_theta = 10_000.0  # RoPE base of the local attention (positions restart per segment).
    model.attention = "infini"  # "full" (causal over the sequence), "local" (segments) or "infini".
    model.segment_len = 64  # Tokens per segment N: the local attention window and the scan step.
    model.memory_update = "delta"  # "linear" (M += σ(K)ᵀV) or "delta" (subtract the read first).
    model.gate = "hard_sigmoid"  # g(b): "sigmoid" or "hard_sigmoid" = clip(0.2·b + 0.5, 0, 1).
    model.balance_init = 0.0  # Initial balance factor b of every head (0: g = 0.5).
    model.empty_memory = "gate"  # Empty memory: "gate" mixes A_mem = 0 (seed); "local" = A_dot.
    model.bptt_segments = 0  # 0 = full backprop through memory; k > 0 cuts it every k segments.
    model.remat_policy = "nothing_saveable"  # jax.checkpoint policy of the segment step, or "none".
    model.remat_layers = False  # Also rematerialise each layer inside the segment step.
    model.dtype = "float32"  # Compute dtype (float32 or bfloat16); params and memory stay float32.

    # The input pipeline (infini_jax/data/config.py checks these).
    data = config.data = ml_collections.ConfigDict()
    data.seq_len = 256  # Training length: a multiple of model.segment_len unless attention=full.
    data.batch_size = 8  # Global batch in sequences.
    data.source = "synthetic"  # Comma-separated: "synthetic" and/or globs of prepared shards.
    data.weights = ""  # Mixture weights, one per entry of data.source ("" = equal shares).
    data.tokenizer = ""  # sentencepiece .model; "" = built-in, trained on the synthetic corpus.
    data.packing = "padding"  # "padding": one document per row; "concat": pack with segment_ids.
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

    # AdamW with parameter groups (infini_jax/optim.py checks these).
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
    optimizer.no_weight_decay = "scale"  # Comma-separated path parts exempt from decay (norms).
    optimizer.micro_batches = 1  # Gradient accumulation: micro-batches per step (scan).
    optimizer.max_nonfinite_steps = 3  # Stop after this many non-finite steps in a row (skipped).
    return config


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/config.py[:preset]` as `config_flags.DEFINE_config_file` would."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist; pass --config=configs/<name>.py")
    name = os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def override(
    config: ml_collections.ConfigDict, overrides: dict, what: str = "override"
) -> ml_collections.ConfigDict:
    """Sets dotted fields (`{"model.attention": "local"}`) as `--config.a.b=v` would; an
    unknown field is a ConfigError naming `what` set it. Returns `config`, changed in place."""
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for name in (*parents, leaf):
            check(name in node, f"{what} {key}: config has no field {name!r}")
            if name != leaf:
                node = node[name]
        node[leaf] = type(node[leaf])(value) if isinstance(node[leaf], float) else value
    return config


def preset(config: ml_collections.ConfigDict, arg: str | None, presets: dict, name: str):
    """Applies preset `arg` of a config file: `presets` maps names ("" = no argument) to dotted
    overrides. An unknown name is one ConfigError line listing the known ones."""
    check((arg or "") in presets, f"unknown preset {arg!r} for {name}: use one of {list(presets)}")
    return override(config, presets[arg or ""])


def load_preset(name: str) -> ml_collections.ConfigDict:
    """`configs/<name>.py`, as a preset file that builds on another one loads it."""
    return load_config(os.path.join(REPO, "configs", f"{name}.py"))


def validate(config: ml_collections.ConfigDict) -> ModelConfig:
    """Checks every field; raises `ConfigError` on the first bad one. Returns the ModelConfig."""
    for section in ("mesh", "model", "data", "optimizer", "report"):
        check(section in config, f"config.{section} is missing; start from base_config()")
    check(is_int(config.seed), f"config.seed={config.seed!r} must be an integer")
    names = ("total_steps", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints")
    check_positive_ints({k: config[k] for k in (*names, "eval_batches")}, "")
    for name in ("permanent_checkpoint_every_steps", "eval_every_steps"):
        value = config[name]
        check(is_int(value) and value >= 0, f"config.{name}={value!r} must be an integer >= 0")
    MeshConfig.from_config(config.mesh)
    model_cfg = ModelConfig.from_config(config.model)
    data = DataConfig.from_config(config.data)
    if model_cfg.attention != "full":
        n = model_cfg.segment_len
        check(
            data.seq_len % n == 0,
            f"config.data.seq_len={data.seq_len} is not a multiple of config.model.segment_len="
            f"{n}; use e.g. {n * max(1, data.seq_len // n)}",
        )
    multiples = config.report.passkey_multiples
    check(
        all(is_int(m) and m > 0 for m in multiples),
        "config.report.passkey_multiples must be positive integers (multiples of seq_len)",
    )
    check_positive_ints({"passkey_samples": config.report.passkey_samples}, "report.")
    OptimizerConfig.from_config(config.optimizer)
    check(
        isinstance(config.init_from, str),
        f"config.init_from={config.init_from!r} must be a path (WORKDIR[/STEP]) or ''",
    )
    check(
        not (config.init_from_required and not config.init_from),
        "config.init_from is empty: this config fine-tunes a checkpoint; pass "
        "--config.init_from=WORKDIR[/STEP] of the pretrained run",
    )
    check_rules(config.sharding_rules)
    return model_cfg


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes the resolved config to `workdir/config.json`; returns its path."""
    path = os.path.join(workdir, "config.json")
    with open(path + ".tmp", "w") as f:
        json.dump(config.to_dict(), f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)
    return path


def field_comments() -> dict[str, str]:
    """`{"model.gate": "g(b): ...", "model": "<section comment>", ...}` from the comments in
    `base_config`'s source: the comment at the end of a field's line, or the comment lines
    right above it (how docs/config.md is generated)."""
    source = inspect.getsource(base_config)
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    lines = source.splitlines()
    aliases: dict[str, str] = {}
    out: dict[str, str] = {}

    def path_of(node) -> str:
        if isinstance(node, ast.Name):
            return aliases.get(node.id, "")
        return f"{path_of(node.value)}.{node.attr}".lstrip(".")

    for node in ast.walk(ast.parse(source).body[0]):
        if not isinstance(node, ast.Assign):
            continue
        paths = [path_of(t) for t in node.targets if isinstance(t, ast.Attribute)]
        for target in node.targets:
            if isinstance(target, ast.Name):
                aliases[target.id] = paths[0] if paths else ""
        if not paths:
            continue
        text = comments.get(node.lineno)
        if text is None:
            above, row = [], node.lineno - 1
            while row in comments and not lines[row - 1].split("#")[0].strip():
                above.insert(0, comments[row])
                row -= 1
            text = " ".join(above)
        out[paths[0]] = text
    return out


def _leaves(config: ml_collections.ConfigDict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


PRESET_COLUMNS = {"tiny": "tiny.py", "300M seed": "llama_300m_infini.py"}
DOCS_BEGIN = "<!-- fields: generated by python -m infini_jax.config --docs=docs/config.md -->"
DOCS_END = "<!-- end of generated fields -->"


def fields_markdown() -> str:
    """docs/config.md's field tables: one per section, every field with its default, the value
    in each preset of `PRESET_COLUMNS` where it differs, and its comment."""
    comments = field_comments()
    defaults = _leaves(base_config())
    presets = {k: _leaves(load_preset(v[:-3])) for k, v in PRESET_COLUMNS.items()}

    def show(value) -> str:
        return f"`{json.dumps(value) if isinstance(value, str) else value!r}`".replace("|", "\\|")

    out, section = [], None
    for path, default in defaults.items():
        parent = path.rpartition(".")[0]
        if parent != section:
            section = parent
            title = f"`{parent}`" if parent else "Top level"
            out += ["", f"### {title}", ""]
            if comments.get(parent):
                out += [comments[parent], ""]
            out += [
                "| field | default | " + " | ".join(presets) + " | meaning |",
                "|---|---|" + "---|" * len(presets) + "---|",
            ]
        cells = [show(p[path]) if p[path] != default else "" for p in presets.values()]
        name = path.rpartition(".")[2]
        out.append(
            f"| `{name}` | {show(default)} | " + " | ".join(cells) + f" | {comments[path]} |"
        )
    return "\n".join([DOCS_BEGIN, *out, "", DOCS_END])


def write_docs(path: str) -> None:
    """Replaces the generated block of `path` (between the markers) with `fields_markdown()`."""
    with open(path) as f:
        text = f.read()
    check(DOCS_BEGIN in text and DOCS_END in text, f"{path} has no generated-fields markers")
    head, rest = text.split(DOCS_BEGIN, 1)
    tail = rest.split(DOCS_END, 1)[1]
    with open(path, "w") as f:
        f.write(head + fields_markdown() + tail)


def main(argv: list[str] | None = None) -> None:
    from absl import flags

    from infini_jax import cli

    flags.DEFINE_string("docs", None, "Rewrite the generated field tables of this Markdown file.")

    def run(_):
        if not flags.FLAGS.docs:
            print(fields_markdown())
            return
        write_docs(flags.FLAGS.docs)
        print(f"wrote the field tables of {flags.FLAGS.docs}")

    cli.run(run, argv)


if __name__ == "__main__":
    main()
