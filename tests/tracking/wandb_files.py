"""Reading W&B's offline run files back, with W&B's own protobuf classes (W&B has no public reader of them)."""

import json
import struct


def wandb_records(path):
    """The records of a W&B run file (``run-<id>.wandb``), parsed with W&B's own protobuf classes.

    The file is W&B's transaction log: a 7-byte header (``:W&B``, magic, version), then LevelDB's log format (32 KiB
    blocks of chunks, each a 7-byte header: CRC32, little-endian length, type FULL=1 FIRST=2 MIDDLE=3 LAST=4)."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending, out = 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending, pos = pending + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
        elif kind == 0:  # zero padding to the block's end
            pos += (block - pos % block) % block
    return out


def wandb_history(run_dir):
    """``(run records, [{key: value}] history rows, {key: value} summary)`` over every offline start of the run, in
    the order they started."""
    runs, rows, summary = [], [], {}
    for folder in sorted((run_dir / "wandb").glob("offline-run-*")):
        for record in wandb_records(next(folder.glob("run-*.wandb"))):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                runs.append(record.run)
            elif kind == "history":
                rows.append(_items(record.history.item))
            elif kind == "summary":
                summary.update(_items(record.summary.update))
    return runs, rows, summary


def _items(items):
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}
