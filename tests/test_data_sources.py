"""Bad input: each case is skipped and counted, or stops with one line naming the file."""

import hashlib
import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infini_jax.data import pipeline, prepare, sources, tokenizer
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tok") / "t.model")
    return tokenizer.train(tokenizer.synthetic_texts(seed=0, n=300), 320, path, progress=False)


def read(path, **kw):
    stats = sources.ReadStats()
    return list(sources.read_documents(str(path), stats=stats, **kw)), stats


def test_text_documents_empty_files_and_empty_documents_are_counted(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    docs, stats = read(tmp_path / "empty.txt")
    assert docs == [] and stats.empty_files == 1
    (tmp_path / "docs.txt").write_text("first doc\nline two\n\n\n\n  \n\nsecond doc\n")
    docs, stats = read(tmp_path / "docs.txt")
    assert docs == ["first doc\nline two", "second doc"]
    assert stats.documents == 2 and stats.empty_documents == 2


def test_non_utf8_bytes_are_replaced_and_counted(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    docs, stats = read(tmp_path / "latin1.txt")
    assert docs == ["caf\ufffd au lait"] and stats.undecodable == 1


def test_a_huge_single_line_document_is_read_whole(tmp_path):
    line = b"abcdefghij" * 20_000_000  # 200 MB, no newline
    (tmp_path / "huge.txt").write_bytes(line)
    docs, stats = read(tmp_path / "huge.txt")
    assert len(docs) == 1 and len(docs[0]) == len(line) and stats.documents == 1


def test_jsonl_missing_field_and_bad_lines_are_counted(tmp_path):
    lines = [
        json.dumps({"text": "one"}),
        json.dumps({"body": "no text"}),
        "{not json",
        json.dumps({"text": ""}),
        json.dumps(["a", "list"]),
        json.dumps({"text": "two"}),
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    docs, stats = read(tmp_path / "d.jsonl")
    assert docs == ["one", "two"]
    assert (stats.missing_field, stats.bad_json_lines, stats.empty_documents) == (2, 1, 1)
    docs, _ = read(tmp_path / "d.jsonl", text_field="body")
    assert docs == ["no text"]


def test_parquet_is_read_and_bad_parquet_names_the_file(tmp_path):
    table = pa.table({"text": ["doc a", None, "doc b", ""], "n": [1, 2, 3, 4]})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=2)
    docs, stats = read(tmp_path / "d.parquet")
    assert docs == ["doc a", "doc b"] and stats.missing_field == 1 and stats.empty_documents == 1
    with pytest.raises(sources.DataError, match=r"d.parquet has no column 'body'"):
        read(tmp_path / "d.parquet", text_field="body")
    data = (tmp_path / "d.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        sources.DataError, match=r"parquet file .*cut.parquet is truncated or corrupt"
    ):
        read(tmp_path / "cut.parquet")


def test_globs_that_match_nothing_and_missing_files_are_errors(tmp_path):
    with pytest.raises(sources.DataError, match=r"input pattern .*nothing-\*.txt matches no file"):
        sources.expand(str(tmp_path / "nothing-*.txt"))
    with pytest.raises(sources.DataError, match=r"input file .*absent.txt does not exist"):
        sources.expand(str(tmp_path / "absent.txt"))
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.txt").write_text("y")
    assert sources.expand(f"{tmp_path}/b.txt,{tmp_path}/*.txt") == [
        str(tmp_path / "b.txt"),
        str(tmp_path / "a.txt"),
        str(tmp_path / "b.txt"),
    ]


def _digest(directory):
    return {
        name: hashlib.sha256(open(os.path.join(directory, name), "rb").read()).hexdigest()
        for name in sorted(os.listdir(directory))
        if name.endswith(".array_record")
    }


def _corpus(tmp_path, n=4):
    for i in range(n):
        (tmp_path / f"in{i}.txt").write_text(
            "\n\n".join(f"document {i}-{j} " + "word " * (j + 1) for j in range(20))
        )


def test_prepare_is_deterministic_parallel_and_resumable(tok, tmp_path):
    _corpus(tmp_path)
    one = str(tmp_path / "one")
    prepare.prepare(str(tmp_path / "in*.txt"), tok.path, one, workers=1, progress=False)
    two = str(tmp_path / "two")
    prepare.prepare(str(tmp_path / "in*.txt"), tok.path, two, workers=2, progress=False)
    assert _digest(one) == _digest(two) and len(_digest(one)) == 4
    # Interrupted run: one shard missing, one half-written temporary left behind.
    os.remove(os.path.join(two, prepare.shard_name(2, 4)))
    with open(os.path.join(two, prepare.shard_name(3, 4)) + ".tmp", "wb") as f:
        f.write(b"partial")
    os.remove(os.path.join(two, prepare.shard_name(3, 4)))
    manifest = prepare.prepare(str(tmp_path / "in*.txt"), tok.path, two, workers=1, progress=False)
    assert _digest(one) == _digest(two)
    assert sum(s["documents"] for s in manifest["shards"]) == 80


def test_corrupt_or_missing_array_record_names_the_file(tok, tmp_path):
    _corpus(tmp_path, n=1)
    out = str(tmp_path / "shards")
    prepare.prepare(str(tmp_path / "in*.txt"), tok.path, out, workers=1, progress=False)
    shard = os.path.join(out, prepare.shard_name(0, 1))
    data = open(shard, "rb").read()
    with open(shard, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(sources.DataError, match=r"shard-00000-of-00001.array_record is truncated"):
        pipeline.array_record_source(os.path.join(out, "*.array_record"))
    with pytest.raises(sources.DataError, match=r"matches no ArrayRecord shard"):
        pipeline.array_record_source(str(tmp_path / "none" / "*.array_record"))


def test_prepare_cli_bad_input_is_one_line(tok, tmp_path):
    def prepare_cli(*args):
        return run_cli("infini_jax.data.prepare", *args, f"--output={tmp_path}/o")

    r = prepare_cli(f"--input={tmp_path}/zzz*.txt", f"--tokenizer={tok.path}")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert re.search(r"error: input pattern .*zzz\*.txt matches no file", r.stderr)
    (tmp_path / "x.txt").write_text("hello")
    r = prepare_cli(f"--input={tmp_path}/x.txt", f"--tokenizer={tmp_path}/missing.model")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert re.search(r"error: tokenizer file .*missing.model does not exist", r.stderr)
    assert not os.path.exists(tmp_path / "o")  # nothing written before the error
    r = prepare_cli(f"--input={tmp_path}/x.txt", f"--tokenizer={tok.path}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "documents=1" in r.stdout
    ids = pipeline.decode_record(pipeline.array_record_source(f"{tmp_path}/o/*.array_record")[0])
    assert ids[-1] == tok.eos_id and tok.decode(ids[:-1]) == "hello"
    assert ids.dtype == np.dtype("<i4")
