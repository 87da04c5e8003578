"""The syslog header of a line taken apart, and the folds of a logger unfolded."""

from __future__ import annotations

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._syslog import (
    MAX_REPEATS,
    expand_repeats,
    split_syslog,
)
from support.logs import by_source, run_analysis

SHAPES = {
    "push without host": (
        b"<166>Mar  4 14:21:04 mail_logs: Info: New SMTP ICID 3160 interface Data 1 "
        b"(198.51.100.10) address 192.0.2.70 reverse dns host unknown verified no\n",
        (b"Mar  4 14:21:04", b"", b"mail_logs", b"",
         b"Info: New SMTP ICID 3160 interface Data 1 (198.51.100.10) address 192.0.2.70 "
         b"reverse dns host unknown verified no")),
    "push with host": (
        b"<22>Mar 14 04:21:04 esa1 mail_logs: Info: ICID 3160 close\n",
        (b"Mar 14 04:21:04", b"esa1", b"mail_logs", b"", b"Info: ICID 3160 close")),
    "host and pid": (
        b"Mar  3 18:35:19 mx2 sm-mta[14956]: w23NZFZk014956: rejecting commands from "
        b"bot.example.net [IPv6:2001:db8::a1] due to pre-greeting traffic after 3 seconds\r\n",
        (b"Mar  3 18:35:19", b"mx2", b"sm-mta", b"14956",
         b"w23NZFZk014956: rejecting commands from bot.example.net [IPv6:2001:db8::a1] due to "
         b"pre-greeting traffic after 3 seconds")),
    "pid without host": (
        b"Dec 03 10:00:00 postfix/smtpd[5]: connect from unknown[192.0.2.7]\n",
        (b"Dec 03 10:00:00", b"", b"postfix/smtpd", b"5", b"connect from unknown[192.0.2.7]")),
    "host without pid": (
        b"Dec  3 10:00:00 mx1 exim: 2026-12-03 10:00:00 SMTP connection from [192.0.2.7]\n",
        (b"Dec  3 10:00:00", b"mx1", b"exim", b"",
         b"2026-12-03 10:00:00 SMTP connection from [192.0.2.7]")),
    "RFC 3339 with fraction and offset": (
        b"2026-12-03T10:00:00.123456+01:00 mx1 exim[123]: 1vQ4X2-000ABC-1A <= a@example.net\n",
        (b"2026-12-03T10:00:00.123456+01:00", b"mx1", b"exim", b"123",
         b"1vQ4X2-000ABC-1A <= a@example.net")),
    "RFC 3339 in UTC": (
        b"<13>2026-12-03T10:00:00Z mx1 sendmail[77]: x: lost input channel\n",
        (b"2026-12-03T10:00:00Z", b"mx1", b"sendmail", b"77", b"x: lost input channel")),
    "empty message": (
        b"Dec  3 10:00:00 mx1 sendmail[77]: \n",
        (b"Dec  3 10:00:00", b"mx1", b"sendmail", b"77", b"")),
    "IPv6 host": (
        b"Dec  3 10:00:00 2001:db8::25 sm-mta[77]: x: lost input channel\n",
        (b"Dec  3 10:00:00", b"2001:db8::25", b"sm-mta", b"77", b"x: lost input channel")),
    "IPv6 host ending in ::": (
        b"<166>Dec  3 10:00:00 2001:db8:: mail_logs: Info: ICID 5 close\n",
        (b"Dec  3 10:00:00", b"2001:db8::", b"mail_logs", b"", b"Info: ICID 5 close")),
    "IPv4-mapped IPv6 host": (
        b"Dec  3 10:00:00 ::ffff:192.0.2.25 exim[9]: x\n",
        (b"Dec  3 10:00:00", b"::ffff:192.0.2.25", b"exim", b"9", b"x")),
    "no host, a word with a colon in the message": (
        b"<166>Dec  3 10:00:00 mail_logs: Info: ICID 5 close\n",
        (b"Dec  3 10:00:00", b"", b"mail_logs", b"", b"Info: ICID 5 close")),
}  # fmt: skip


@pytest.mark.parametrize(("line", "fields"), SHAPES.values(), ids=SHAPES)
def test_split_syslog_takes_each_header_shape_apart(line, fields):
    assert split_syslog(line) == fields


@pytest.mark.parametrize("line", [
    b"",
    b"\n",
    b"2024-03-04 10:12:00 [18643] no MAIL in SMTP connection from host.example.net",  # own file
    b"Wed Jun 16 21:42:34 2004 Info: New SMTP ICID 5 interface Data 1",  # ESA's own file
    b"Mar  3 18:35:19 mx2 sm-mta[14956]:no space after the colon",
    b"Mar  3 18:35:19 mx2 sm-mta[pid]: a pid that is not a number",
    b"Mar  3 18:35:19 mx2 sm-mta[14956]",
    b"Mar  3 18:35 mx2 sm-mta[14956]: a clock without seconds",
    b"mar  3 18:35:19 mx2 sm-mta[14956]: lower-case month",
    b"<166 Mar  4 14:21:04 mail_logs: Info: unclosed priority",
    b"Mar  3 18:35:19 mx2 extra sm-mta[1]: two words before the program",
], ids=["empty", "newline", "exim file", "esa file", "no space", "pid text", "no colon",
        "short clock", "lower month", "open pri", "three words"])  # fmt: skip
def test_split_syslog_returns_none_for_other_lines(line):
    assert split_syslog(line) is None


# -- expand_repeats -------------------------------------------------------------------------------

LINE = b"Mar  4 14:21:04 mx1 sendmail[5]: x: lost input channel from [192.0.2.5]\n"


def _expand(*lines: bytes) -> list[bytes]:
    return list(expand_repeats(iter(lines)))


def test_lines_without_folds_pass_unchanged():
    lines = [LINE, b"junk\n", b"Mar  4 14:21:05 mx1 sendmail[5]: warning: repeated login\n"]

    assert _expand(*lines) == lines


def test_rsyslog_fold_gives_its_message_again_that_many_times():
    fold = (b"Mar  4 14:21:09 mx1 sendmail[5]: message repeated 3 times: "
            b"[ x: lost input channel from [192.0.2.5]]\n")  # fmt: skip
    again = b"Mar  4 14:21:09 mx1 sendmail[5]: x: lost input channel from [192.0.2.5]\n"

    assert _expand(LINE, fold) == [LINE] + [again] * 3


def test_rsyslog_fold_with_an_rfc_3339_stamp_and_crlf():
    fold = (b"2026-03-04T14:21:09.5+00:00 mx1 exim[9]: message repeated 2 times: "
            b"[ SMTP connection from [192.0.2.5]]\r\n")  # fmt: skip

    assert _expand(fold) == [b"2026-03-04T14:21:09.5+00:00 mx1 exim[9]: SMTP connection from "
                             b"[192.0.2.5]\n"] * 2  # fmt: skip


def test_sysklogd_fold_gives_the_hosts_previous_line_again_with_its_own_time():
    fold = b"Mar  4 14:21:09 mx1 last message repeated 2 times\n"
    again = b"Mar  4 14:21:09 mx1 sendmail[5]: x: lost input channel from [192.0.2.5]\n"

    assert _expand(LINE, fold) == [LINE, again, again]


def test_sysklogd_fold_repeats_the_line_of_its_own_host():
    other = b"Mar  4 14:21:05 mx2 sendmail[6]: y: lost input channel from [192.0.2.6]\n"
    fold = b"Mar  4 14:21:09 mx1 last message repeated 1 times\n"

    assert _expand(LINE, other, fold) == [
        LINE, other, b"Mar  4 14:21:09 mx1 sendmail[5]: x: lost input channel from "
                     b"[192.0.2.5]\n"]  # fmt: skip


def test_sysklogd_fold_without_host_repeats_the_previous_line_without_host():
    line = b"<166>Mar  4 14:21:04 mail_logs: Info: ICID 3160 close\n"
    fold = b"<166>Mar  4 14:21:09 last message repeated 2 times\n"

    assert _expand(line, fold) == [line] + [b"<166>Mar  4 14:21:09 mail_logs: Info: ICID 3160 "
                                            b"close\n"] * 2  # fmt: skip


def test_consecutive_sysklogd_folds_repeat_the_same_line():
    first = b"Mar  4 14:21:09 mx1 last message repeated 2 times\n"
    second = b"Mar  4 14:21:39 mx1 last message repeated 1 times\n"

    expanded = _expand(LINE, first, second)

    assert len(expanded) == 4
    assert (
        expanded[3] == b"Mar  4 14:21:39 mx1 sendmail[5]: x: lost input channel from [192.0.2.5]\n"
    )


@pytest.mark.parametrize("fold", [
    b"Mar  4 14:21:09 mx1 sendmail[5]: message repeated 99999999 times: [ x]\n",
    b"Mar  4 14:21:09 mx1 last message repeated 99999999 times\n",
], ids=["rsyslog", "sysklogd"])  # fmt: skip
def test_a_fold_gives_at_most_max_repeats_lines(fold):
    assert len(_expand(LINE, fold)) == 1 + MAX_REPEATS


@pytest.mark.parametrize("fold", [
    b"Mar  4 14:21:09 mx1 last message repeated 3 times\n",  # nothing before it
    b"Mar  4 14:21:09 mx9 last message repeated 3 times\n",  # nothing of that host
], ids=["first line", "other host"])  # fmt: skip
def test_a_fold_with_nothing_to_repeat_is_passed_on_as_it_is(fold):
    lines = [fold] if b"mx1" in fold else [LINE, fold]

    assert _expand(*lines) == lines


def test_a_broken_rsyslog_fold_is_passed_on_as_it_is():
    fold = b"Mar  4 14:21:09 mx1 sendmail[5]: message repeated 3 times: no brackets\n"

    assert _expand(LINE, fold) == [LINE, fold]


# Text a client chose that reads like a fold: only a syslog message that begins with
# "message repeated" is one.
NOT_FOLDS = {
    "exim's own file": b"2026-12-03 09:50:00 rejected EHLO from [192.0.2.9]:1000 "
                       b"I=[198.51.100.1]:25: syntactically invalid argument(s): x: message "
                       b"repeated 999999999999 times: []\n",
    "in a sendmail msgid": b"Dec  3 09:50:00 mx sm-mta[300]: w23NZFZk014900: from=<a@b.example>, "
                           b"size=1, class=0, nrcpts=1, msgid=<x: message repeated 999999 times: "
                           b"[ y>, proto=ESMTP, daemon=MTA, relay=bot.example [192.0.2.9]\n",
    "in exim through syslog": b"Dec  3 09:50:00 mx exim[9]: 2026-12-03 09:50:00 H=[192.0.2.9]:1 "
                              b"rejected EHLO x: message repeated 9 times: [ y]\n",
    "no syslog header": b"x: message repeated 9 times: [ y]\n",
}  # fmt: skip


@pytest.mark.parametrize("line", NOT_FOLDS.values(), ids=NOT_FOLDS)
def test_message_repeated_inside_a_message_is_no_fold(line):
    assert _expand(LINE, line) == [LINE, line]


def test_sysklogd_fold_of_an_ipv6_host_repeats_that_host_s_line():
    line = b"Mar  4 14:21:04 2001:db8:: sendmail[5]: x: lost input channel from [192.0.2.5]\n"
    other = b"Mar  4 14:21:05 mx2 sendmail[6]: y: lost input channel from [192.0.2.6]\n"
    fold = b"Mar  4 14:21:09 2001:db8:: last message repeated 1 times\n"

    assert _expand(line, other, fold) == [line, other, b"Mar  4 14:21:09 " + line[16:]]


def test_a_line_quoting_a_fold_s_words_is_the_line_a_sysklogd_fold_repeats():
    quoting = b"Mar  4 14:21:05 mx1 sendmail[6]: y: lost input channel from x [192.0.2.6] " \
              b"(message repeated 2 times: [ z])\n"  # fmt: skip
    fold = b"Mar  4 14:21:09 mx1 last message repeated 1 times\n"

    assert _expand(LINE, quoting, fold) == [LINE, quoting, b"Mar  4 14:21:09 " + quoting[16:]]


# A gateway that syslog names by an IPv6 literal (rsyslog writes the address when it has no
# name): each reader that takes syslog's header apart reads it, and auto-detection finds it.
IPV6_HOSTS = {
    "sendmail": (
        b"Dec  3 09:50:00 {host} sm-mta[500]: 5B3A000001: from=<a@example.org>, size=10, "
        b"class=0, nrcpts=1, proto=ESMTP, daemon=MTA, relay=bot.example.net [192.0.2.9]",
        b"Dec  3 09:50:30 {host} sm-mta[500]: 5B3A000001: lost input channel from "
        b"bot.example.net [192.0.2.9] to MTA after rcpt"),
    "exim": (
        b"Dec  3 09:50:00 {host} exim[1200]: SMTP connection from [192.0.2.9]:1418 "
        b"I=[198.51.100.1]:25 (TCP/IP connection count = 1)",
        b"Dec  3 09:50:30 {host} exim[1201]: SMTP connection from [192.0.2.9]:1418 "
        b"I=[198.51.100.1]:25 closed by QUIT D=30s"),
    "cisco_esa": (
        b"<166>Dec  3 09:50:00 {host} mail_logs: Info: New SMTP ICID 5 interface Data 1 "
        b"(198.51.100.10) address 192.0.2.9 reverse dns host unknown verified no",
        b"<166>Dec  3 09:50:30 {host} mail_logs: Info: ICID 5 close"),
}  # fmt: skip


@pytest.mark.parametrize("host", [b"2001:db8::25", b"2001:db8::", b"::ffff:198.51.100.25"])
@pytest.mark.parametrize("fmt", IPV6_HOSTS)
def test_a_gateway_named_by_an_ipv6_literal_is_read_and_detected(tmp_path, fmt, host):
    log = tmp_path / "mail.log"
    lines = [line.replace(b"{host}", host) for line in IPV6_HOSTS[fmt]]
    log.write_bytes(b"\n".join(lines) + b"\n")

    result = run_analysis(log)

    assert result["stats"]["format"] == fmt
    assert (result["stats"]["parsed"], result["stats"]["skipped"]) == (2, 0)
    assert by_source(result)["192.0.2.9"]["longest_session"] == 30
