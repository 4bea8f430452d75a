r"""sentencepiece tokenizers: load any `.model`, train one, or build the built-in default.

  python -m infini_jax.data.tokenizer train --input=GLOB --vocab_size=N --output=PATH

Ids are explicit: pad = 0 (also grain's packing pad), unk = 1, bos = 2, eos = 3. Digits are
split into single tokens (keys and numbers stay readable digit by digit), bytes fall back.
"""

import io
import os
import sys
from collections.abc import Iterable

import numpy as np
import sentencepiece as spm
from tqdm import tqdm

from infini_jax.data import sources, synthetic
from infini_jax.errors import TokenizerError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class Tokenizer:
    """A loaded sentencepiece model with explicit special ids."""

    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise TokenizerError(f"tokenizer file {path} does not exist")
        self.path = path
        try:
            self.sp = spm.SentencePieceProcessor(model_file=path)
        except (RuntimeError, OSError) as e:
            raise TokenizerError(
                f"tokenizer file {path} is not a sentencepiece model ({e})"
            ) from None
        self.vocab_size = self.sp.vocab_size()
        self.pad_id = self.sp.pad_id()
        self.bos_id = self.sp.bos_id()
        self.eos_id = self.sp.eos_id()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in ids])

    def check_fits(self, model_vocab_size: int) -> None:
        """Start-up check: every id the tokenizer emits must be a row of the embedding."""
        if self.vocab_size > model_vocab_size:
            raise TokenizerError(
                f"tokenizer {self.path} has {self.vocab_size} tokens but config.model.vocab_size"
                f"={model_vocab_size}; raise model.vocab_size or use a smaller tokenizer"
            )


def train(
    texts: Iterable[str],
    vocab_size: int,
    output: str,
    progress: bool = True,
    model_type: str = "bpe",
    source: str = "the given texts",
) -> Tokenizer:
    """Trains a sentencepiece model on `texts` and writes it atomically to `output`.

    A vocabulary sentencepiece cannot build (e.g. smaller than the corpus's characters) is a
    `TokenizerError` with sentencepiece's reason."""
    model = io.BytesIO()
    stream = tqdm(
        texts, desc="tokenizer: documents", unit="doc", disable=not progress, file=sys.stderr
    )
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(stream),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
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
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output + ".tmp", "wb") as f:
        f.write(model.getvalue())
    os.replace(output + ".tmp", output)
    return Tokenizer(output)


def synthetic_texts(seed: int, n: int = 2000) -> Iterable[str]:
    """Deterministic plain-text synthetic documents for the built-in tokenizer."""
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        task = synthetic.TASKS[i % len(synthetic.TASKS)]
        yield synthetic.text_document(rng, task, int(rng.integers(2, 20)))


def default_tokenizer(workdir: str, vocab_size: int, seed: int = 0) -> Tokenizer:
    """The built-in tokenizer: trained on the synthetic corpus, cached in the workdir."""
    path = os.path.join(workdir, f"tokenizer_synthetic_{vocab_size}.model")
    if not os.path.isfile(path):
        train(synthetic_texts(seed), vocab_size, path, False, source="the built-in corpus")
    return Tokenizer(path)


def main(argv: list[str] | None = None) -> None:
    from absl import flags

    from infini_jax import cli

    flags.DEFINE_string("input", None, "train: glob(s) of text/JSONL/Parquet, comma-separated.")
    flags.DEFINE_integer("vocab_size", 32000, "train: vocabulary size.")
    flags.DEFINE_string("output", None, "train: where to write the .model file.")
    flags.DEFINE_string("text_field", "text", "train: JSONL / Parquet field with the text.")

    def run(args):
        f = flags.FLAGS
        if args[1:] != ["train"]:
            raise TokenizerError(f"unknown command {' '.join(args[1:])!r}; the command is 'train'")
        cli.require("input", "output")
        stats = sources.ReadStats()
        texts = (
            doc
            for path in sources.expand(f.input)
            for doc in sources.read_documents(path, text_field=f.text_field, stats=stats)
        )
        tok = train(texts, f.vocab_size, f.output, source=f.input)
        print(f"wrote {f.output}: {tok.vocab_size} tokens; read {stats.summary()}")

    cli.run(run, argv)


if __name__ == "__main__":
    main()
