r"""Tokenizers: a sentencepiece `.model`, a Hugging Face `tokenizer.json`, or a directory
written by `save_pretrained` that holds one; train either kind; the built-in default.

  python -m infini_jax.data.tokenizer train --input=GLOB --vocab_size=N --output=PATH \
      [--kind=sentencepiece|bpe]

`load(path)` returns a `Tokenizer` whatever the kind: `encode` (no special tokens added),
`decode`, `vocab_size` and the special ids the tokenizer defines (`eos_id` ends every document).
Tokenizers trained here have pad = 0, unk = 1, bos = 2, eos = 3, digits split into single
tokens (keys and numbers stay readable digit by digit), and no unknown bytes: sentencepiece
falls back to bytes, BPE is byte-level. `tokenizer.json` is read with the `tokenizers` library;
its special ids come from `tokenizer_config.json` beside it when there is one, else from the
usual token names (`</s>`, `<|endoftext|>`, `<|end_of_text|>`, ...).
"""

import io
import json
import os
import sys
from collections.abc import Iterable

import numpy as np
import sentencepiece as spm
import tokenizers
from tqdm import tqdm

from infini_jax import storage
from infini_jax.data import sources, synthetic
from infini_jax.errors import TokenizerError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")  # ids 0..3 of a BPE trained here
KINDS = ("sentencepiece", "bpe")
BPE_MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # every byte, and the special tokens
UNKNOWN = "⁇"  # what an id beyond the tokenizer's vocabulary decodes to (sentencepiece's mark)
# Names tried, in order, for a tokenizer.json without a tokenizer_config.json.
_NAMES = {
    "eos": ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "<|im_end|>"),
    "bos": ("<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"),
    "pad": ("<pad>", "<|pad|>", "[PAD]"),
}


class Tokenizer:
    """What the project needs of a tokenizer. `vocab_size` is one more than the largest id;
    `bos_id` and `pad_id` are None where the tokenizer has no such token."""

    kind: str
    path: str
    vocab_size: int
    eos_id: int
    bos_id: int | None
    pad_id: int | None

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids) -> str:
        """The text of `ids`. An id the tokenizer does not have (a model whose vocabulary is
        larger than its tokenizer can predict one) becomes `UNKNOWN`, never an error: scored
        against a reference it is simply wrong."""
        parts, run = [], []
        for i in map(int, ids):
            if 0 <= i < self.vocab_size:
                run.append(i)
                continue
            if run:
                parts.append(self._decode(run))
                run = []
            parts.append(UNKNOWN)
        if run:
            parts.append(self._decode(run))
        return "".join(parts)

    def piece(self, token_id: int) -> str:
        """The vocabulary entry of one id (e.g. "</s>"); `UNKNOWN` for one it does not have."""
        token_id = int(token_id)
        return self._piece(token_id) if 0 <= token_id < self.vocab_size else UNKNOWN

    def _decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def _piece(self, token_id: int) -> str:
        raise NotImplementedError

    def unused_rows(self, model_vocab_size: int, d_model: int, tied: bool) -> str:
        """ "" or one warning line: a model vocabulary larger than the tokenizer and its cost."""
        extra = model_vocab_size - self.vocab_size
        if extra <= 0:
            return ""
        params = extra * d_model * (1 if tied else 2)
        return (
            f"warning: config.model.vocab_size={model_vocab_size} but tokenizer {self.path} has "
            f"{self.vocab_size} tokens: {extra} embedding and output rows ({params:,} "
            "parameters) are never input, and a prediction of one of them decodes as "
            f"{UNKNOWN!r} and counts as wrong; set model.vocab_size={self.vocab_size} to drop them"
        )

    def check_fits(self, model_vocab_size: int) -> None:
        """Start-up check: every id the tokenizer emits must be a row of the embedding."""
        if self.vocab_size > model_vocab_size:
            raise TokenizerError(
                f"tokenizer {self.path} has {self.vocab_size} tokens but config.model.vocab_size"
                f"={model_vocab_size}; raise model.vocab_size or use a smaller tokenizer"
            )


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, path: str):
        self.path = path
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=storage.read_bytes(path))
        except (RuntimeError, OSError) as e:
            raise TokenizerError(
                f"tokenizer file {path} is not a sentencepiece model ({e})"
            ) from None
        self.vocab_size = self.sp.vocab_size()
        ids = (self.sp.pad_id(), self.sp.bos_id(), self.sp.eos_id())
        self.pad_id, self.bos_id, eos = (i if i >= 0 else None for i in ids)
        if eos is None:
            raise TokenizerError(f"tokenizer {path} defines no end-of-sequence token (eos_id)")
        self.eos_id = eos

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def _decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def _piece(self, token_id: int) -> str:
        return self.sp.id_to_piece(token_id)


class HFTokenizer(Tokenizer):
    """A Hugging Face `tokenizer.json` (special ids from `tokenizer_config.json` if beside it)."""

    kind = "tokenizer.json"

    def __init__(self, path: str):
        self.path = path
        try:
            self.tok = tokenizers.Tokenizer.from_str(storage.read_text(path))
        except Exception as e:  # noqa: BLE001 - the Rust library raises plain Exception
            reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise TokenizerError(
                f"tokenizer file {path} is not a Hugging Face tokenizer.json ({reason})"
            ) from None
        # Text that spells a special token ("</s>") is encoded as text, as sentencepiece
        # does: a document can never end early or inject a control token.
        self.tok.encode_special_tokens = True
        vocab = self.tok.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1
        named = _config_specials(storage.dirname(path))
        ids = {}
        for role, names in _NAMES.items():
            name = named.get(role) or next((n for n in names if n in vocab), None)
            ids[role] = vocab.get(name) if name is not None else None
        if ids["eos"] is None:
            raise TokenizerError(
                f"tokenizer {path} has no end-of-text token that infini_jax recognises (tried "
                f"{', '.join(_NAMES['eos'])}); add eos_token to a tokenizer_config.json beside it"
            )
        self.eos_id, self.bos_id, self.pad_id = ids["eos"], ids["bos"], ids["pad"]

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def _piece(self, token_id: int) -> str:
        return self.tok.id_to_token(token_id)


def _config_specials(directory: str) -> dict[str, str]:
    """`{"eos": "</s>", ...}` from a `tokenizer_config.json` in `directory`, if any."""
    path = storage.join(directory, "tokenizer_config.json")
    if not storage.isfile(path):
        return {}
    try:
        cfg = json.loads(storage.read_text(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path} is not valid JSON ({e}); fix or remove it") from None
    out = {}
    for role in _NAMES:
        token = cfg.get(f"{role}_token")
        token = token.get("content") if isinstance(token, dict) else token
        if isinstance(token, str):
            out[role] = token
    return out


def load(path: str) -> Tokenizer:
    """The tokenizer at `path`: a sentencepiece `.model`, a `tokenizer.json`, or a directory
    holding either (`tokenizer.json` preferred, as Hugging Face does)."""
    if storage.isdir(path):
        for name in ("tokenizer.json", "tokenizer.model"):
            if storage.isfile(storage.join(path, name)):
                return load(storage.join(path, name))
        raise TokenizerError(
            f"tokenizer directory {path} holds neither tokenizer.json nor tokenizer.model"
        )
    if not storage.isfile(path):
        raise TokenizerError(f"tokenizer file {path} does not exist")
    if path.endswith(".json"):
        return HFTokenizer(path)
    return SentencePieceTokenizer(path)


def train(
    texts: Iterable[str],
    vocab_size: int,
    output: str,
    progress: bool = True,
    kind: str = "sentencepiece",
    source: str = "the given texts",
) -> Tokenizer:
    """Trains a tokenizer of `kind` on `texts` and writes it atomically to `output` (a `.model`
    for sentencepiece, a `tokenizer.json` for "bpe").

    A vocabulary that cannot be built (e.g. smaller than the corpus's characters, or than the
    256 bytes of a byte-level BPE) is a `TokenizerError` with the reason."""
    if kind not in KINDS:
        raise TokenizerError(f"tokenizer kind {kind!r} is not one of {KINDS}")
    if kind == "bpe" and vocab_size < BPE_MIN_VOCAB:
        raise TokenizerError(
            f"a byte-level BPE needs vocab_size >= {BPE_MIN_VOCAB} (256 bytes + "
            f"{len(SPECIAL_TOKENS)} special tokens); got {vocab_size}"
        )
    stream = tqdm(
        texts, desc="tokenizer: documents", unit="doc", disable=not progress, file=sys.stderr
    )
    if kind == "bpe":
        storage.write_bytes(output, _train_bpe(stream, vocab_size, source).encode())
        return load(output)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(stream),
            model_writer=model,
            vocab_size=vocab_size,
            model_type="bpe",
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            split_digits=True,
            byte_fallback=True,
            max_sentence_length=1 << 24,
            minloglevel=2,
            num_threads=os.cpu_count() or 1,
        )
    except RuntimeError as e:
        reason = str(e).rpartition("] ")[2] or str(e)
        raise TokenizerError(f"sentencepiece could not train on {source}: {reason}") from None
    storage.write_bytes(output, model.getvalue())
    return load(output)


def _train_bpe(texts: Iterable[str], vocab_size: int, source: str) -> str:
    """A byte-level BPE `tokenizer.json` (as a string) trained with the `tokenizers` library."""
    alphabet = tokenizers.pre_tokenizers.ByteLevel.alphabet()
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Sequence(
        [
            tokenizers.pre_tokenizers.Digits(individual_digits=True),
            tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    if tok.get_vocab_size() < BPE_MIN_VOCAB:
        raise TokenizerError(f"BPE training on {source} produced no vocabulary; is it empty?")
    return tok.to_str()


def synthetic_texts(seed: int, n: int = 2000) -> Iterable[str]:
    """Deterministic plain-text synthetic documents for the built-in tokenizer."""
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        task = synthetic.TASKS[i % len(synthetic.TASKS)]
        yield synthetic.text_document(rng, task, int(rng.integers(2, 20)))


def default_tokenizer(workdir: str, vocab_size: int, seed: int = 0) -> Tokenizer:
    """The built-in tokenizer: sentencepiece trained on the synthetic corpus, cached in the
    workdir."""
    path = storage.join(workdir, f"tokenizer_synthetic_{vocab_size}.model")
    if not storage.isfile(path):
        train(synthetic_texts(seed), vocab_size, path, False, source="the built-in corpus")
    return load(path)


def main(argv: list[str] | None = None) -> None:
    from absl import flags

    from infini_jax import cli

    flags.DEFINE_string("input", None, "train: glob(s) of text/JSONL/Parquet, comma-separated.")
    flags.DEFINE_integer("vocab_size", 32000, "train: vocabulary size.", lower_bound=1)
    flags.DEFINE_string("output", None, "train: the .model (sentencepiece) or .json (bpe) file.")
    flags.DEFINE_string("text_field", "text", "train: JSONL / Parquet field with the text.")
    flags.DEFINE_enum("kind", "sentencepiece", KINDS, "train: sentencepiece or byte-level BPE.")

    def run(args):
        f = flags.FLAGS
        if args[1:] != ["train"]:
            raise TokenizerError(f"unknown command {' '.join(args[1:])!r}; the command is 'train'")
        cli.require("input", "output")
        if f.output.endswith(".json") != (f.kind == "bpe"):  # `load` tells them by the name
            raise TokenizerError(
                f"--output={f.output}: a bpe tokenizer is written as .json, a sentencepiece "
                "one as anything else (e.g. .model); rename it or pass --kind"
            )
        cli.writable(f.output, "output", directory=False)
        stats = sources.ReadStats()
        texts = (
            doc
            for path in sources.expand(f.input)
            for doc in sources.read_documents(path, text_field=f.text_field, stats=stats)
        )
        tok = train(texts, f.vocab_size, f.output, kind=f.kind, source=f.input)
        short = (
            f" (of {f.vocab_size}: the text has no more merges)"
            if tok.vocab_size < f.vocab_size
            else ""
        )
        print(f"wrote {f.output}: {tok.vocab_size} tokens{short}; read {stats.summary()}")

    cli.run(run, argv)


if __name__ == "__main__":
    main()
