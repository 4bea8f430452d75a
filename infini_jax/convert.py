r"""Hugging Face Llama checkpoints in and out.

  python -m infini_jax.convert from_hf --hf=DIR --output=WORKDIR \
      [--attention=full|local|infini] [--segment_len=2048] [--seq_len=N] [--balance_init=B]
      [--gate=sigmoid|hard_sigmoid]
  python -m infini_jax.convert to_hf --checkpoint=WORKDIR[/STEP] --output=DIR \
      [--dtype=float32|bfloat16|float16]

`from_hf` reads a local `LlamaForCausalLM` directory (config.json, and `model.safetensors` or
the shards of `model.safetensors.index.json`; bf16, f16 or f32) and writes a workdir that
`train --config.init_from=WORKDIR`, `evaluate --checkpoint=WORKDIR` and `generate` take: an
orbax checkpoint (step 0) of the parameters in the source's dtype (lossless; every restore
casts to float32), config.json, and the tokenizer copied into WORKDIR/tokenizer. Tensors are
read one at a time: a bf16 1B model converts in 1.4× its float32 size of host memory. With
`--attention=infini` every head gets a fresh balance factor (`model.balance_init`, through the
gate `--gate`: a cold start at b = -3 needs the sigmoid, the hard sigmoid is flat there); all
other weights are the pretrained ones.

`to_hf` writes config.json, model.safetensors and the tokenizer, which
`LlamaForCausalLM.from_pretrained(DIR)` loads, for "full" checkpoints; "local" ones with a
warning (Hugging Face runs them as full attention); "infini" ones are refused (Hugging Face
has no compressive memory).
"""

import contextlib
import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from safetensors import SafetensorError, safe_open
from safetensors.flax import save

from infini_jax import cli, model, ops, storage
from infini_jax.config import base_config, override, save_config, validate
from infini_jax.data import tokenizer
from infini_jax.errors import ConfigError, ConvertError, Error
from infini_jax.interop import hf
from infini_jax.interop.tokenizer import TOKENIZER_FILES, copy_tokenizer, export_tokenizer
from infini_jax.ops import GATES
from infini_jax.training import checkpoint, loading


def _read_json(path: str) -> dict:
    try:
        return json.loads(storage.read_text(path))
    except FileNotFoundError:
        raise ConvertError(
            f"{path} does not exist; --hf must be a Hugging Face model directory"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConvertError(f"{path} cannot be read as JSON ({e})") from None


def safetensors_files(hf_dir: str) -> list[str]:
    """The weight files of `hf_dir`: every shard of `model.safetensors.index.json`, or
    `model.safetensors`."""
    index = storage.join(hf_dir, "model.safetensors.index.json")
    if storage.isfile(index):
        names = sorted(set(_read_json(index).get("weight_map", {}).values()))
        paths = [storage.join(hf_dir, n) for n in names]
        missing = [p for p in paths if not storage.isfile(p)]
        if not names or missing:
            raise ConvertError(f"{index} names shards that are not there: {missing or 'none'}")
        return paths
    single = storage.join(hf_dir, "model.safetensors")
    if storage.isfile(single):
        return [single]
    raise ConvertError(
        f"{hf_dir} holds neither model.safetensors nor model.safetensors.index.json (only "
        "safetensors are read; re-save the model with save_pretrained(safe_serialization=True))"
    )


@contextlib.contextmanager
def _open_safetensors(local: str, path: str):
    """`safe_open(local)`; a file that is not safetensors (another format, a truncated header
    or tensor) is one `ConvertError` naming `path`."""
    try:
        with safe_open(local, framework="flax") as f:
            yield f  # a truncated tensor raises at its read, inside the caller's loop
    except (SafetensorError, OSError) as e:
        raise ConvertError(
            f"{path} is not a readable safetensors file ({e}); download it again"
        ) from None


def import_config(
    hf_dir: str,
    attention: str,
    segment_len: int,
    seq_len: int | None,
    balance_init: float | None,
    gate: str | None = None,
) -> ml_collections.ConfigDict:
    """Our config for the Llama in `hf_dir`, with the chosen attention (validated)."""
    fields = {
        f"model.{k}": v for k, v in hf.model_fields(_read_json(f"{hf_dir}/config.json")).items()
    }
    fields.update({"model.attention": attention, "model.segment_len": segment_len})
    fields["data.seq_len"] = seq_len or segment_len
    if balance_init is not None:
        fields["model.balance_init"] = balance_init
    if gate is not None:
        fields["model.gate"] = gate
    config = override(base_config(), fields, "from_hf")
    validate(config)
    return config


def read_params(hf_dir: str, model_cfg) -> dict:
    """Numpy parameters of `model_cfg` filled from the safetensors of `hf_dir`, one tensor at a
    time, each in its source dtype (bf16, f16 or f32: lossless; every restore casts to
    float32); every weight must be there exactly once, with its shape."""
    abstract = jax.eval_shape(lambda: model.init_params(model_cfg, jax.random.key(0)))
    params = jax.tree.map(lambda a: None, abstract, is_leaf=lambda x: hasattr(x, "shape"))
    if model_cfg.attention == "infini":
        params["layers"]["attention"].update(_fresh_memory_params(model_cfg))
    expected = hf.weights(model_cfg)
    seen: set[str] = set()
    for path in safetensors_files(hf_dir):
        with storage.local_copy(path) as local, _open_safetensors(local, path) as f:
            for name in f.keys():
                if hf.IGNORED.fullmatch(name):
                    continue
                if name == "lm_head.weight" and model_cfg.tie_embeddings:
                    continue  # tied: the embedding is the output projection
                if name not in expected:
                    raise ConvertError(
                        f"{path}: tensor {name} is not a weight of the Llama config.json "
                        "describes (wrong config, or not a LlamaForCausalLM checkpoint)"
                    )
                weight, layer = expected[name]
                tensor = np.asarray(f.get_tensor(name))
                if str(tensor.dtype) not in hf.SOURCE_DTYPES:
                    raise ConvertError(
                        f"{path}: tensor {name} is {tensor.dtype}; only {hf.SOURCE_DTYPES} "
                        "import (quantized checkpoints do not)"
                    )
                *parents, leaf = weight.path
                node = hf.get(params, tuple(parents))
                if node[leaf] is None:  # allocated at the first tensor, in its dtype
                    node[leaf] = np.zeros(hf.get(abstract, weight.path).shape, tensor.dtype)
                dst = node[leaf] if layer is None else node[leaf][layer]
                try:
                    value = weight.to_ours(tensor, model_cfg)
                    if value.shape != dst.shape:
                        raise ValueError
                except ValueError:
                    raise ConvertError(
                        f"{path}: tensor {name} has shape {tuple(tensor.shape)}, which does not "
                        f"fit config.json's model (our parameter is {dst.shape})"
                    ) from None
                dst[...] = value
                del tensor, value
                seen.add(name)
    missing = sorted(set(expected) - seen)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ConvertError(f"{hf_dir}: tensors missing: {', '.join(missing[:3])}{more}")
    return params


def _fresh_memory_params(model_cfg) -> dict:
    """What Llama has no weights for, from the model's own initializers, stacked over layers:
    the balance factors and the memory's write gates (`layers.Attention`'s other entries)."""
    from infini_jax.model.layers import Attention

    c = model_cfg
    x = jnp.zeros((1, 1, c.d_model), jnp.float32)
    memory = ops.init_memory(1, c.num_kv_heads, c.head_dim)
    mask, ids = jnp.ones((1, 1), bool), jnp.zeros((1, 1), jnp.int32)
    per_layer = []
    for i in range(c.num_layers):
        p = nn.unbox(Attention(c).init(jax.random.key(i), x, memory, mask, ids)["params"])
        per_layer.append({k: v for k, v in p.items() if k not in hf.ATTENTION_PROJECTIONS})
    return jax.tree.map(lambda *xs: np.stack([np.asarray(a) for a in xs]), *per_layer)


def from_hf(
    hf_dir: str,
    output: str,
    attention: str = "full",
    segment_len: int = 2048,
    seq_len: int | None = None,
    balance_init: float | None = None,
    gate: str | None = None,
) -> ml_collections.ConfigDict:
    """Imports the Llama in `hf_dir` into a new workdir `output`; returns its config. Every
    check (config, tokenizer, tensors) runs before anything is written."""
    output = storage.absolute(output)
    if storage.isdir(storage.join(output, "checkpoints")):
        raise ConvertError(f"--output={output} already holds checkpoints; choose a new directory")
    config = import_config(hf_dir, attention, segment_len, seq_len, balance_init, gate)
    model_cfg = validate(config)
    tok_files = [n for n in TOKENIZER_FILES if storage.isfile(storage.join(hf_dir, n))]
    if tok_files:
        tok = tokenizer.load(hf_dir)
        tok.check_fits(model_cfg.vocab_size)
    params = read_params(hf_dir, model_cfg)
    storage.makedirs(output)
    if tok_files:
        copy_tokenizer(hf_dir, tok_files, storage.join(output, "tokenizer"))
        config.data.tokenizer = storage.join(output, "tokenizer")
    else:
        print(
            f"warning: {hf_dir} has no tokenizer; pass --config.data.tokenizer to train and "
            "evaluate this model",
            file=sys.stderr,
        )
    mngr = checkpoint.manager(output, config)
    checkpoint.save(mngr, 0, {"params": params}, {}, config)
    mngr.wait_until_finished()
    mngr.close()
    save_config(config, output)
    return config


def to_hf(path: str, output: str, dtype: str = "float32") -> str:
    """Exports the checkpoint at `path` (WORKDIR[/STEP]) to a Hugging Face directory; returns
    a warning to print, or ""."""
    if dtype not in hf.SOURCE_DTYPES:
        raise ConfigError(f"--dtype={dtype} is not one of {hf.SOURCE_DTYPES}")
    config, _, params = loading.load_params(path)
    model_cfg = validate(config)
    if model_cfg.attention == "infini":
        c = model_cfg
        memory = f"{c.memory_update} update, {c.memory_features} features" + (
            ", write strength" * c.write_strength + f", {c.decay} decay" * (c.decay != "none")
        )
        raise ConvertError(
            f"{path} is an Infini-attention checkpoint ({memory}): Hugging Face's Llama has no "
            "compressive memory, so no exported model would compute what this one does"
        )
    warning = ""
    if model_cfg.attention == "local":
        warning = (
            f"warning: {path} was trained with local attention (segment_len="
            f"{model_cfg.segment_len}); Hugging Face will run it as full attention"
        )
    tok = loading.load_tokenizer(path, config)
    params = jax.tree.map(np.asarray, params)
    tensors = {}
    for name, (weight, layer) in hf.weights(model_cfg).items():
        value = hf.get(params, weight.path)
        value = value[layer] if layer is not None else value
        tensors[name] = jnp.asarray(np.ascontiguousarray(weight.to_hf(value, model_cfg)), dtype)
    storage.write_bytes(
        storage.join(output, "model.safetensors"), save(tensors, metadata={"format": "pt"})
    )
    special = {"bos": tok.bos_id, "eos": tok.eos_id, "pad": tok.pad_id}
    hf_cfg = hf.hf_config(model_cfg, config.data.seq_len, dtype, special)
    storage.write_text(storage.join(output, "config.json"), json.dumps(hf_cfg, indent=2))
    export_tokenizer(tok, output)
    return warning


def main(argv: list[str] | None = None) -> None:
    flags.DEFINE_string("hf", None, "from_hf: the Hugging Face model directory.")
    flags.DEFINE_string("checkpoint", None, "to_hf: WORKDIR or WORKDIR/STEP.")
    flags.DEFINE_string("output", None, "from_hf: the new workdir; to_hf: the new HF directory.")
    flags.DEFINE_enum("attention", "full", ("full", "local", "infini"), "from_hf: attention.")
    flags.DEFINE_integer(
        "segment_len", 2048, "from_hf: model.segment_len (local, infini).", lower_bound=1
    )
    flags.DEFINE_integer(
        "seq_len", None, "from_hf: data.seq_len (default: segment_len).", lower_bound=1
    )
    flags.DEFINE_float("balance_init", None, "from_hf: model.balance_init (infini).")
    flags.DEFINE_enum("gate", None, GATES, "from_hf: model.gate (infini; default the base's).")
    flags.DEFINE_enum("dtype", "float32", hf.SOURCE_DTYPES, "to_hf: dtype of the tensors.")

    def run(args):
        f = flags.FLAGS
        command = args[1:]
        if command == ["from_hf"]:
            cli.require("hf", "output")
            cli.writable(f.output, "output")
            config = from_hf(
                f.hf, f.output, f.attention, f.segment_len, f.seq_len, f.balance_init, f.gate
            )
            n = model.count_params(
                jax.eval_shape(lambda: model.init_params(validate(config), jax.random.key(0)))
            )
            print(f"wrote {f.output}: {n / 1e6:.1f}M parameters, attention={f.attention}")
        elif command == ["to_hf"]:
            cli.require("checkpoint", "output")
            cli.writable(f.output, "output")
            warning = to_hf(f.checkpoint, f.output, f.dtype)
            if warning:
                print(warning, file=sys.stderr)
            print(f"wrote {f.output} (LlamaForCausalLM, {f.dtype})")
        else:
            raise Error(f"unknown command {' '.join(command)!r}; the commands are from_hf, to_hf")

    cli.run(run, argv)


if __name__ == "__main__":
    main()
