"""What syslog does to mail logs, undone: the header of a line and `message repeated` lines.

`split_syslog` takes a syslog line apart whether or not it has a `<PRI>` (a syslog push), a
host (a name or an address, IPv6 literals included; a file written by the gateway itself has
none) or a pid. `expand_repeats` wraps a file handle and gives back the lines that a logger
folded:
- rsyslog's `<header> message repeated 3 times: [ <message>]` becomes the message 3 times
  (rsyslog wrote the first occurrence before, as its own line); only a message that begins
  with these words right after the syslog header (`program[pid]: `) is a fold, so that a
  line without that header (an MTA's own file) or a message quoting a client's text is never
  unfolded;
- sysklogd's `<stamp> <host> last message repeated 3 times` becomes the host's previous line
  3 times, with this line's timestamp.
A fold of more than MAX_REPEATS is taken as MAX_REPEATS: a corrupt count must not stall the
analysis.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

MAX_REPEATS = 10_000

# syslog's host field: a name or an IPv4 address, or an IPv6 literal (rsyslog writes the address
# of a sender it has no name for; `2001:db8::`, `::ffff:192.0.2.1`), which the "program:" of a
# line without host never is.
_IPV6_LITERAL = rb"(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f.]*"
HOST = rb"(?:[^ \[\]:]+|" + _IPV6_LITERAL + rb")"
_IPV6_HOST = re.compile(_IPV6_LITERAL)
# "Mar  4 14:21:04", after an optional "<166>"
_CLOCK = rb"(?:<[0-9]{1,3}>)?[A-Z][a-z][a-z] [ 0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
# A stamp (syslog or RFC 3339), a host (optional), a program with an optional "[pid]", ": ".
_SYSLOG = re.compile(
    rb"(?:<[0-9]{1,3}>)?([A-Z][a-z][a-z] [ 0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
    rb"|[0-9]{4}-[0-9][0-9]-[0-9][0-9]T[^ ]+)"
    rb" (?:(" + HOST + rb") )?([^ \[\]:]+)(?:\[([0-9]+)\])?: "
)
# rsyslog's fold, right after a syslog header: only there is it the logger's and not the text of
# a message (a client's words quoted in it).
_REPEATED = re.compile(rb"message repeated ([0-9]{1,12}) times: \[ ?(.*?)\][ \r\n]*\Z", re.S)
_LAST_REPEATED = re.compile(
    rb"(" + _CLOCK + rb" )(?:([^ ]+) )?last message repeated ([0-9]{1,12}) times"
)
_STAMP = re.compile(_CLOCK + rb" ")


def split_syslog(line: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes] | None:
    """(stamp, host, program, pid, message) of a syslog line; host and pid are b"" when the
    line has none. None when the line is not a syslog line."""
    match = _SYSLOG.match(line)
    if match is None:
        return None
    stamp, host, program, pid = match.groups()
    return stamp, host or b"", program, pid or b"", line[match.end() :].rstrip(b"\r\n")


def expand_repeats(handle: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of `handle`, with the folds of a logger unfolded (see the module text)."""
    previous: dict[bytes, bytes] = {}  # host -> its last line that was not a fold
    for line in handle:
        if b"repeated " in line:
            header = _SYSLOG.match(line)
            folded = _REPEATED.match(line, header.end()) if header is not None else None
            if folded is not None:
                times, message = folded.groups()
                once = line[: header.end()] + message + b"\n"
                for _ in range(min(int(times), MAX_REPEATS)):
                    yield once
                continue
            last = _LAST_REPEATED.match(line)
            if last is not None:
                stamp_text, host, times = last.groups()
                original = previous.get(host or b"")
                if original is None:
                    yield line  # nothing to repeat: the reader counts it as a line it skips
                    continue
                again = stamp_text + original[_STAMP.match(original).end() :]
                for _ in range(min(int(times), MAX_REPEATS)):
                    yield again
                continue

        # A line of its own (also one whose message only quotes a fold's words).
        stamp = _STAMP.match(line)
        if stamp is not None:
            host = line[stamp.end() :].split(b" ", 1)[0]
            if b"[" in host or (host[-1:] == b":" and _IPV6_HOST.fullmatch(host) is None):
                host = b""  # no host: the word after the stamp is the program
            previous[host] = line
        yield line
