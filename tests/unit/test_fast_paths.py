"""The reader's shortcuts give what the step-by-step helpers give, line for line.

The hot loop splits the common line shape with one regular expression, takes an smtpd event
apart with another, and skips `ipaddress` for addresses already in canonical IPv4 form. Each
shortcut is compared here with the readable helper it stands for (split_line,
strip_queue_id + SMTPD_SHAPES + peer_address, normalise_address), on tables of real and odd
text, and on every line of a generated gateway log.
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils import _postfix
from ansible_collections.campusnet.smtpguard.plugins.module_utils._addresses import (
    normalise_address,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._postfix import (
    SMTPD_SHAPES,
    peer_address,
    split_line,
    strip_queue_id,
)

ROOT = Path(__file__).resolve().parents[2]

LINES = [
    b"Dec  3 09:59:00 mx1 postfix/smtpd[100]: connect from unknown[192.0.2.7]\n",
    b"Dec 03 09:59:00 mx1 postfix-out/submission/smtpd[7]: x\r\n",
    b"2026-12-03T18:59:00.123456+09:00 mx2 postfix/smtps/smtpd[42]: timeout after RCPT\n",
    b"2026-12-03 mx2 postfix/smtpd[42]: date only\n",
    b"Dec  3 09:59:00 mx1 postfix/postscreen[5]: DNSBL rank 3 for [192.0.2.9]:52342\n",
    b"Dec  3 09:59:00 mx1 postfix/smtpd[100]: ]: twice ]: in the message\n",
    b"Dec  3 09:59:00 mx1 postfix/smtpd[100]: \n",
    b"Dec  3 09:59:00 mx1 postfix/smtpd[100]: no newline",
    b"Dec  3 09:59:00 mx1 postfix/smtpd[100]: \r\n",
    b"Dec  3 09:59:00 mx1 postfix/smtpd[100]: \n\r\n\r",
    b"Dec  3 09:59:00 mx1 postfix/smtpd[100]: a\rcarriage return inside\r\r\n",
    b"Dec  3 09:59:00 mx1 postfix/smtpd[100]: a\nnewline inside\n",
    b"Dec  3 09:59:00 mx1 postfix/smtpd[100]: \x00\xff bytes\n",
    b"Dec  3 09:59:00 mx1 postfix/smtpd[100]: ",
    # Shapes the shortcut leaves to split_line.
    b"Dec  3 09:59:00 postfix/smtpd[100]: no host\n",
    b"Dec  3 09:59:00 mx1 extra postfix/smtpd[100]: two words before the program\n",
    b"Dec  3 09:59:00 mx[1] postfix/smtpd[100]: a bracket in the host\n",
    b"Dec  3 09:59:00 mx1 post[fix/smtpd[100]: a bracket in the program\n",
    b"Dec  3 09:59:00 mx1 postfix/smtpd[100]:no space after the colon\n",
    b"Dec  3 09:59:00 mx1 postfix/smtpd[12a]: connect from unknown[192.0.2.7]\n",
    b"Dec  3 09:59:00 mx1 postfix/smtpd: connect from unknown[192.0.2.7]\n",
    b"Dec  3 09:59:00 mx1 postfix/smtpd[100",
    b"Dec 3 09:59:00 mx1 postfix/smtpd[100]: one-space day\n",
    b"dec  3 09:59:00 mx1 postfix/smtpd[100]: lower-case month\n",
    b"Dec  3 09:59:00  mx1 postfix/smtpd[100]: two spaces\n",
    b"Dec  3 09:59",
    b"2026-12-03T09:59:00Z",
    b"\x00\xff Dec  3 09:59:00 mx1 postfix/smtpd[1]: junk first\n",
]


def _generated_lines(count: int) -> list[bytes]:
    """The first `count` lines of the benchmark's gateway log (all five attack kinds)."""
    spec = importlib.util.spec_from_file_location("genlog", ROOT / "benchmarks" / "genlog.py")
    genlog = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(genlog)
    lines = itertools.chain.from_iterable(genlog.generate(seed=7))
    return [line.encode() for line in itertools.islice(lines, count)]


def _split_by_shortcut(line: bytes):
    shape = _postfix._COMMON_LINE.match(line)
    if shape is None:
        return None
    stamp, key, host, program, message = shape.groups(b"")
    assert host == key.partition(b" ")[0]  # the host, as the reader would cut it off the key
    return stamp, key, program, message


@pytest.mark.parametrize("line", LINES)
def test_common_line_shortcut_splits_like_split_line_or_leaves_the_line_to_it(line):
    shortcut = _split_by_shortcut(line)

    assert shortcut is None or shortcut == split_line(line)


def test_common_line_shortcut_takes_every_generated_gateway_line_as_split_line_does():
    lines = _generated_lines(20_000)

    assert all(_split_by_shortcut(line) == split_line(line) for line in lines)


MESSAGES = [
    b"connect from unknown[192.0.2.7]",
    b"disconnect from mail.example.org[192.0.2.8]:25 ehlo=1 quit=1 commands=2",
    b"connect from [IPv6:2001:db8::26]",
    b"NOQUEUE: lost connection after DATA from unknown[192.0.2.7]",
    b"3F1A2B4C5D: timeout after RCPT from unknown[192.0.2.7]",
    b"4ZxYvb1234zC9q: too many errors after AUTH from unknown[192.0.2.7]",
    b"lost connection after CONNECT from unknown[192.0.2.7]",
    b"connect from unknown",
    b"connect from unknown[192.0.2.7",
    b"connect from unknown]192.0.2.7[",
    b"connect from a[b[c]d]",
    b"connect from ]x[192.0.2.1]",
    b"warning: connect from unknown[198.51.100.66]",
    b"fatal: connect from x",
    b"NOQUEUE: NOQUEUE: connect from unknown[192.0.2.7]",
    b"NOQUEUE:connect from unknown[192.0.2.7]",
    b"3F1A2: connect from unknown[192.0.2.7]",
    b"3F1A2B4C5D6E7F8A9B0C1D2E3F: connect from unknown[192.0.2.7]",
    b"ABCDEF:X: connect from unknown[192.0.2.7]",
    b"reject: RCPT from unknown[192.0.2.7]: 554 connect from unknown[192.0.2.9]",
    b"client=unknown[192.0.2.7]",
    b"disconnect from",
    b"",
]


def _event_step_by_step(message: bytes):
    body = strip_queue_id(message)
    for prefix, kind in SMTPD_SHAPES:
        if body.startswith(prefix):
            return kind, peer_address(body, len(prefix))  # peer_address drops "IPv6:"
    return None


def _event_by_shortcut(message: bytes):
    event = _postfix._SMTPD_EVENT.match(message)
    if event is None:
        return None
    shape, raw = event.group(1, 2)
    if raw is not None and raw[:5] in (b"IPv6:", b"ipv6:"):
        raw = raw[5:]
    return _postfix._SMTPD_KINDS[shape], raw


@pytest.mark.parametrize("message", MESSAGES)
def test_smtpd_event_shortcut_finds_the_shape_and_peer_the_helpers_find(message):
    assert _event_by_shortcut(message) == _event_step_by_step(message)


def test_smtpd_event_shortcut_agrees_with_the_helpers_on_every_generated_smtpd_line():
    messages = [split_line(line)[3] for line in _generated_lines(20_000) if b"smtpd[" in line]

    assert all(_event_by_shortcut(m) == _event_step_by_step(m) for m in messages)


ADDRESSES = [
    b"192.0.2.7",
    b"0.0.0.0",
    b"255.255.255.255",
    b"256.1.1.1",
    b"01.2.3.4",
    b"1.2.3",
    b"1.2.3.4.5",
    b"1.2.3.04",
    b" 1.2.3.4",
    b"1.2.3.4 ",
    b"1.2.3.4\x00",
    b"0x7f.0.0.1",
    b"127.1",
    b"\xff\xfe",
    b"2001:db8::25",
    b"2001:DB8:0:0::25",
    b"::ffff:192.0.2.1",
    b"fe80::1%eth0",
    b"unknown",
    b"",
]


@pytest.mark.parametrize("raw", ADDRESSES)
def test_canonical_ipv4_shortcut_answers_only_where_normalise_address_agrees(raw):
    shortcut = _postfix._canonical_ipv4(raw)

    assert shortcut is None or shortcut == normalise_address(raw)
    canonical_ipv4 = b":" not in raw and normalise_address(raw) == raw.decode("latin-1")
    assert (shortcut is not None) == canonical_ipv4
