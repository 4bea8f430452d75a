"""A run's tokenizer as a Hugging Face tokenizer directory (`AutoTokenizer.from_pretrained`
reads it): written beside converted weights, into every training workdir (for lm-eval's RULER
tasks), and copied from a Hugging Face model directory on import."""

import json

from infini_jax import storage
from infini_jax.data import tokenizer

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
)


def copy_tokenizer(src_dir: str, files: list[str], dst_dir: str) -> None:
    """Copies the tokenizer `files` of `src_dir` into `dst_dir`."""
    for name in files:
        storage.write_bytes(
            storage.join(dst_dir, name), storage.read_bytes(storage.join(src_dir, name))
        )


def export_tokenizer(tok: tokenizer.Tokenizer, output: str) -> None:
    """The tokenizer beside the weights, with a tokenizer_config.json naming its special
    tokens when the source has none (so `AutoTokenizer.from_pretrained` reads them)."""
    src = storage.dirname(tok.path)
    if storage.basename(tok.path) in TOKENIZER_FILES:  # from a Hugging Face directory
        present = [n for n in TOKENIZER_FILES if storage.isfile(storage.join(src, n))]
        copy_tokenizer(src, present, output)
        if storage.isfile(storage.join(output, "tokenizer_config.json")):
            return
    name = "tokenizer.json" if tok.kind == "tokenizer.json" else "tokenizer.model"
    storage.write_bytes(storage.join(output, name), storage.read_bytes(tok.path))

    def piece(i):
        return None if i is None else tok.piece(i)

    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast"
        if name == "tokenizer.json"
        else "LlamaTokenizer",
        "bos_token": piece(tok.bos_id),
        "eos_token": piece(tok.eos_id),
        "pad_token": piece(tok.pad_id),
        "add_bos_token": False,
        "add_eos_token": False,
    }
    storage.write_text(
        storage.join(output, "tokenizer_config.json"), json.dumps(tok_config, indent=2)
    )
