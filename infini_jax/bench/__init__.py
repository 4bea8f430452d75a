"""Benchmarks: scripts that print a table and write JSON; never timed tests."""

import json
from collections.abc import Iterable

from infini_jax import storage


def write_records(output: str, name: str, records: list[dict]) -> str:
    """Writes `records` as `output/name` (JSON; a local or gs:// directory); returns the path."""
    path = storage.join(output, name)
    storage.write_text(path, json.dumps(records, indent=1))
    return path


def find_record(records: Iterable[dict], bench: str, **match) -> dict | None:
    """The first record of `bench` whose fields equal `match` (e.g. attention="local"), or None."""
    for r in records:
        if r["bench"] == bench and all(r.get(k) == v for k, v in match.items()):
            return r
    return None
