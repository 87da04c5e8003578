"""Bringing only the new part of a gateway's logs to the controller.

A log file is known by its identity, a hash of its first line: it survives renaming, being
compressed by the rotation (`mail.log` -> `mail.log.20261203-170000.gz`) and being read on
another host, where inode numbers mean nothing. The controller keeps, per identity, a plain
copy of the file's lines and the offset reached in its uncompressed content. One cycle:

1. `known_offsets` on the controller: identity -> offset, from the cache's record.
2. `read_increments` on the gateway: for every file matching the patterns, the complete lines
   after the known offset, gzip-compressed into a chunk file to be copied.
3. `apply_increments` on the controller: each chunk is written at its offset into the copy
   (cut there first, so a repeated or interrupted cycle never doubles a line), copies follow
   renames, copies of files gone from the gateway are removed, and the record is rewritten.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansible_collections.campusnet.smtpguard.plugins.module_utils._logfiles import (
    LogFileError,
    expand_paths,
)

RECORD = ".increments.json"
RECORD_VERSION = 1
FIRST_LINE_LIMIT = 4096
BLOCK = 1 << 20


class IncrementError(Exception):
    """A cycle cannot fetch the logs; the message says what to check."""


@dataclass(frozen=True)
class Increment:
    name: str  # the file's name on the gateway
    identity: str
    offset: int  # where the chunk starts in the uncompressed content
    length: int  # bytes of complete lines in the chunk
    chunk: str | None  # the gzip file holding them, on the gateway; None when length is 0
    compressed: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def identity_of(path: Path) -> str | None:
    """The hash of the first line, or None while the file holds no complete line yet."""
    with _open(path) as stream:
        first = stream.readline(FIRST_LINE_LIMIT)
    if not first.endswith(b"\n"):
        return None
    return hashlib.sha256(first).hexdigest()[:32]


def _skip(stream, offset: int) -> int:
    """Move to `offset` in the uncompressed content; returns how far it got."""
    if hasattr(stream, "seek") and not isinstance(stream, gzip.GzipFile):
        stream.seek(offset)
        return stream.tell()
    left = offset
    while left:
        block = stream.read(min(left, BLOCK))
        if not block:
            break
        left -= len(block)
    return offset - left


def _copy_lines(stream, chunk: Path) -> int:
    """Copy what follows up to the last newline into a gzip file; returns the bytes copied."""
    copied, held = 0, b""
    with gzip.open(chunk, "wb", compresslevel=3) as out:
        while block := stream.read(BLOCK):
            block = held + block
            cut = block.rfind(b"\n") + 1
            out.write(block[:cut])
            copied += cut
            held = block[cut:]
    return copied


def read_increments(
    patterns: list[str], known: dict[str, int], *, spool: Path
) -> tuple[list[Increment], list[str]]:
    """On the gateway: the new complete lines of every matching file, one chunk a file."""
    warnings: list[str] = []
    try:
        families = expand_paths(patterns)
    except LogFileError as exc:
        raise IncrementError(str(exc)) from None
    files = [Path(log.path) for family in families for log in family.files]
    if not files:
        raise IncrementError(
            f"no file matches {', '.join(patterns)}; check fetch_logs_paths and that the "
            "account can read the logs"
        )
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    increments = []
    for path in files:
        identity = identity_of(path)
        if identity is None:
            continue
        offset = known.get(identity, 0)
        chunk = spool / f"{identity}.gz"
        with _open(path) as stream:
            reached = _skip(stream, offset)
            if reached < offset:
                warnings.append(
                    f"{path} is shorter than the {offset} bytes already fetched; "
                    "fetching it again from the start"
                )
                offset = 0
                stream.seek(0)
            length = _copy_lines(stream, chunk)
        if length == 0:
            chunk.unlink()
        increments.append(
            Increment(
                path.name,
                identity,
                offset,
                length,
                str(chunk) if length else None,
                path.suffix == ".gz",
            )
        )
    return increments, warnings


def _local_name(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


def load_record(dest: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((dest / RECORD).read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise IncrementError(
            f"{dest / RECORD} is damaged ({exc}); remove {dest} to fetch "
            "the logs again from the start"
        ) from None
    if data.get("version") != RECORD_VERSION:
        raise IncrementError(
            f"{dest / RECORD} has version {data.get('version')}, expected "
            f"{RECORD_VERSION}; remove {dest} to start again"
        )
    return data["files"]


def known_offsets(dest: Path) -> dict[str, int]:
    return {identity: entry["offset"] for identity, entry in load_record(dest).items()}


def apply_increments(dest: Path, increments: list[dict[str, Any]], *, chunks: Path) -> dict:
    """On the controller: write each fetched chunk into its copy, follow renames, forget
    files gone from the gateway; returns the copies' paths and what moved."""
    dest.mkdir(mode=0o750, parents=True, exist_ok=True)
    record = load_record(dest)
    staged = dest / ".staging"  # left over only by an interrupted cycle: its copies count
    staged.mkdir(mode=0o700, exist_ok=True)

    # Step aside first: a rotation gives the live name to a new file in the same cycle.
    for identity, entry in record.items():
        current = dest / entry["name"]
        if current.exists():
            current.rename(staged / identity)

    files, fetched = {}, 0
    for increment in increments:
        identity, offset = increment["identity"], increment["offset"]
        copy = staged / identity
        have = copy.stat().st_size if copy.exists() else 0
        if have < offset:
            raise IncrementError(
                f"{increment['name']}: the gateway sent lines from offset "
                f"{offset} but the copy in {dest} holds {have} bytes; remove "
                f"{dest} to fetch the logs again from the start"
            )
        with copy.open("r+b" if copy.exists() else "wb") as out:
            out.seek(offset)
            out.truncate()
            if increment["length"]:
                with gzip.open(chunks / f"{identity}.gz", "rb") as chunk:
                    shutil.copyfileobj(chunk, out, BLOCK)
            size = out.tell()
        if size != offset + increment["length"]:
            raise IncrementError(
                f"{increment['name']}: copy has {size} bytes, expected "
                f"{offset + increment['length']}"
            )
        fetched += increment["length"]
        name = _local_name(increment["name"])
        copy.rename(dest / name)
        files[identity] = {"name": name, "offset": size, "source": increment["name"]}

    gone = sorted(set(record) - set(files))
    shutil.rmtree(staged, ignore_errors=True)
    _write_record(dest, files)
    renamed = [
        f"{record[i]['name']} -> {files[i]['name']}"
        for i in files
        if i in record and record[i]["name"] != files[i]["name"]
    ]
    return {
        "paths": [str(dest / entry["name"]) for entry in files.values()],
        "fetched_bytes": fetched,
        "renamed": renamed,
        "forgotten": [record[identity]["name"] for identity in gone],
    }


def _write_record(dest: Path, files: dict[str, dict[str, Any]]) -> None:
    temporary = dest / (RECORD + ".tmp")
    temporary.write_text(json.dumps({"version": RECORD_VERSION, "files": files}, indent=1))
    os.replace(temporary, dest / RECORD)
