"""Postfix beyond smtpd: postscreen sessions, replies, deliveries to internal servers, logger
folds, the line shapes that broke other mail-log tools, and one test per kind of fault."""

from __future__ import annotations

import gzip
import json

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._postfix import MAX_REPEATS
from support.engine import durations, read_engine, spans
from support.logs import NOW, PostfixLog, at, by_source, iso, run_analysis, stamp

POSTSCREEN = "postfix/postscreen"
SMTPD = "postfix/smtpd"
SMTP = "postfix/smtp"
CLIENT = "192.0.2.5"
GATEWAY = "[198.51.100.25]:25"


def _connect(log: PostfixLog, when: float, port: int, *, source: str = CLIENT,
             host: str = "mx1") -> None:  # fmt: skip
    log.line(when, f"CONNECT from [{source}]:{port} to {GATEWAY}", pid=5, host=host,
             program=POSTSCREEN)  # fmt: skip


def _postscreen(log: PostfixLog, when: float, message: str, *, host: str = "mx1") -> None:
    log.line(when, message, pid=5, host=host, program=POSTSCREEN)


# -- the regression corpus ---------------------------------------------------------------------


def test_reject_450_with_a_two_digit_detail_is_a_temporary_failure_of_its_session():
    now = at("2026-12-21T21:20:00+00:00")
    lines = [
        b"Dec 21 21:17:27 mx1 postfix/smtpd[7150]: connect from bad.example.net[192.0.2.34]\n",
        b"Dec 21 21:17:30 mx1 postfix/smtpd[7150]: NOQUEUE: reject: RCPT from "
        b"bad.example.net[192.0.2.34]: 450 4.7.25 Client host rejected: cannot find your "
        b"hostname, [192.0.2.34]; from=<a@example.net> to=<b@example.com> proto=ESMTP "
        b"helo=<bad.example.net>\n",
        b"Dec 21 21:17:31 mx1 postfix/smtpd[7150]: disconnect from bad.example.net[192.0.2.34] "
        b"ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4\n",
    ]

    engine = read_engine(lines, now=now)

    assert durations(engine.book) == {"192.0.2.34": [4.0]}
    assert engine.replies == {"192.0.2.34": {"421": 0, "4xx": 1}}
    assert engine.notes == {}
    assert (engine.stats.parsed, engine.stats.ignored, engine.stats.skipped) == (3, 0, 0)


def test_bdat_reject_with_a_long_queue_id_instance_and_service_stays_in_its_session():
    now = at("2026-03-11T23:30:00+00:00")
    program = b"mx1 postfix-out/submission/smtpd[22427]: "
    lines = [
        b"Mar 11 23:27:50 " + program + b"connect from relay.example.net[192.0.2.109]\n",
        b"Mar 11 23:27:53 " + program + b"44JCRG5tYPzCqt2: client=relay.example.net[192.0.2.109]\n",
        b"Mar 11 23:27:54 " + program + b"44JCRG5tYPzCqt2: reject: BDAT from "
        b"relay.example.net[192.0.2.109]: 550 5.5.3 <DATA>: Data command rejected: "
        b"Multi-recipient bounce; from=<> to=<b@example.com> proto=ESMTP "
        b"helo=<relay.example.net>\n",
        b"Mar 11 23:27:56 " + program + b"disconnect from relay.example.net[192.0.2.109] "
        b"ehlo=1 mail=1 rcpt=1 bdat=0/1 quit=1 commands=4/5\n",
    ]

    engine = read_engine(lines, now=now, servers=True)

    assert durations(engine.book) == {"192.0.2.109": [6.0]}
    assert engine.replies == {}  # a 5xx is not a temporary failure
    # The long queue id names the client for a deferral by an internal server later.
    assert engine.format_state["postfix_queue"] == {"44JCRG5tYPzCqt2": "192.0.2.109"}
    assert (engine.stats.parsed, engine.stats.ignored, engine.stats.skipped) == (3, 1, 0)


def test_pregreet_with_integer_time_and_escaped_binary_notes_its_postscreen_session():
    now = at("2026-07-12T16:00:00+00:00")
    program = b"mx1 postfix/postscreen[1120148]: "
    lines = [
        b"Jul 12 15:59:44 " + program + b"CONNECT from [192.0.2.63]:62873 to [198.51.100.25]:25\n",
        b"Jul 12 15:59:44 " + program + rb"PREGREET 47 after 0 from [192.0.2.63]:62873: "
        rb"\003\000\000/*\340\000\000\000\000\000Cookie: mstshash=Administr\r\n" + b"\n",
        b"Jul 12 15:59:46 " + program + b"DISCONNECT [192.0.2.63]:62873\n",
    ]

    engine = read_engine(lines, now=now)

    assert durations(engine.book) == {"192.0.2.63": [2.0]}
    assert engine.notes == {"192.0.2.63": {"pregreet": 1}}
    assert engine.book.counts["open_sessions"] == 0
    assert (engine.stats.parsed, engine.stats.skipped, engine.stats.bad_addresses) == (3, 0, 0)


def test_anvil_statistics_with_an_unbracketed_ipv6_address_make_no_source():
    now = at("2026-03-07T03:15:00+00:00")
    lines = [
        b"Mar  7 03:01:10 mx1 postfix/smtpd[300]: connect from unknown[2001:db8::1]\n",
        b"Mar  7 03:01:20 mx1 postfix/smtpd[300]: disconnect from unknown[2001:db8::1] "
        b"quit=1 commands=1\n",
        b"Mar  7 03:10:00 mx1 postfix/anvil[1411]: statistics: max connection rate 12/60s for "
        b"(smtp:2001:db8::1) at Mar  7 03:01:12\n",
    ]

    engine = read_engine(lines, now=now)

    assert durations(engine.book) == {"2001:db8::1": [10.0]}
    assert set(engine.book.sources) == {"2001:db8::1"}
    assert (engine.replies, engine.notes) == ({}, {})
    assert (engine.stats.parsed, engine.stats.ignored, engine.stats.skipped) == (2, 1, 0)
    assert engine.stats.bad_addresses == 0


# -- postscreen sessions -------------------------------------------------------------------------

# Each path from CONNECT (at NOW - 100) to the session's end: the lines after the CONNECT as
# (offset from NOW, program, message), the session's length, its notes, the parsed lines.
PATHS = {
    "disconnect": (
        [(-90, POSTSCREEN, "DISCONNECT [192.0.2.5]:4000")], 10.0, {}, 2),
    "hangup, then disconnect": (
        [(-96, POSTSCREEN, "HANGUP after 4.1 from [192.0.2.5]:4000 in tests after SMTP handshake"),
         (-95, POSTSCREEN, "DISCONNECT [192.0.2.5]:4000")], 4.0, {}, 3),
    "command time limit": (
        [(-40, POSTSCREEN, "COMMAND TIME LIMIT from [192.0.2.5]:4000 after RCPT"),
         (-40, POSTSCREEN, "DISCONNECT [192.0.2.5]:4000")], 60.0, {"command_time_limit": 1}, 3),
    "pregreet": (
        [(-99, POSTSCREEN, "PREGREET 11 after 0.07 from [192.0.2.5]:4000: EHLO x\\r\\n"),
         (-97, POSTSCREEN, "DISCONNECT [192.0.2.5]:4000")], 3.0, {"pregreet": 1}, 3),
    "denylisted": (
        [(-100, POSTSCREEN, "DENYLISTED [192.0.2.5]:4000"),
         (-99, POSTSCREEN, "DISCONNECT [192.0.2.5]:4000")], 1.0, {"denylisted": 1}, 3),
    "blacklisted (older Postfix)": (
        [(-100, POSTSCREEN, "BLACKLISTED [192.0.2.5]:4000"),
         (-99, POSTSCREEN, "DISCONNECT [192.0.2.5]:4000")], 1.0, {"denylisted": 1}, 3),
    "pass new, then smtpd": (
        [(-93, POSTSCREEN, "PASS NEW [192.0.2.5]:4000"),
         (-93, SMTPD, "connect from unknown[192.0.2.5]"),
         (-60, SMTPD, "disconnect from unknown[192.0.2.5] ehlo=1 quit=1 commands=2")],
        40.0, {}, 4),
    "pass old, then smtpd": (
        [(-100, POSTSCREEN, "PASS OLD [192.0.2.5]:4000"),
         (-99, SMTPD, "connect from unknown[192.0.2.5]"),
         (-50, SMTPD, "disconnect from unknown[192.0.2.5] ehlo=1 quit=1 commands=2")],
        50.0, {}, 4),
    "allowlisted, then smtpd": (
        [(-100, POSTSCREEN, "ALLOWLISTED [192.0.2.5]:4000"),
         (-100, SMTPD, "connect from unknown[192.0.2.5]"),
         (-80, SMTPD, "disconnect from unknown[192.0.2.5] ehlo=1 quit=1 commands=2")],
        20.0, {"allowlisted": 1}, 4),
    "whitelisted (older Postfix), then smtpd": (
        [(-100, POSTSCREEN, "WHITELISTED [192.0.2.5]:4000"),
         (-100, SMTPD, "connect from unknown[192.0.2.5]"),
         (-70, SMTPD, "disconnect from unknown[192.0.2.5] ehlo=1 quit=1 commands=2")],
        30.0, {"allowlisted": 1}, 4),
}  # fmt: skip


@pytest.mark.parametrize(("after", "length", "notes", "parsed"), PATHS.values(), ids=PATHS)
def test_each_postscreen_path_is_one_session_from_connect_to_its_end(after, length, notes,
                                                                     parsed):  # fmt: skip
    log = PostfixLog()
    _connect(log, NOW - 100, 4000)
    for offset, program, message in after:
        log.line(NOW + offset, message, pid=5 if program == POSTSCREEN else 700, program=program)

    engine = read_engine(log)

    assert durations(engine.book) == {CLIENT: [length]}
    assert engine.book.counts["open_sessions"] == 0
    assert engine.notes == ({CLIENT: notes} if notes else {})
    assert (engine.stats.parsed, engine.stats.skipped) == (parsed, 0)


GATEWAY_REPLIES = {
    "450": ("NOQUEUE: reject: RCPT from unknown[192.0.2.5]: 450 4.7.1 <x>: Helo command "
            "rejected: Host not found; from=<> to=<b@example.com> proto=ESMTP helo=<x>",
            {"421": 0, "4xx": 1}, {}),
    "421": ("NOQUEUE: reject: CONNECT from unknown[192.0.2.5]:4000: 421 4.7.0 Server busy",
            {"421": 1, "4xx": 1}, {}),
    "rate limit": ("warning: Connection rate limit exceeded: 61 from unknown[192.0.2.5] for "
                   "service smtp", {"421": 1, "4xx": 1}, {"connection_limit": 1}),
    "concurrency limit": ("warning: Connection concurrency limit exceeded: 51 from "
                          "unknown[192.0.2.5] for service smtp", {"421": 1, "4xx": 1},
                          {"connection_limit": 1}),
    "milter 451": ("NOQUEUE: milter-reject: RCPT from unknown[192.0.2.5]: 451 4.7.1 "
                   "Greylisting in action; from=<a@example.net> to=<b@example.com> proto=ESMTP "
                   "helo=<x>", {"421": 0, "4xx": 1}, {}),
    "queue id 450": ("4F9D21E65F: reject: DATA from unknown[192.0.2.5]: 450 4.7.1 try later; "
                     "from=<a@example.net> to=<b@example.com> proto=ESMTP helo=<x>",
                     {"421": 0, "4xx": 1}, {}),
    "554": ("NOQUEUE: reject: RCPT from unknown[192.0.2.5]: 554 5.7.1 Service unavailable; "
            "Client host [192.0.2.5] blocked", None, {}),
}  # fmt: skip


@pytest.mark.parametrize(("message", "counted", "notes"), GATEWAY_REPLIES.values(),
                         ids=GATEWAY_REPLIES)  # fmt: skip
def test_the_gateways_temporary_failures_count_per_source(message, counted, notes):
    log = PostfixLog()
    log.session(CLIENT, start=NOW - 60, duration=10, pid=100)
    log.line(NOW - 55, message, pid=100)

    engine = read_engine(log)

    assert engine.replies == ({CLIENT: counted} if counted else {})
    assert engine.notes == ({CLIENT: notes} if notes else {})
    assert durations(engine.book) == {CLIENT: [10.0]}
    assert (engine.stats.parsed, engine.stats.skipped) == (3 if counted else 2, 0)


# What a client sent, quoted in smtpd's own lines, imitating a reject or a limit of another
# address: only a message that begins with Postfix's words counts.
IMITATED_REPLIES = {
    "reject after a non-SMTP command": "warning: non-SMTP command from unknown[192.0.2.5]: GET "
                                       "/reject: RCPT from x[203.0.113.5]: 421 x",
    "queue id reject after a command": "warning: non-SMTP command from unknown[192.0.2.5]: "
                                       "NOQUEUE: reject: RCPT from x[203.0.113.5]: 450 x",
    "limit after a non-SMTP command": "warning: non-SMTP command from unknown[192.0.2.5]: GET "
                                      "/x limit exceeded: 1 from x[203.0.113.5] for service smtp",
    "reject in a helo": "lost connection after EHLO from unknown[192.0.2.5]: reject: RCPT "
                        "from x[203.0.113.5]: 421 x",
}  # fmt: skip


@pytest.mark.parametrize("message", IMITATED_REPLIES.values(), ids=IMITATED_REPLIES)
def test_a_reject_or_limit_in_a_client_s_text_counts_for_nobody(message):
    log = PostfixLog()
    log.session(CLIENT, start=NOW - 60, duration=10, pid=100)
    log.line(NOW - 55, message, pid=100)

    engine = read_engine(log)

    assert engine.replies == {}
    assert engine.notes == {}
    assert durations(engine.book) == {CLIENT: [10.0]}


def test_the_review_s_imitated_421_storm_gives_no_421(tmp_path):
    lines = b"".join([
        b"Dec  3 09:50:00 mx postfix/smtpd[100]: connect from unknown[192.0.2.9]\n",
        b"Dec  3 09:50:00 mx postfix/smtpd[100]: warning: non-SMTP command from "
        b"unknown[192.0.2.9]: GET /reject: RCPT from x[203.0.113.5]: 421 x\n",
        b"Dec  3 09:50:00 mx postfix/smtpd[100]: disconnect from unknown[192.0.2.9]\n",
    ] * 25)  # fmt: skip
    (tmp_path / "mail.log").write_bytes(lines)

    result = run_analysis(tmp_path / "mail.log", format="postfix", capacity=10)

    assert result["attack"]["numbers"]["replies_421"] == 0
    assert result["attack"]["numbers"]["tempfails"] == 0
    assert result["attack"]["kinds"] == []


def test_postscreen_reject_counts_its_temporary_failure():
    log = PostfixLog()
    _connect(log, NOW - 30, 4000)
    _postscreen(log, NOW - 20, "NOQUEUE: reject: RCPT from [192.0.2.5]:4000: 450 4.3.2 Service "
                               "currently unavailable; from=<a@example.net>, to=<b@example.com>, "
                               "proto=ESMTP, helo=<x>")  # fmt: skip
    _postscreen(log, NOW - 19, "DISCONNECT [192.0.2.5]:4000")

    engine = read_engine(log)

    assert engine.replies == {CLIENT: {"421": 0, "4xx": 1}}
    assert durations(engine.book) == {CLIENT: [11.0]}


def test_concurrent_connections_of_one_address_end_by_their_port():
    log = PostfixLog()
    _connect(log, NOW - 100, 4001)
    _connect(log, NOW - 99, 4002)
    _connect(log, NOW - 98, 4003)
    _postscreen(log, NOW - 90, "DISCONNECT [192.0.2.5]:4003")
    _postscreen(log, NOW - 80, "HANGUP after 21 from [192.0.2.5]:4002 in tests before SMTP "
                               "handshake")  # fmt: skip
    _postscreen(log, NOW - 70, "DISCONNECT [192.0.2.5]:4001")

    engine = read_engine(log)

    assert spans(engine.book) == [(-100, -70, CLIENT), (-99, -80, CLIENT), (-98, -90, CLIENT)]
    assert engine.book.counts["open_sessions"] == 0


def test_smtpd_continues_the_connection_postscreen_passed_not_an_older_one_in_tests():
    # 4001 is still in postscreen's tests when 4002 passes; smtpd's connect is 4002's.
    log = PostfixLog()
    _connect(log, NOW - 100, 4001)
    _connect(log, NOW - 99, 4002)
    _postscreen(log, NOW - 99, "PASS OLD [192.0.2.5]:4002")
    log.connect(NOW - 99, CLIENT, pid=700)
    log.disconnect(NOW - 90, CLIENT, pid=700)
    _postscreen(log, NOW - 80, "HANGUP after 20 from [192.0.2.5]:4001 in tests after SMTP "
                               "handshake")  # fmt: skip
    _postscreen(log, NOW - 80, "DISCONNECT [192.0.2.5]:4001")

    engine = read_engine(log)

    assert spans(engine.book) == [(-100, -80, CLIENT), (-99, -90, CLIENT)]
    assert engine.book.counts["open_sessions"] == 0


def test_two_passed_connections_of_one_address_go_to_smtpd_oldest_first():
    log = PostfixLog()
    _connect(log, NOW - 100, 4001)
    _connect(log, NOW - 95, 4002)
    _postscreen(log, NOW - 94, "PASS NEW [192.0.2.5]:4001")
    _postscreen(log, NOW - 94, "PASS NEW [192.0.2.5]:4002")
    log.connect(NOW - 94, CLIENT, pid=700)
    log.connect(NOW - 94, CLIENT, pid=701)
    log.disconnect(NOW - 50, CLIENT, pid=701)
    log.disconnect(NOW - 40, CLIENT, pid=700)

    engine = read_engine(log)

    assert spans(engine.book) == [(-100, -40, CLIENT), (-95, -50, CLIENT)]


def test_an_ipv6_client_passed_to_smtpd_is_one_session():
    log = PostfixLog()
    _postscreen(log, NOW - 100, "CONNECT from [2001:DB8::5]:4000 to [2001:db8::25]:25")
    _postscreen(log, NOW - 99, "PASS NEW [2001:DB8::5]:4000")
    log.connect(NOW - 99, "2001:DB8::5", pid=700)
    log.disconnect(NOW - 60, "2001:DB8::5", pid=700)

    engine = read_engine(log)

    assert spans(engine.book) == [(-100, -60, "2001:db8::5")]
    assert engine.book.counts["open_sessions"] == 0


def test_gateways_in_one_file_keep_their_postscreen_sessions_apart_by_host():
    log = PostfixLog()
    _connect(log, NOW - 100, 4000, host="mx1")
    _connect(log, NOW - 60, 4000, host="mx2")  # the same client and port at another gateway
    _postscreen(log, NOW - 59, "PASS OLD [192.0.2.5]:4000", host="mx2")
    log.connect(NOW - 59, CLIENT, pid=700, host="mx2")
    log.disconnect(NOW - 30, CLIENT, pid=700, host="mx2")
    _postscreen(log, NOW - 20, "DISCONNECT [192.0.2.5]:4000", host="mx1")

    engine = read_engine(log)

    assert spans(engine.book) == [(-100, -20, CLIENT), (-60, -30, CLIENT)]
    assert engine.book.counts["open_sessions"] == 0


@pytest.mark.parametrize("passed", [False, True], ids=["in tests", "passed, smtpd not yet"])
def test_a_postscreen_session_open_at_now_counts_in_current_occupancy(tmp_path, passed):
    log = PostfixLog()
    _connect(log, NOW - 30, 4000, source="203.0.113.7")
    if passed:
        _postscreen(log, NOW - 30, "PASS OLD [203.0.113.7]:4000")
    log.sessions("192.0.2.10", 2, start=NOW - 300, duration=5, spacing=10)

    result = run_analysis(log.write(tmp_path / "mail.log"))

    assert result["occupancy"]["current_sessions"] == 1
    assert result["stats"]["open_sessions"] == 1
    found = by_source(result)["203.0.113.7"]
    assert (found["sessions"], found["open_sessions"], found["longest_session"]) == (1, 1, 30)


def _passed_log() -> tuple[PostfixLog, PostfixLog]:
    """A gateway's log in two parts; three postscreen sessions span the cut: one still in the
    tests, one passed whose smtpd connect comes after the cut, one passed and in smtpd."""
    before, after = PostfixLog(), PostfixLog()
    _connect(before, NOW - 900, 4001, source="203.0.113.1")
    _connect(before, NOW - 800, 4002, source="203.0.113.2")
    _postscreen(before, NOW - 800, "PASS NEW [203.0.113.2]:4002")
    _connect(before, NOW - 700, 4003, source="203.0.113.3")
    _postscreen(before, NOW - 700, "PASS OLD [203.0.113.3]:4003")
    before.connect(NOW - 700, "203.0.113.3", pid=703)
    before.sessions("192.0.2.10", 3, start=NOW - 1000, duration=5, spacing=30)

    _postscreen(after, NOW - 500, "DISCONNECT [203.0.113.1]:4001")
    after.connect(NOW - 400, "203.0.113.2", pid=702)
    after.disconnect(NOW - 300, "203.0.113.2", pid=702)
    after.disconnect(NOW - 200, "203.0.113.3", pid=703)
    _connect(after, NOW - 100, 4004, source="203.0.113.4")  # open at now
    return before, after


EXPECTED_ACROSS = {"203.0.113.1": (1, 400, 0), "203.0.113.2": (1, 500, 0),
                   "203.0.113.3": (1, 500, 0), "203.0.113.4": (1, 100, 1)}  # fmt: skip


def _per_source(result: dict) -> dict[str, tuple[int, float, int]]:
    return {
        found["ip"]: (found["sessions"], found["longest_session"], found["open_sessions"])
        for found in result["candidates"]
        if found["ip"].startswith("203.")
    }


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_postscreen_sessions_continue_across_a_rotation(tmp_path, compress):
    before, after = _passed_log()
    before.write(tmp_path / ("mail.log.1.gz" if compress else "mail.log.1"), compress=compress)
    after.write(tmp_path / "mail.log")

    result = run_analysis(tmp_path / "mail.log*", window="1h")

    assert _per_source(result) == EXPECTED_ACROSS
    assert result["occupancy"]["current_sessions"] == 1


def _comparable(result: dict) -> dict:
    result = json.loads(json.dumps(result))
    result["stats"].pop("seconds")
    result.pop("state", None)
    return result


def test_postscreen_sessions_open_across_two_state_path_runs_equal_a_full_read(tmp_path):
    before, after = _passed_log()
    live, state = tmp_path / "mail.log", tmp_path / "state.json"
    before.write(live)
    first = run_analysis(live, window="1h", now=iso(NOW - 600), state_path=str(state))
    with open(live, "ab") as handle:
        handle.write(after.data())

    resumed = run_analysis(live, window="1h", state_path=str(state))
    full = run_analysis(live, window="1h")

    assert first["occupancy"]["current_sessions"] == 3  # 203.0.113.1, .2 and .3
    assert resumed["state"]["resumed"] is True
    assert _comparable(resumed) == _comparable(full)
    assert _per_source(resumed) == EXPECTED_ACROSS


# -- deliveries to internal servers ----------------------------------------------------------------


def _delivery(log: PostfixLog, when: float, queue_id: str, *, server: str = "198.51.100.26",
              delays: str = "delays=0.5/0/1.2/1.8", status: str = "status=sent (250 2.0.0 Ok)"
              ) -> None:  # fmt: skip
    log.line(when, f"{queue_id}: to=<u@campus.example>, relay=mail.campus.example[{server}]:25, "
                   f"delay=3.5, {delays}, dsn=2.0.0, {status}", pid=900, program=SMTP)  # fmt: skip


def test_a_delivery_is_a_session_to_the_server_of_connection_setup_plus_transmission():
    log = PostfixLog()
    _delivery(log, NOW - 100, "3A1AF21E65F")
    _delivery(log, NOW - 50, "3A1AF21E660", delays="delays=0.1/0.01/0.25/0.5")

    engine = read_engine(log, servers=True)

    assert spans(engine.servers) == [(-103.0, -100.0, "198.51.100.26"),
                                     (-50.75, -50.0, "198.51.100.26")]  # fmt: skip
    assert engine.book.counts["sessions"] == 0  # not a client session
    assert engine.server_replies == {}
    assert engine.stats.parsed == 2


SERVER_REPLIES = [
    ("refused to talk to me: 421 4.3.2 no SMTP service here", {"421": 1, "4xx": 1}, "server_421"),
    (
        "said: 421 4.4.2 mail.campus.example Error: timeout exceeded (in reply to end of DATA "
        "command)",
        {"421": 1, "4xx": 1},
        "server_421",
    ),
    (
        "said: 450 4.2.0 <u@campus.example>: Recipient address rejected: Greylisted (in reply to "
        "RCPT TO command)",
        {"421": 0, "4xx": 1},
        "server_tempfail",
    ),
    (
        "said: 550 5.1.1 <u@campus.example>: Recipient address rejected: User unknown (in reply to "
        "RCPT TO command)",
        None,
        None,
    ),
]


@pytest.mark.parametrize(("reply", "counted", "note"), SERVER_REPLIES,
                         ids=["421 refused", "421 said", "450", "550"])  # fmt: skip
def test_a_servers_temporary_failure_counts_for_it_and_for_the_messages_source(reply, counted,
                                                                               note):  # fmt: skip
    log = PostfixLog()
    log.session("203.0.113.30", start=NOW - 200, duration=5, pid=700)
    log.line(NOW - 197, "3A1AF21E65F: client=unknown[203.0.113.30]", pid=700)
    _delivery(
        log,
        NOW - 100,
        "3A1AF21E65F",
        server="198.51.100.27",
        status=f"status=deferred (host mail.campus.example[198.51.100.27] {reply})",
    )

    engine = read_engine(log, servers=True)

    assert engine.server_replies == ({"198.51.100.27": counted} if counted else {})
    assert engine.notes == ({"203.0.113.30": {note: 1}} if note else {})
    assert engine.replies == {}  # the gateway answered its client nothing temporary
    assert spans(engine.servers) == [(-103.0, -100.0, "198.51.100.27")]


def test_a_deferral_of_a_message_whose_client_is_unknown_counts_only_for_the_server():
    log = PostfixLog()
    _delivery(
        log,
        NOW - 100,
        "3A1AF21E65F",
        server="198.51.100.27",
        status="status=deferred (host x[198.51.100.27] said: 421 4.3.0 busy)",
    )

    engine = read_engine(log, servers=True)

    assert engine.server_replies == {"198.51.100.27": {"421": 1, "4xx": 1}}
    assert engine.notes == {}


def test_deliveries_and_queue_ids_are_not_read_without_servers():
    log = PostfixLog()
    log.session("203.0.113.30", start=NOW - 200, duration=5, pid=700)
    log.line(NOW - 197, "3A1AF21E65F: client=unknown[203.0.113.30]", pid=700)
    _delivery(
        log,
        NOW - 100,
        "3A1AF21E65F",
        server="198.51.100.27",
        status="status=deferred (host x[198.51.100.27] said: 421 4.3.0 busy)",
    )

    engine = read_engine(log, servers=False)

    assert engine.servers.ended == [] and engine.servers.open_sessions == {}
    assert (engine.server_replies, engine.notes) == ({}, {})
    assert engine.format_state.get("postfix_queue", {}) == {}
    assert (engine.stats.parsed, engine.stats.ignored) == (2, 2)


def test_server_figures_through_the_analysis(tmp_path):
    log = PostfixLog()
    log.session("203.0.113.30", start=NOW - 200, duration=5, pid=700)
    log.line(NOW - 197, "3A1AF21E65F: client=unknown[203.0.113.30]", pid=700)
    for retry in range(3):  # one message, deferred three times
        _delivery(
            log,
            NOW - 100 + retry,
            "3A1AF21E65F",
            server="198.51.100.27",
            status="status=deferred (host x[198.51.100.27] said: 421 4.3.0 busy)",
        )
    _delivery(log, NOW - 10, "3A1AF21E700", delays="delays=0/0/20/15")  # 35 s, over now - 30

    result = run_analysis(log.write(tmp_path / "mail.log"), capacity=40,
                          servers=[{"name": "mail", "address": "198.51.100.26"},
                                   "198.51.100.27"])  # fmt: skip

    mail, nomail = result["servers"]
    assert (mail["name"], mail["address"], mail["sessions"], mail["capacity"]) == (
        "mail",
        "198.51.100.26",
        1,
        10,
    )
    assert (nomail["name"], nomail["sessions"], nomail["replies_421"], nomail["tempfails"]) == (
        "198.51.100.27",
        3,
        3,
        3,
    )
    assert by_source(result)["203.0.113.30"]["notes"] == {"server_421": 3}


# -- logger folds ---------------------------------------------------------------------------------

REJECT = "NOQUEUE: reject: RCPT from unknown[192.0.2.5]: 450 4.7.1 Service unavailable"


def test_rsyslog_fold_repeats_the_message_it_holds():
    log = PostfixLog()
    log.line(NOW - 60, REJECT, pid=100)
    log.line(NOW - 50, f"message repeated 3 times: [ {REJECT}]", pid=100)
    _connect(log, NOW - 40, 4000)
    _postscreen(log, NOW - 40, "PREGREET 11 after 0.1 from [192.0.2.5]:4000: EHLO x\\r\\n")
    _postscreen(log, NOW - 39, "message repeated 2 times: [ PREGREET 11 after 0.1 from "
                               "[192.0.2.5]:4000: EHLO x\\r\\n]")  # fmt: skip

    engine = read_engine(log)

    assert engine.replies == {CLIENT: {"421": 0, "4xx": 4}}
    assert engine.notes == {CLIENT: {"pregreet": 3}}


def test_rsyslog_fold_of_a_deferral_counts_each_421_of_the_server():
    deferral = ("3A1AF21E65F: to=<u@campus.example>, relay=x[198.51.100.27]:25, delay=1, "
                "delays=0/0/0.5/0.5, dsn=4.3.0, status=deferred (host x[198.51.100.27] said: "
                "421 4.3.0 busy)")  # fmt: skip
    log = PostfixLog()
    log.line(NOW - 60, deferral, pid=900, program=SMTP)
    log.line(NOW - 50, f"message repeated 2 times: [ {deferral}]", pid=900, program=SMTP)

    engine = read_engine(log, servers=True)

    assert engine.server_replies == {"198.51.100.27": {"421": 3, "4xx": 3}}
    assert len(engine.servers.ended) == 3


def test_sysklogd_fold_repeats_the_line_right_before_it():
    log = PostfixLog()
    log.line(NOW - 60, REJECT, pid=100)
    log.raw(NOW - 50, f"{stamp(NOW - 50)} mx1 last message repeated 2 times")
    log.line(NOW - 40, REJECT, pid=100)
    log.line(NOW - 39, "3F1A2B4C5D: removed", pid=7, program="postfix/qmgr")
    log.raw(NOW - 30, f"{stamp(NOW - 30)} mx1 last message repeated 5 times")  # qmgr's line

    engine = read_engine(log)

    assert engine.replies == {CLIENT: {"421": 0, "4xx": 4}}
    assert engine.stats.skipped == 0


def test_sysklogd_fold_after_an_unrelated_line_does_not_repeat_a_session_event():
    log = PostfixLog()
    log.connect(NOW - 60, CLIENT, pid=100)
    log.line(NOW - 59, "3F1A2B4C5D: removed", pid=7, program="postfix/qmgr")
    log.raw(NOW - 59, f"{stamp(NOW - 59)} mx1 last message repeated 2 times")
    log.disconnect(NOW - 50, CLIENT, pid=100)

    engine = read_engine(log)

    assert durations(engine.book) == {CLIENT: [10.0]}
    assert engine.book.counts["ended_unknown"] == 0


# sysklogd folds per host: in a file of several gateways a fold repeats its own host's last
# line, however many lines of other hosts came between; (lines, sessions of CLIENT, its 4xx).
FOLDS_OF_HOSTS = {
    "the review's case: a fold of another host": (
        ["{0} mx1 postfix/postscreen[10]: CONNECT from [192.0.2.5]:40000 to [10.0.0.1]:25",
         "{1} mx2 last message repeated 400 times",
         "{5} mx1 postfix/postscreen[10]: DISCONNECT [192.0.2.5]:40000"], [5.0], 0),
    "its own host's line, with another host's between": (
        ["{0} mx1 postfix/smtpd[100]: connect from x[192.0.2.5]",
         "{1} mx2 postfix/smtpd[200]: connect from y[192.0.2.6]",
         "{2} mx1 postfix/smtpd[100]: NOQUEUE: reject: RCPT from x[192.0.2.5]: 450 4.7.1 <u>: "
         "later",
         "{3} mx2 postfix/smtpd[200]: disconnect from y[192.0.2.6]",
         "{4} mx1 last message repeated 2 times",
         "{5} mx1 postfix/smtpd[100]: disconnect from x[192.0.2.5]"], [5.0], 3),
    "a line of no interest of any host since": (
        ["{0} mx1 postfix/smtpd[100]: connect from x[192.0.2.5]",
         "{1} mx2 postfix/qmgr[7]: 3F1A2B4C5D: removed",
         "{2} mx1 last message repeated 3 times",
         "{5} mx1 postfix/smtpd[100]: disconnect from x[192.0.2.5]"], [5.0], 0),
}  # fmt: skip


@pytest.mark.parametrize(("lines", "sessions", "replies"), FOLDS_OF_HOSTS.values(),
                         ids=FOLDS_OF_HOSTS)  # fmt: skip
def test_sysklogd_fold_repeats_its_own_host_s_line_only(lines, sessions, replies):
    log = PostfixLog()
    for number, text in enumerate(lines):
        log.raw(NOW - 60 + number, text.format(*(stamp(NOW - 60 + second) for second in range(6))))
    log.line(NOW - 1, "keeps going", pid=3, program="postfix/pickup")

    engine = read_engine(log)

    assert durations(engine.book).get(CLIENT) == sessions
    assert engine.book.counts["open_sessions"] == 0
    assert engine.replies.get(CLIENT, {}).get("4xx", 0) == replies


@pytest.mark.parametrize("fold", [
    "{stamp} mx1 postfix/smtpd[100]: message repeated 99999999 times: [ {reject}]",
    "{stamp} mx1 last message repeated 99999999 times",
], ids=["rsyslog", "sysklogd"])  # fmt: skip
def test_a_fold_repeats_at_most_max_repeats_times(fold):
    log = PostfixLog()
    log.line(NOW - 60, REJECT, pid=100)
    log.raw(NOW - 50, fold.format(stamp=stamp(NOW - 50), reject=REJECT))

    engine = read_engine(log)

    assert engine.replies[CLIENT]["4xx"] == 1 + MAX_REPEATS


@pytest.mark.parametrize("fold", [
    "{stamp} mx1 last message repeated 3 times",  # the file's first line
    "{stamp} mx1 postfix/smtpd[100]: message repeated 3 times: no bracketed message",
], ids=["sysklogd first line", "rsyslog without message"])  # fmt: skip
def test_a_fold_with_nothing_to_repeat_changes_nothing(fold):
    log = PostfixLog()
    log.raw(NOW - 70, fold.format(stamp=stamp(NOW - 70)))
    log.session(CLIENT, start=NOW - 60, duration=10, pid=100)

    engine = read_engine(log)

    assert durations(engine.book) == {CLIENT: [10.0]}
    assert (engine.replies, engine.notes) == ({}, {})
    assert (engine.stats.parsed, engine.stats.ignored, engine.stats.skipped) == (2, 1, 0)


# -- one test per kind of fault -------------------------------------------------------------------


def test_truncated_connect_line_is_skipped_and_opens_nothing():
    log = PostfixLog()
    log.raw(NOW - 60, f"{stamp(NOW - 60)} mx1 postfix/postscreen[5]: CONNECT from [192.0.2")
    log.session("192.0.2.10", start=NOW - 50, duration=5, pid=100)

    engine = read_engine(log)

    assert durations(engine.book) == {"192.0.2.10": [5.0]}
    assert engine.book.counts["open_sessions"] == 0
    assert (engine.stats.parsed, engine.stats.skipped) == (2, 1)


def test_disconnect_without_connect_makes_no_session():
    # Its CONNECT lies before the log (or a HANGUP already ended it): nothing to measure.
    log = PostfixLog()
    _postscreen(log, NOW - 60, "DISCONNECT [192.0.2.5]:4000")

    engine = read_engine(log)

    assert engine.book.ended == [] and engine.book.open_sessions == {}
    assert (engine.stats.parsed, engine.stats.skipped) == (1, 0)


@pytest.mark.parametrize("message", [
    "CONNECT from [192.0.2.5] to [198.51.100.25]:25",
    "DISCONNECT [192.0.2.5]",
    "HANGUP after 3 from [192.0.2.5] in tests after SMTP handshake",
    "PASS OLD [192.0.2.5]",
    "PASS NEW [192.0.2.5]:",
    "PASS OLD 192.0.2.5:4000",
], ids=["connect", "disconnect", "hangup", "pass", "pass, empty port",
        "pass, no brackets"])  # fmt: skip
def test_postscreen_line_without_the_clients_port_is_skipped(message):
    log = PostfixLog()
    _postscreen(log, NOW - 60, message)

    engine = read_engine(log)

    assert engine.book.ended == [] and engine.book.open_sessions == {}
    assert (engine.stats.parsed, engine.stats.skipped) == (0, 1)


def test_garbage_address_is_an_anonymous_session_and_never_a_source():
    log = PostfixLog()
    _connect(log, NOW - 60, 4000, source="999.1.2.3")
    _postscreen(log, NOW - 50, "PREGREET 5 after 0 from [999.1.2.3]:4000: x")
    _postscreen(log, NOW - 40, "DISCONNECT [999.1.2.3]:4000")

    engine = read_engine(log)

    assert durations(engine.book) == {None: [20.0]}
    assert engine.book.sources == {} and engine.notes == {}
    assert engine.book.counts["anonymous_sessions"] == 1
    assert engine.stats.bad_addresses == 1


@pytest.mark.parametrize("relay", [
    "relay=none, delay=5, delays=0/0/5/0, dsn=4.4.1, status=deferred (connect to "
    "mx.campus.example[198.51.100.26]:25: Connection refused)",
    "relay=private/dovecot-lmtp, delay=0.2, delays=0/0/0.1/0.1, dsn=2.0.0, status=sent (250 "
    "2.0.0 <u@campus.example> [InternalId=42] Saved)",
    "relay=local, delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (delivered to mailbox)",
], ids=["relay=none", "lmtp", "local"])  # fmt: skip
def test_a_delivery_without_a_server_in_its_relay_field_is_no_server_session(relay):
    log = PostfixLog()
    log.line(NOW - 60, f"3A1AF21E65F: to=<u@campus.example>, {relay}", pid=900, program=SMTP)

    engine = read_engine(log, servers=True)

    assert engine.servers.ended == [] and engine.server_replies == {}
    assert (engine.stats.parsed, engine.stats.ignored) == (0, 1)


# Recipients a client chose that imitate the fields after them: the server is Postfix's own
# relay= after to= (and orig_to=), and delays= and said: count only after it.
FAKE = '"x, relay=fake[203.0.113.9]:25, delays=0/0/300/300, said: 421 "@campus.example'
REAL = ("relay=mx-in.campus.example[10.0.0.5]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, "
        "status=sent (250 ok)")
IMITATED_RELAYS = {
    "the review's recipient": (f"to=<{FAKE}>, {REAL}", [(-61.1, -60.0, "10.0.0.5")]),
    "in orig_to": (f"to=<u@campus.example>, orig_to=<{FAKE}>, {REAL}",
                   [(-61.1, -60.0, "10.0.0.5")]),
    "with an escaped quote": (f'to=<"a\\", {FAKE[1:]}>, {REAL}', [(-61.1, -60.0, "10.0.0.5")]),
    "with an angle bracket": (f'to=<"a>, {FAKE[1:]}>, {REAL}', [(-61.1, -60.0, "10.0.0.5")]),
    "relay=none after it": (f"to=<{FAKE}>, relay=none, delay=5, delays=0/0/5/0, dsn=4.4.1, "
                            "status=deferred (connect to x[10.0.0.5]:25: Connection refused)", []),
    "no relay= after it": (f"to=<{FAKE}>, delay=5, status=deferred", []),
    "unclosed recipient": (f"to=<{FAKE}, {REAL}", []),
}  # fmt: skip


@pytest.mark.parametrize(("message", "sessions"), IMITATED_RELAYS.values(), ids=IMITATED_RELAYS)
def test_a_delivery_s_server_is_postfix_s_relay_field_not_the_recipient(message, sessions):
    log = PostfixLog()
    log.line(NOW - 60, f"3A1AF21E65F: {message}", pid=900, program=SMTP)

    engine = read_engine(log, servers=True)

    assert [(round(start, 3), end, server) for start, end, server in spans(engine.servers)] \
        == sessions  # fmt: skip
    assert engine.server_replies == {}


def test_a_delivery_without_delays_is_a_session_of_no_length_at_its_line():
    log = PostfixLog()
    _delivery(log, NOW - 60, "3A1AF21E65F", delays="delay=3")

    engine = read_engine(log, servers=True)

    assert spans(engine.servers) == [(-60.0, -60.0, "198.51.100.26")]
    assert engine.stats.skipped == 0


def test_reading_a_gzip_of_postscreen_lines_equals_reading_them_plain(tmp_path):
    log = PostfixLog()
    _connect(log, NOW - 60, 4000)
    _postscreen(log, NOW - 50, "DISCONNECT [192.0.2.5]:4000")
    (tmp_path / "mail.log.gz").write_bytes(gzip.compress(log.data()))
    log.write(tmp_path / "plain.log")

    packed = run_analysis(tmp_path / "mail.log.gz")
    plain = run_analysis(tmp_path / "plain.log")

    assert by_source(packed)[CLIENT]["longest_session"] == 10
    assert by_source(packed) == by_source(plain)
