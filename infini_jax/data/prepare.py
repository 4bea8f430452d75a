r"""Tokenize text once into ArrayRecord shards: parallel, deterministic, resumable.

  python -m infini_jax.data.prepare --input=GLOB --tokenizer=PATH --output=DIR [--workers=N]

Input file i (in sorted order) becomes `DIR/shard-<i>-of-<n>.array_record`: one record per
document, its token ids as little-endian int32, followed by EOS. A shard is written to a
temporary name and renamed when complete, so an interrupted run resumes by skipping finished
shards, and a reader never sees a half-written one. `DIR/manifest.json` records the inputs, the
tokenizer and what reading skipped. DIR and the inputs may be `gs://` paths: a shard is then
written on local disk and uploaded when complete (training reads shards from local disk or a
mounted bucket, see docs/data.md).
"""

import dataclasses
import json
import multiprocessing
import os
import sys
import tempfile

import numpy as np
from array_record.python import array_record_module
from tqdm import tqdm

from infini_jax import storage
from infini_jax.data import sources, tokenizer

DTYPE = "<i4"


def shard_name(i: int, n: int) -> str:
    return f"shard-{i:05d}-of-{n:05d}.array_record"


def decode_record(record: bytes) -> np.ndarray:
    return np.frombuffer(record, DTYPE)


def _write_shard(job) -> dict:
    index, n, path, tokenizer_path, output, fmt, text_field = job
    final = storage.join(output, shard_name(index, n))
    if storage.exists(final):
        return {"shard": final, "skipped": True}
    tok = tokenizer.load(tokenizer_path)
    stats = sources.ReadStats()
    staging = tempfile.mkdtemp(prefix="infini_jax_prepare_") if storage.is_remote(final) else ""
    tmp = os.path.join(staging, shard_name(index, n)) if staging else final + ".tmp"
    writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")  # grain: random access
    tokens = 0
    try:
        for doc in sources.read_documents(path, fmt, text_field, stats):
            ids = np.asarray(tok.encode(doc) + [tok.eos_id], DTYPE)
            writer.write(ids.tobytes())
            tokens += len(ids)
    except BaseException:  # an unreadable input: no half-written shard stays behind
        writer.close()
        os.remove(tmp)
        if staging:
            os.rmdir(staging)
        raise
    writer.close()
    if staging:  # one upload of the finished shard: an object appears whole or not at all
        storage.upload(tmp, final)
        os.remove(tmp)
        os.rmdir(staging)
    else:
        os.replace(tmp, final)
    return {"shard": final, "skipped": False, "tokens": tokens, **dataclasses.asdict(stats)}


def prepare(
    inputs: str,
    tokenizer_path: str,
    output: str,
    workers: int = 0,
    fmt: str | None = None,
    text_field: str = "text",
    progress: bool = True,
) -> dict:
    """Writes the shards and the manifest; returns the manifest."""
    paths = sources.expand(inputs)
    tokenizer.load(tokenizer_path)  # fail now, not in a worker
    output = storage.absolute(output)
    created = not storage.exists(output)
    storage.makedirs(output)
    try:
        return _write_all(paths, tokenizer_path, output, workers, fmt, text_field, progress)
    except BaseException:
        if created and not storage.listdir(output):  # failed before any shard: as it was
            storage.rmtree(output)
        raise


def _write_all(paths, tokenizer_path, output, workers, fmt, text_field, progress) -> dict:
    n = len(paths)
    jobs = [(i, n, p, tokenizer_path, output, fmt, text_field) for i, p in enumerate(paths)]
    workers = workers or min(n, os.cpu_count() or 1)
    results = []
    bar = tqdm(total=n, desc="prepare: files", unit="file", disable=not progress, file=sys.stderr)
    with bar:  # closed before an error line is printed
        if workers > 1:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for r in pool.imap(_write_shard, jobs):
                    results.append(r)
                    bar.update()
        else:
            for job in jobs:
                results.append(_write_shard(job))
                bar.update()
    manifest_path = storage.join(output, "manifest.json")
    previous = {}
    if storage.exists(manifest_path):
        saved = json.loads(storage.read_text(manifest_path))
        previous = {s["shard"]: s for s in saved.get("shards", [])}
    shards = [previous.get(r["shard"], r) if r["skipped"] else r for r in results]
    manifest = {
        "inputs": paths,
        "tokenizer": storage.absolute(tokenizer_path),
        "shards": shards,
        "format": "int32 token ids per record, EOS-terminated",
    }
    storage.write_text(manifest_path, json.dumps(manifest, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> None:
    from absl import flags

    from infini_jax import cli

    flags.DEFINE_string("input", None, "Glob(s) of input files, comma-separated.")
    flags.DEFINE_string("tokenizer", None, "sentencepiece .model, tokenizer.json or its dir.")
    flags.DEFINE_string("output", None, "Output directory for the shards.")
    flags.DEFINE_integer("workers", 0, "Processes (0 = one per core).", lower_bound=0)
    flags.DEFINE_enum("format", None, sources.FORMATS, "Force a format (default: by extension).")
    flags.DEFINE_string("text_field", "text", "JSONL / Parquet text field.")

    def run(_):
        f = flags.FLAGS
        cli.require("input", "tokenizer", "output")
        cli.writable(f.output, "output")
        manifest = prepare(f.input, f.tokenizer, f.output, f.workers, f.format, f.text_field)
        done = [s for s in manifest["shards"] if "tokens" in s]
        keys = (
            "documents",
            "tokens",
            "empty_files",
            "empty_documents",
            "bad_json_lines",
            "missing_field",
            "undecodable",
        )
        totals = {k: sum(s.get(k, 0) for s in done) for k in keys}
        print(
            f"wrote {len(manifest['shards'])} shards to {f.output} "
            f"({len(manifest['shards']) - len(done)} already done): "
            + ", ".join(f"{k}={v}" for k, v in totals.items())
        )

    cli.run(run, argv)


if __name__ == "__main__":
    main()
