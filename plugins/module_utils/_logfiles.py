"""Finding and opening gateway log files: globs, rotated families, transparent gzip."""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from itertools import chain
from typing import BinaryIO, Iterable, Iterator

GZIP_MAGIC = b"\x1f\x8b"
# The UTF-8 byte order mark some editors and Windows shippers put at the start of a file.
BOM = b"\xef\xbb\xbf"
# Compressions some rotations use (newsyslog's bzip2, xz, zstd) that the reader refuses.
_OTHER_COMPRESSION = (
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)

# How much of a file's beginning identifies its content across renames, copies and gzip.
HEAD_SIZE = 4096

# mail.log.3.gz, mail.log.1 (logrotate, newsyslog); mail.log.20261203-161500.gz (postfix
# logrotate); mail.log-20261203.gz (logrotate dateext).
_NUMBERED = re.compile(rb"^(?P<base>.+?)\.(?P<n>\d{1,4})$")
_DATED = re.compile(rb"^(?P<base>.+?)[.-](?P<stamp>\d{8}(?:[-_T]?\d{4,6})?)$")
# Cisco AsyncOS: mail_logs.@20261203T101530.s (saved at a rollover) and .c or .current (the one
# being written, started at its timestamp); mail_logs.current, where it is a link to that file.
_ASYNCOS = re.compile(rb"^(?P<base>.+?)\.@(?P<stamp>\d{8}T\d{6})\.(?:s|c|current)$")
_ASYNCOS_CURRENT = re.compile(rb"^(?P<base>.+?)\.current$")


class LogFileError(Exception):
    """A path that cannot be read as a log, with what to do about it."""


@dataclass
class LogFile:
    path: str
    mtime: float
    size: int
    order: tuple = ()
    device: int = 0
    inode: int = 0
    origin: bytes = b""  # its rotated family's log_origin()


@dataclass
class LogFamily:
    """The files of one log, oldest first: a rotated family continues one stream of lines."""

    base: str
    files: list[LogFile] = field(default_factory=list)


def expand_paths(patterns: Iterable[str]) -> list[LogFamily]:
    """Expand files and glob patterns into rotated families, each ordered oldest first.

    Raises LogFileError naming the first pattern that matches nothing or a path that is not
    a readable file.
    """
    seen: set[str] = set()
    files: list[LogFile] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches or (matches == [pattern] and not os.path.lexists(pattern)):
            if glob.has_magic(pattern):
                raise LogFileError(
                    f"the pattern {pattern!r} matches no file; check the path and that the logs "
                    "have been fetched to this host"
                )
            raise LogFileError(
                f"log file {pattern!r} does not exist; check the path and that the logs have "
                "been fetched to this host"
            )
        if glob.has_magic(pattern):
            # A pattern such as /var/log/mail* may also match a directory (/var/log/mail/).
            matches = [path for path in matches if not os.path.isdir(path)]
            if not matches:
                raise LogFileError(
                    f"the pattern {pattern!r} matches only directories; give a pattern that "
                    "matches the log files, such as a/directory/mail.log*"
                )
        for path in matches:
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            files.append(_stat(path))
    return _families(files)


def _stat(path: str) -> LogFile:
    if os.path.isdir(path):
        raise LogFileError(
            f"{path!r} is a directory; give the log file or a pattern such as {path}/mail.log*"
        )
    try:
        info = os.stat(path)
        with open(path, "rb") as handle:
            head = handle.read(6)
    except OSError as exc:
        raise LogFileError(f"cannot read log file {path!r}: {exc.strerror}") from None
    for magic, name in _OTHER_COMPRESSION:
        if head.startswith(magic):
            # Read as text it would look like junk lines, and its sessions would go unseen.
            raise LogFileError(
                f"log file {path!r} is compressed with {name}, which is not read; rotate with "
                f"gzip (or none), or leave the file out of the paths"
            )
    return LogFile(
        path=path, mtime=info.st_mtime, size=info.st_size, device=info.st_dev, inode=info.st_ino
    )


def _families(files: list[LogFile]) -> list[LogFamily]:
    families: dict[bytes, LogFamily] = {}
    for log in files:
        base, order = rotation_order(os.fsencode(log.path))
        log.order = order
        log.origin = log_origin(base)
        family = families.setdefault(base, LogFamily(base=os.fsdecode(base)))
        family.files.append(log)
    for family in families.values():
        family.files.sort(key=lambda log: log.order)
    return sorted(families.values(), key=lambda family: family.base)


def drop_copies(families: list[LogFamily]) -> tuple[list[LogFamily], list[tuple[str, str, bool]]]:
    """`families` without the files whose text (uncompressed) is the start of another file's:
    a copy under another name, compressed (mail.log.1 and mail.log.1.gz while logrotate
    compresses it), or one the log has grown past. Of two such files the one with more text
    is kept, of two equal ones the first; returns (copy, kept, equal) of each left out. A file
    counts as a copy only when its whole text was compared, not its first HEAD_SIZE bytes
    alone. The same path twice and symlinks are left out already by expand_paths."""
    heads = []
    for place, log in enumerate(log for family in families for log in family.files):
        if not log.size:
            continue
        try:
            head = _head(log.path)
        except OSError:
            continue  # reading it says what is wrong
        if head:
            heads.append((head, place, log))
    # Sorted by their first bytes, the files whose text may begin with a file's follow it.
    heads.sort(key=lambda entry: (entry[0], entry[1]))
    dropped: set[str] = set()
    copies: list[tuple[str, str, bool]] = []
    for index, (head, place, log) in enumerate(heads):
        for other_head, other_place, other in heads[index + 1 :]:
            if log.path in dropped or not other_head.startswith(head):
                break
            if other.path in dropped:
                continue
            try:
                order = _text_order(log.path, other.path)
            except OSError:
                continue  # reading it says what is wrong
            if order is None:
                continue
            if order > 0 or (order == 0 and other_place > place):
                dropped.add(other.path)  # `log` holds all of `other`'s text
                copies.append((other.path, log.path, order == 0))
            else:
                dropped.add(log.path)
                copies.append((log.path, other.path, order == 0))
    for family in families:
        family.files = [log for log in family.files if log.path not in dropped]
    return [family for family in families if family.files], copies


def _head(path: str) -> bytes:
    """The first HEAD_SIZE bytes of a log's text (uncompressed); of a damaged gzip, those read."""
    head = b""
    with open_log(path) as handle:
        while len(head) < HEAD_SIZE:
            chunk = _chunk(handle, 512)
            if not chunk:
                break
            head += chunk
    return head[:HEAD_SIZE]


def _text_order(first: str, second: str) -> int | None:
    """Compare two logs' texts (uncompressed; a damaged gzip's is what it holds before the
    damage, see `_chunk`): -1 when `first`'s is the start of `second`'s, 0 when they are
    equal, 1 when `second`'s is the start of `first`'s, None when neither begins the other."""
    with open_log(first) as one, open_log(second) as two:
        left = right = b""
        while True:
            if not left:
                left = _chunk(one)
            if not right:
                right = _chunk(two)
            if not left or not right:
                return (0 if not right else -1) if not left else 1
            size = min(len(left), len(right))
            if left[:size] != right[:size]:
                return None
            left, right = left[size:], right[size:]


def _chunk(handle: BinaryIO, size: int = 1 << 16) -> bytes:
    """The next bytes of a log's text; none at its end, or where a damaged or half-written gzip
    breaks off (the text of the read that failed, up to `size`, is not had)."""
    try:
        return handle.read(size)
    except (EOFError, gzip.BadGzipFile, zlib.error):
        return b""


def log_origin(base: bytes) -> bytes:
    """What names one log in the session keys of its lines that name no host (see
    `Engine.origin`): a digest of where its rotated family (`base`) lies, the same from run to
    run."""
    place = os.path.realpath(base)
    return b"log:" + hashlib.sha256(place).hexdigest()[:16].encode("ascii")


def rotation_order(path: bytes) -> tuple[bytes, tuple]:
    """The family a file belongs to and its place in it (smaller is older).

    Dated rotations (AsyncOS's rollovers among them) sort by date, numbered ones by number
    (higher is older), and the live file, without a suffix, comes last.
    """
    name = path[:-3] if path.endswith(b".gz") else path
    asyncos = _ASYNCOS.match(name)
    if asyncos:
        return asyncos.group("base"), (0, int(asyncos.group("stamp").replace(b"T", b"")))
    current = _ASYNCOS_CURRENT.match(name)
    if current:
        return current.group("base"), (2, 0)
    dated = _DATED.match(name)
    if dated:
        stamp = re.sub(rb"\D", b"", dated.group("stamp")).ljust(14, b"0")
        return dated.group("base"), (0, int(stamp))
    numbered = _NUMBERED.match(name)
    if numbered:
        return numbered.group("base"), (1, -int(numbered.group("n")))
    return name, (2, 0)


def open_log(path: str) -> BinaryIO:
    """Open a log for reading bytes; gzip is recognised by its magic number, not its name."""
    handle = open(path, "rb")
    if handle.read(2) == GZIP_MAGIC:
        handle.close()
        # gzip.open owns the file it opens and closes it with the reader.
        return gzip.open(path, "rb")  # type: ignore[return-value]
    handle.seek(0)
    return handle


def without_bom(lines: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a file read from its start, with a byte order mark taken off the first:
    left there, it would make the first line unreadable in every format."""
    rest = iter(lines)
    first = next(rest, None)
    if first is None:
        return rest
    return chain((first[len(BOM) :] if first.startswith(BOM) else first,), rest)


class ReadPosition:
    """Where reading a log ended: the offset (in the uncompressed text) just after the last
    line read."""

    def __init__(self, handle: BinaryIO, stop: int | None):
        self._handle = handle
        self._stop = stop

    def offset(self) -> int:
        return self._stop if self._stop is not None else self._handle.tell()


class _Slice(io.RawIOBase):
    """The bytes of an open file up to `stop`, for a buffered reader."""

    def __init__(self, raw: BinaryIO, stop: int):
        self._raw = raw
        self._left = stop - raw.tell()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        with memoryview(buffer) as view:
            count = self._raw.readinto(view[: self._left]) or 0
        self._left -= count
        return count

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_log_from(path: str, *, start: int) -> tuple[BinaryIO, ReadPosition]:
    """Open a log to read on from `start`, as far as the last whole line written by now.

    A line still being written (no newline yet) is left for the next reader, so that a later
    run, going on from the returned position, reads it whole. A gzip file is finished: it is
    read to its end.
    """
    raw = open(path, "rb", buffering=0)
    try:
        if raw.read(2) == GZIP_MAGIC:
            raw.close()
            unpacked = gzip.open(path, "rb")
            try:
                unpacked.seek(start)
            except BaseException:
                unpacked.close()
                raise
            return unpacked, ReadPosition(unpacked, None)  # type: ignore[return-value]
        stop = _end_of_last_line(raw, start)
        raw.seek(start)
        reader = io.BufferedReader(_Slice(raw, stop), buffer_size=1 << 20)
    except BaseException:
        raw.close()
        raise
    return reader, ReadPosition(reader, stop)  # type: ignore[arg-type]


def _end_of_last_line(handle: BinaryIO, start: int) -> int:
    end = handle.seek(0, os.SEEK_END)
    position = end
    while position > start:
        block = min(65536, position - start)
        handle.seek(position - block)
        newline = handle.read(block).rfind(b"\n")
        if newline >= 0:
            return position - block + newline + 1
        position -= block
    return start


def head_digest(path: str, length: int) -> str:
    """A digest of the first `length` bytes of a log's text (uncompressed)."""
    with open_log(path) as handle:
        try:
            data = handle.read(length)
        except (OSError, EOFError):
            data = b""
    return hashlib.sha256(data).hexdigest()


def gzip_trailer_size(path: str) -> int | None:
    """What a gzip file's trailer says of its text's length (of its last member, modulo
    2**32), -1 for a damaged one; None for a file that is not gzip."""
    with open(path, "rb") as handle:
        if handle.read(2) != GZIP_MAGIC:
            return None
        size = handle.seek(0, os.SEEK_END)
        if size < 18:  # shorter than a gzip header and trailer
            return -1
        handle.seek(-4, os.SEEK_END)
        return struct.unpack("<I", handle.read(4))[0]


def tail_lines(path: str, *, size: int = 65536) -> list[bytes]:
    """The last lines of a log, newest last; a gzip file is read whole."""
    with open_log(path) as handle:
        if isinstance(handle, gzip.GzipFile):
            last: list[bytes] = []
            try:
                for line in without_bom(handle):
                    last.append(line)
                    if len(last) > 256:
                        del last[:128]
            except (OSError, EOFError):
                pass  # a truncated .gz: its newest readable lines are those before the damage
            return [line.rstrip(b"\n") for line in last if line.strip()]
        handle.seek(0, os.SEEK_END)
        end = handle.tell()
        handle.seek(max(0, end - size))
        data = handle.read()
    lines = data.split(b"\n")
    if end > size:
        lines = lines[1:]
    elif lines[0].startswith(BOM):
        lines[0] = lines[0][len(BOM) :]
    return [line for line in lines if line]
