"""Reading a W&B offline run folder in tests: the records of its ``.wandb`` file (the LevelDB-style log
wandb writes: a 7-byte header, 32 KiB blocks of records, each a 7-byte header + payload, long payloads
split FIRST/MIDDLE/LAST) parsed with wandb's own protobuf ``Record``."""

import json
import struct
from pathlib import Path

_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, partial = 7, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            payload = chunk
        elif kind == _FIRST:
            partial = chunk
            continue
        elif kind == _MIDDLE:
            partial += chunk
            continue
        else:
            payload, partial = partial + chunk, b""
        record = pb.Record()
        record.ParseFromString(payload)
        yield record


def offline_run(run_dir: Path) -> Path:
    folders = sorted((Path(run_dir) / "wandb").glob("offline-run-*"))
    assert folders, f"no offline W&B run under {run_dir}"
    return folders[-1]


def history_keys(folder: Path) -> dict[str, dict]:
    """Every logged history key (nested keys joined by '/') -> its last JSON value."""
    out = {}
    for record in records(next(folder.glob("*.wandb"))):
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                out[key] = json.loads(item.value_json) if item.value_json else None
    return out


def artifacts(folder: Path) -> list:
    return [r.artifact for r in records(next(folder.glob("*.wandb"))) if r.WhichOneof("record_type") == "artifact"]
