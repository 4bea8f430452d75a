"""Benchmarks: scripts that print a table and write JSON; never timed tests."""

import json

from infini_jax import storage


def write_records(output: str, name: str, records: list[dict]) -> str:
    """Writes `records` as `output/name` (JSON; a local or gs:// directory); returns the path."""
    path = storage.join(output, name)
    storage.write_text(path, json.dumps(records, indent=1))
    return path
