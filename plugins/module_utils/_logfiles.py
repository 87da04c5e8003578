"""Finding and opening gateway log files: globs, rotated families, transparent gzip."""

from __future__ import annotations

import glob
import gzip
import os
import re
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable

GZIP_MAGIC = b"\x1f\x8b"

# mail.log.3.gz, mail.log.1 (logrotate, newsyslog); mail.log.20261203-161500.gz (postfix
# logrotate); mail.log-20261203.gz (logrotate dateext).
_NUMBERED = re.compile(rb"^(?P<base>.+?)\.(?P<n>\d{1,4})$")
_DATED = re.compile(rb"^(?P<base>.+?)[.-](?P<stamp>\d{8}(?:[-_T]?\d{4,6})?)$")


class LogFileError(Exception):
    """A path that cannot be read as a log, with what to do about it."""


@dataclass
class LogFile:
    path: str
    mtime: float
    size: int
    order: tuple = ()


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
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise LogFileError(f"cannot read log file {path!r}: {exc.strerror}") from None
    return LogFile(path=path, mtime=info.st_mtime, size=info.st_size)


def _families(files: list[LogFile]) -> list[LogFamily]:
    families: dict[bytes, LogFamily] = {}
    for log in files:
        base, order = rotation_order(os.fsencode(log.path))
        log.order = order
        family = families.setdefault(base, LogFamily(base=os.fsdecode(base)))
        family.files.append(log)
    for family in families.values():
        family.files.sort(key=lambda log: log.order)
    return sorted(families.values(), key=lambda family: family.base)


def rotation_order(path: bytes) -> tuple[bytes, tuple]:
    """The family a file belongs to and its place in it (smaller is older).

    Dated rotations sort by date, numbered ones by number (higher is older), and the live
    file, without a suffix, comes last.
    """
    name = path[:-3] if path.endswith(b".gz") else path
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


def tail_lines(path: str, *, size: int = 65536) -> list[bytes]:
    """The last lines of a log, newest last; a gzip file is read whole."""
    with open_log(path) as handle:
        if isinstance(handle, gzip.GzipFile):
            last: list[bytes] = []
            try:
                for line in handle:
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
    return [line for line in lines if line]
