"""Reading W&B's ``run-<id>.wandb`` transaction log (32 KiB blocks of CRC-checked chunks of
protobuf ``Record`` messages, parsed with wandb's own ``wandb_internal_pb2``), and finding
the run files a path stands for."""

import glob
import os
import struct
import zlib
from typing import Any, Dict, Iterator, List, Optional

# ------------------------------------------------------------------ the .wandb log format

_HEADER = struct.Struct("<4sHB")  # ident ":W&B", magic 0xBEE1, version 0
_CHUNK = struct.Struct("<IHB")  # crc32 of (type byte + data), length, type
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
# W&B seeds each chunk's CRC-32 with the CRC of its type byte.
_TYPE_CRC = [zlib.crc32(bytes([t])) & 0xFFFFFFFF for t in range(_LAST + 1)]


class WandbFileError(Exception):
    """The file is not a readable W&B transaction log (message names file and offset)."""


def read_records(path: str, progress=None, stats: Optional[Dict[str, int]] = None) -> Iterator[Any]:
    """Yield the protobuf ``Record`` messages of a ``.wandb`` file, in order, block by block
    (memory stays flat whatever the file's size).

    Raises :class:`WandbFileError` at the first corrupt chunk (records before it have been
    yielded).  A file that ends inside a record (the run is still being written, or its
    process was killed mid-write) simply ends: what was complete is yielded.
    ``progress(n)`` is called with the bytes consumed; ``stats["unfinished_bytes"]`` is set
    to the size of such an unfinished tail (0 when the file ends on a record boundary).
    """
    pb = _wandb_proto()
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(_HEADER.size)
        if len(head) < _HEADER.size:
            raise WandbFileError(f"{path}: {size} bytes, too short for a W&B run file")
        ident, magic, version = _HEADER.unpack(head)
        if ident != b":W&B" or magic != 0xBEE1 or version != 0:
            raise WandbFileError(f"{path}: not a W&B run file (header {head!r})")
        base = _HEADER.size  # file offset of ``block``'s first byte
        block = fh.read(_BLOCK - base)
        parts: List[bytes] = []
        start = done = reported = base
        unfinished = False
        while block:
            full = base % _BLOCK + len(block) == _BLOCK  # a complete block, not the file's tail
            pos, n = 0, len(block)
            while pos + _CHUNK.size <= n:
                crc, length, kind = _CHUNK.unpack_from(block, pos)
                if kind == 0 and length == 0 and crc == 0:
                    break  # zeroes to the end of the block
                end = pos + _CHUNK.size + length
                if end > n:
                    if full:
                        raise WandbFileError(f"{path}: corrupt record at byte {base + pos} (length past its block)")
                    unfinished = True  # the tail of an unfinished write
                    break
                chunk = block[pos + _CHUNK.size:end]
                if kind > _LAST or zlib.crc32(chunk, _TYPE_CRC[kind]) & 0xFFFFFFFF != crc:
                    raise WandbFileError(f"{path}: corrupt record at byte {base + pos} (checksum mismatch)")
                if kind == _FULL or kind == _FIRST:
                    if parts:
                        raise WandbFileError(f"{path}: corrupt record at byte {base + pos} (a record's end is missing)")
                    start = base + pos
                elif not parts:
                    raise WandbFileError(f"{path}: corrupt record at byte {base + pos} (a record's start is missing)")
                parts.append(chunk)
                pos = end
                if kind == _FULL or kind == _LAST:
                    record = pb.Record()
                    try:
                        record.ParseFromString(b"".join(parts))
                    except Exception as exc:  # protobuf's DecodeError
                        raise WandbFileError(f"{path}: record at byte {start} is not a W&B record ({exc})") from None
                    parts = []
                    done = base + pos
                    yield record
            if not full and pos < n and any(block[pos:]):
                unfinished = True  # a chunk header cut short
            if progress is not None:
                progress(base + len(block) - reported)
                reported = base + len(block)
            base += len(block)
            block = fh.read(_BLOCK)
    if parts:
        unfinished = True
    if stats is not None:
        stats["unfinished_bytes"] = size - done if unfinished else 0


def _wandb_proto():
    try:
        from wandb.proto import wandb_internal_pb2
    except ImportError as exc:
        raise MissingWandb(str(exc)) from None
    return wandb_internal_pb2


class MissingWandb(Exception):
    pass


# ----------------------------------------------------------------------- finding runs


def find_run_files(path: str) -> List[str]:
    """The ``.wandb`` files PATH stands for: a file, a run directory, or a ``wandb/`` directory.

    Raises ``FileNotFoundError`` / ``WandbFileError`` with a message for the user.
    """
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    own = sorted(glob.glob(os.path.join(path, "run-*.wandb")))
    if own:
        return own
    runs = []
    for root in (path, os.path.join(path, "wandb")):
        for run_dir in sorted(glob.glob(os.path.join(root, "*run-*"))):
            # latest-run is a symlink to one of the others: skip it, the run is there once.
            if os.path.islink(run_dir) or not os.path.isdir(run_dir):
                continue
            runs.extend(sorted(glob.glob(os.path.join(run_dir, "run-*.wandb"))))
        if runs:
            return runs
    raise WandbFileError(f"{path}: no W&B run here (expected run-*.wandb, a wandb/offline-run-* or "
                         "wandb/run-* directory, or a wandb/ directory holding them)")
