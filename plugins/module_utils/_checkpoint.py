"""What an analysis carries to the next run, so that it reads only the lines written since.

The checkpoint (flood_analyze's `state_path`) holds, for every file read, its identity
(device + inode, and a digest of its first bytes) and how far it was read, and the engine's
state at that point: the open sessions, the sessions that ended inside the window, the first
time of each gateway's log, the postscreen ranks and the counters. A later run that finds the
same files, grown at their ends or joined by newer files of their rotated families, reads on
from there; its result is the one a full read of the files would give. Anything else (a file
gone, shortened or rewritten, an older file added, another format, time zone or year, servers
set or unset, a window reaching further back, a `now` before the last run's) falls back to a
full read.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field

from ansible_collections.campusnet.smtpguard.plugins.module_utils._engine import Engine
from ansible_collections.campusnet.smtpguard.plugins.module_utils._logfiles import (
    HEAD_SIZE,
    LogFamily,
    LogFile,
    gzip_trailer_size,
    head_digest,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import SessionBook

VERSION = 2


class CheckpointError(Exception):
    """A checkpoint that cannot be written, naming the path and the cause."""


@dataclass
class Mark:
    """One file, as far as it was read: `offset` in its (uncompressed) text."""

    path: str
    device: int
    inode: int
    size: int
    mtime: float
    head: str
    head_length: int
    offset: int
    first: float | None
    origin: str = ""  # LogFile.origin: the log whose family it was read in


@dataclass
class Reading:
    """A file to read in this run, from `start`; `mark` is how far an earlier run read it."""

    log: LogFile
    start: int = 0
    mark: Mark | None = None
    pending: bool = True  # False: nothing new in it since it was read


@dataclass
class Checkpoint:
    settings: dict
    now: float
    window_start: float
    marks: list[Mark] = field(default_factory=list)
    book: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    ranks: dict = field(default_factory=dict)
    bad_addresses: list[str] = field(default_factory=list)
    servers: dict = field(default_factory=dict)  # the book of gateway-to-server sessions
    engine: dict = field(default_factory=dict)  # Engine.capture()


def load(path: str) -> tuple[Checkpoint | None, str]:
    """The checkpoint at `path`, or None and why it cannot be used."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None, "no state yet"
    except (OSError, ValueError) as exc:
        return None, f"state {path!r} is unreadable ({exc}); reading everything"
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return None, f"state {path!r} is of another version; reading everything"
    try:
        marks = [Mark(**mark) for mark in data["marks"]]
        checkpoint = Checkpoint(
            settings=data["settings"],
            now=float(data["now"]),
            window_start=float(data["window_start"]),
            marks=marks,
            book=data["book"],
            stats=data["stats"],
            ranks=data["ranks"],
            bad_addresses=data["bad_addresses"],
            servers=data["servers"],
            engine=data["engine"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"state {path!r} is incomplete ({exc}); reading everything"
    return checkpoint, ""


def save(path: str, checkpoint: Checkpoint) -> None:
    """Write the checkpoint atomically (mode 0600)."""
    # Built by hand: asdict() would deep-copy every session.
    data = {
        "version": VERSION,
        "settings": checkpoint.settings,
        "now": checkpoint.now,
        "window_start": checkpoint.window_start,
        "marks": [asdict(mark) for mark in checkpoint.marks],
        "book": checkpoint.book,
        "stats": checkpoint.stats,
        "ranks": checkpoint.ranks,
        "bad_addresses": checkpoint.bad_addresses,
        "servers": checkpoint.servers,
        "engine": checkpoint.engine,
    }
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".state-")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                # dumps() encodes in C; dump() would run the pure-Python encoder.
                handle.write(json.dumps(data, separators=(",", ":")))
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as exc:
        raise CheckpointError(
            f"cannot write state_path {path!r}: {exc.strerror}; give a writable path"
        ) from None


def plan(
    families: list[LogFamily],
    checkpoint: Checkpoint | None,
    *,
    settings: dict,
    now: float,
    window_start: float,
) -> tuple[list[Reading], str]:
    """The files to read and where to start, and "" when going on from `checkpoint`, or
    every file from its start and the reason for the full read."""
    everything = [Reading(log) for family in families for log in family.files]
    if checkpoint is None:
        return everything, "no state"
    if checkpoint.settings != settings:
        changed = sorted(name for name in {*settings, *checkpoint.settings}
                         if settings.get(name) != checkpoint.settings.get(name))  # fmt: skip
        return everything, f"{', '.join(changed)} changed since the state was written"
    if now < checkpoint.now or window_start < checkpoint.window_start:
        return everything, "the window reaches before the state's"

    unused = list(checkpoint.marks)
    readings: list[Reading] = []
    for family in families:
        found = [(log, _take_mark(log, unused)) for log in family.files]
        reason = _check_family(found, checkpoint.marks)
        if reason:
            return everything, reason
        for log, mark in found:
            if mark is None:
                readings.append(Reading(log))
            else:
                grown = _length(log, mark) > mark.offset
                readings.append(Reading(log, start=mark.offset, mark=mark, pending=grown))
    if unused:
        return everything, f"{unused[0].path!r} read last time is gone"
    return readings, ""


def _take_mark(log: LogFile, unused: list[Mark]) -> Mark | None:
    """The mark of `log`: the same file (device + inode) or a copy of it (a renamed or
    compressed rotation), told by the digest of its beginning."""
    heads: dict[int, str] = {}

    def head(length: int) -> str:
        if length not in heads:
            heads[length] = head_digest(log.path, length)
        return heads[length]

    for candidates in (
        [mark for mark in unused if (mark.device, mark.inode) == (log.device, log.inode)],
        unused,
    ):
        for mark in candidates:
            if head(mark.head_length) == mark.head:
                unused.remove(mark)
                return mark
    return None


def _check_family(found: list[tuple[LogFile, Mark | None]], marks: list[Mark]) -> str:
    """Why the family cannot go on from its marks, or "": files read before come first and in
    their old order, only the last of them may have grown, and none may have shrunk."""
    order = [marks.index(mark) for _, mark in found if mark is not None]
    if order != sorted(order):
        return "files were reordered since the state was written"
    seen_new = False
    last_matched = order and marks[order[-1]]
    for log, mark in found:
        if mark is None:
            seen_new = True
            continue
        if seen_new:
            return f"{log.path!r} is older than a file that is new since the state was written"
        if mark.origin and mark.origin != log.origin.decode("ascii"):
            # Its sessions without a host are keyed by the family it was read in.
            return f"{log.path!r} was read last time as {mark.path!r}, in another place"
        length = _length(log, mark)
        if length < mark.offset:
            return f"{log.path!r} is shorter than when it was read"
        if length > mark.offset and mark is not last_matched:
            return f"{log.path!r} grew although a newer file follows it"
    return ""


def _length(log: LogFile, mark: Mark) -> int:
    """The length of the file's text, as far as it matters: more than `mark.offset` when
    there is more to read."""
    if (log.device, log.inode, log.size, log.mtime) == (
        mark.device,
        mark.inode,
        mark.size,
        mark.mtime,
    ):
        return mark.offset  # untouched since it was read
    trailer = gzip_trailer_size(log.path)
    if trailer is None:
        return log.size
    # A compressed copy: finished when its trailer says it holds just what was read.
    return mark.offset if trailer == mark.offset % 2**32 else mark.offset + 1


def restore(checkpoint: Checkpoint, *, engine: Engine) -> None:
    """Put the engine where the checkpoint's run left it."""
    _set_book(engine.book, checkpoint.book)
    _set_book(engine.servers, checkpoint.servers)
    for name, value in checkpoint.stats.items():
        setattr(engine.stats, name, value)
    engine.ranks.update(checkpoint.ranks)
    engine.addresses.update((raw.encode("latin-1"), None) for raw in checkpoint.bad_addresses)
    engine.restore(checkpoint.engine)


def _set_book(book: SessionBook, state: dict) -> None:
    book.open_sessions = {
        key.encode("latin-1"): [start, source, last, tentative]
        for key, start, source, last, tentative in state["open"]
    }
    book.ended = [(start, end, source) for start, end, source in state["ended"]]
    book.host_start = {host.encode("latin-1"): start for host, start in state["host_start"]}
    book.data_start = state["data_start"]
    book.file_start = state["file_start"]
    book.counts["ended_unknown"] = state["ended_unknown"]
    book.counts["start_unknown"] = state["start_unknown"]
    book.counts["repeated_lines"] = state.get("repeated_lines", 0)


def _book_state(book: SessionBook) -> dict:
    window_start = book.window_start
    return {
        "open": [[key.decode("latin-1"), *session] for key, session in book.open_sessions.items()],
        "ended": [list(session) for session in book.ended if session[1] >= window_start],
        "host_start": [[host.decode("latin-1"), start] for host, start in book.host_start.items()],
        "data_start": book.data_start,
        "file_start": book.file_start,
        "ended_unknown": book.counts["ended_unknown"],
        "start_unknown": book.counts["start_unknown"],
        "repeated_lines": book.counts["repeated_lines"],
    }


def capture(readings: list[Reading], *, settings: dict, engine: Engine,
            reached: dict[str, tuple[int, float | None]]) -> Checkpoint:  # fmt: skip
    """The checkpoint of this run, before `book.finish()`: `reached` maps each file read to
    its new offset and first time."""
    marks = []
    for reading in readings:
        log, mark = reading.log, reading.mark
        offset, first = reached.get(log.path, (mark.offset, mark.first) if mark else (0, None))
        length = min(HEAD_SIZE, offset)
        if mark is not None and mark.head_length == length:
            head = mark.head
        else:
            head = head_digest(log.path, length)
        marks.append(Mark(path=log.path, device=log.device, inode=log.inode, size=log.size,
                          mtime=log.mtime, head=head, head_length=length, offset=offset,
                          first=first, origin=log.origin.decode("ascii")))  # fmt: skip
    book = engine.book
    return Checkpoint(
        settings=settings,
        now=book.now,
        window_start=book.window_start,
        marks=marks,
        book=_book_state(book),
        stats=engine.stats.as_dict(),
        ranks=dict(engine.ranks),
        bad_addresses=[
            raw.decode("latin-1")
            for raw, source in engine.addresses.items()
            if source is None and raw != b"unknown"
        ],
        servers=_book_state(engine.servers),
        engine=engine.capture(),
    )
