"""Benchmarks: scripts that print a table and write JSON; never timed tests."""

import json
import os


def write_records(output: str, name: str, records: list[dict]) -> str:
    """Writes `records` as `output/name` (JSON, created directory); returns the path."""
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, name)
    with open(path, "w") as f:
        json.dump(records, f, indent=1)
    return path
