"""Reading documents from files: plain text, JSONL, Parquet; globs and lists of paths (local
or gs://).

Bad input policy (documented in docs/data.md, tested in tests/test_data_sources.py):
- a pattern that matches nothing, a missing file, a truncated/corrupt Parquet file: stop with
  one `DataError` line naming the file;
- an empty file, an empty document, a JSONL line that is not JSON or lacks the text field:
  skipped and counted in `ReadStats` (logged; nothing is dropped silently);
- non-UTF-8 bytes: decoded with replacement characters and counted.
"""

import dataclasses
import json
from collections.abc import Iterator, Sequence

from infini_jax import storage
from infini_jax.errors import DataError

FORMATS = ("text", "jsonl", "parquet")


@dataclasses.dataclass
class ReadStats:
    """Counts of what reading skipped or repaired."""

    files: int = 0
    documents: int = 0
    empty_files: int = 0
    empty_documents: int = 0
    bad_json_lines: int = 0
    missing_field: int = 0
    undecodable: int = 0

    def summary(self) -> str:
        fields = dataclasses.asdict(self)
        return ", ".join(f"{k}={v}" for k, v in fields.items())


def expand(patterns: str | Sequence[str]) -> list[str]:
    """Comma-separated or listed globs → sorted file paths; a pattern matching nothing fails."""
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p]
    paths = []
    for pattern in patterns:
        found = storage.glob(pattern) if storage.has_magic(pattern) else [pattern]
        if not found:
            raise DataError(f"input pattern {pattern} matches no file; check the path")
        for path in found:
            if not storage.isfile(path):
                raise DataError(f"input file {path} does not exist")
        paths.extend(found)
    return paths


def guess_format(path: str) -> str:
    if path.endswith((".jsonl", ".json")):
        return "jsonl"
    if path.endswith(".parquet"):
        return "parquet"
    return "text"


def _decode(raw: bytes, stats: ReadStats) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        stats.undecodable += 1
        return raw.decode("utf-8", errors="replace")


def read_documents(
    path: str, fmt: str | None = None, text_field: str = "text", stats: ReadStats | None = None
) -> Iterator[str]:
    """Yields the non-empty documents of one file.

    `text`: one document per file when the file has no blank line, else documents separated by
    blank lines (a document may be hundreds of MB on one line; it is read as one string).
    `jsonl`: one JSON object per line, the document in `text_field`. `parquet`: the
    `text_field` column, read one row group at a time.
    """
    stats = stats if stats is not None else ReadStats()
    fmt = fmt or guess_format(path)
    if fmt not in FORMATS:
        raise DataError(f"format {fmt!r} of {path} is not one of {FORMATS}")
    if not storage.isfile(path):
        raise DataError(f"input file {path} does not exist")
    stats.files += 1
    if storage.path(path).stat().length == 0:
        stats.empty_files += 1
        return
    if fmt == "parquet":
        yield from _parquet(path, text_field, stats)
        return
    with storage.open(path, "rb") as f:
        if fmt == "jsonl":
            for raw in f:
                if not raw.strip():
                    continue
                try:
                    record = json.loads(_decode(raw, stats))
                except json.JSONDecodeError:
                    stats.bad_json_lines += 1
                    continue
                text = record.get(text_field) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    stats.missing_field += 1
                    continue
                yield from _count(text, stats)
            return
        text = _decode(f.read(), stats)
    for doc in text.split("\n\n"):
        yield from _count(doc.strip("\n"), stats)


def _count(text: str, stats: ReadStats) -> Iterator[str]:
    if text.strip():
        stats.documents += 1
        yield text
    else:
        stats.empty_documents += 1


def _parquet(path: str, text_field: str, stats: ReadStats) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = storage.open(path, "rb")
        reader = pq.ParquetFile(file)
        if text_field not in reader.schema_arrow.names:
            raise DataError(
                f"parquet file {path} has no column {text_field!r}; "
                f"its columns are {reader.schema_arrow.names}; set the text field"
            )
        for group in range(reader.num_row_groups):
            column = reader.read_row_group(group, columns=[text_field]).column(0)
            for text in column.to_pylist():
                if text is None:
                    stats.missing_field += 1
                    continue
                if isinstance(text, bytes):
                    text = _decode(text, stats)
                yield from _count(text, stats)
        file.close()
    except (pa.ArrowException, OSError) as e:
        raise DataError(
            f"parquet file {path} is truncated or corrupt ({e}); "
            "re-export it or remove it from the input"
        ) from None
