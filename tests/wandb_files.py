"""Reads an offline W&B run's `run-<id>.wandb` file back (tests only).

The file is W&B's record log: a 7-byte header (":W&B", a 2-byte magic, a version byte), then
32 KiB blocks of LevelDB-log-style chunks (a CRC-32 of the type byte and data, a 2-byte length,
a type byte: 1 full, 2 first, 3 middle, 4 last), whose payloads are W&B's own
`wandb_internal_pb2.Record` protobufs.
"""

import glob
import json
import os
import struct
import zlib

BLOCK = 32 * 1024
HEADER = 7


def records(path: str) -> list:
    """Every record of the file, in order (checksums verified)."""
    from wandb.proto import wandb_internal_pb2

    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, payload, out = HEADER, b"", []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        assert zlib.crc32(bytes([kind]) + chunk) == crc, f"{path}: bad checksum at {pos}"
        pos += HEADER + length
        payload += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            out.append(record)
            payload = b""
    return out


def runs(files_dir: str) -> list[dict]:
    """The offline runs under `files_dir`/wandb, oldest first: per run its id, config and
    history rows ({step: {key: value}})."""
    out = []
    for path in sorted(glob.glob(os.path.join(files_dir, "wandb", "offline-run-*", "*.wandb"))):
        run = {"path": path, "id": None, "config": {}, "history": {}}
        for r in records(path):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                run["id"] = r.run.run_id
                run["config"] |= {u.key: json.loads(u.value_json) for u in r.run.config.update}
            elif kind == "config":
                run["config"] |= {u.key: json.loads(u.value_json) for u in r.config.update}
            elif kind == "history":
                row = {}
                for item in r.history.item:  # a nested key (media) becomes nested dicts
                    *parents, name = list(item.nested_key) or [item.key]
                    node = row
                    for part in parents:
                        node = node.setdefault(part, {})
                    node[name] = json.loads(item.value_json)
                run["history"][row["_step"]] = row
        out.append(run)
    return out
