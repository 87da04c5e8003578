"""The DNS transport and cache: shared sockets, replies told apart, TTLs, the cache file.

Every reply comes over real sockets on 127.0.0.1, from tools/minidns.py or from a scripted
peer below that lets a test decide what goes back, in which order, and from where.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils import _dns
from ansible_collections.campusnet.smtpguard.plugins.module_utils._addresses import (
    parse_address,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._dns import (
    CONFIRMED,
    MAX_NEGATIVE_TTL,
    MAX_TTL,
    QUESTIONS_PER_SOCKET,
    DnsCache,
    Lookups,
    Question,
    Reply,
    StubResolver,
    confirm_names,
    read_reply,
    reverse_name,
)
from support.dns import dns_server_fixture

HOST = "127.0.0.1"
PTR = dns.rdatatype.PTR
SOA = "ns.example. hostmaster.example. 1 3600 600 86400 {minimum}"


def ptr_name(index: int) -> dns.name.Name:
    return reverse_name(parse_address(f"198.18.0.{index}"))


def answer_for(query: dns.message.Message, target: str, ttl: int = 300) -> dns.message.Message:
    """The reply a good server gives: the asked name's PTR `target`."""
    response = dns.message.make_response(query)
    name = query.question[0].name
    response.answer.append(dns.rrset.from_text(name, ttl, "IN", "PTR", target))
    return response


class ScriptedPeer:
    """A UDP peer on 127.0.0.1 that hands every query to `script(peer, query, client)`."""

    def __init__(self, script: Callable[[ScriptedPeer, dns.message.Message, tuple], None]):
        self.script = script
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.queries: list[tuple[tuple[str, int], int, str]] = []  # client, id, name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def send(self, message: dns.message.Message, client: tuple, *, sock=None) -> None:
        (sock or self.sock).sendto(message.to_wire(), client)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, client = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            self.queries.append((client, query.id, query.question[0].name.to_text()))
            self.script(self, query, client)

    @contextmanager
    def running(self) -> Iterator[ScriptedPeer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)
            self.sock.close()


def resolve_all(port: int, names: list[dns.name.Name], *, timeout: float = 2.0) -> list[Reply]:
    """Ask every name at once through one StubResolver, as a run does."""

    async def run() -> list[Reply]:
        resolver = StubResolver(
            [HOST], port=port, timeout=timeout, lifetime=timeout, first_window=len(names)
        )
        try:
            return await asyncio.gather(*(resolver.resolve(name, PTR) for name in names))
        finally:
            resolver.close()

    return asyncio.run(run())


def targets(reply: Reply) -> list[str]:
    return [record.target.to_text() for record in reply.records]


# Replies told apart on shared sockets.


def test_replies_in_reverse_order_reach_their_own_questions():
    count = 40
    held: list[tuple[dns.message.Message, tuple]] = []

    def script(peer, query, client):
        held.append((query, client))
        if len(held) == count:
            for waiting, where in reversed(held):
                label = waiting.question[0].name.labels[0].decode()
                peer.send(answer_for(waiting, f"host{label}.example.jp."), where)

    with ScriptedPeer(script).running() as peer:
        replies = resolve_all(peer.port, [ptr_name(index) for index in range(1, count + 1)])

    assert [targets(reply) for reply in replies] == [
        [f"host{index}.example.jp."] for index in range(1, count + 1)
    ]


def test_questions_share_few_sockets_and_never_an_id_in_flight():
    count = QUESTIONS_PER_SOCKET * 2 + 10
    held: list[tuple[dns.message.Message, tuple]] = []

    def script(peer, query, client):
        held.append((query, client))
        if len(held) == count:  # every question is in flight now
            for waiting, where in held:
                peer.send(answer_for(waiting, "host.example.jp."), where)

    with ScriptedPeer(script).running() as peer:
        replies = resolve_all(peer.port, [ptr_name(index) for index in range(1, count + 1)])

    assert all(reply.kind == "answer" for reply in replies)
    sockets = {client for client, _, _ in peer.queries}
    assert len(sockets) == 3
    for client in sockets:
        ids = [query_id for where, query_id, _ in peer.queries if where == client]
        assert len(ids) == len(set(ids)) <= QUESTIONS_PER_SOCKET


def test_an_id_in_flight_is_never_given_to_another_question(monkeypatch):
    drawn = iter([7, 7, 8, 7, 8, 9])
    monkeypatch.setattr(_dns.secrets, "randbelow", lambda _: next(drawn))
    held: list[tuple[dns.message.Message, tuple]] = []

    def script(peer, query, client):
        held.append((query, client))
        if len(held) == 3:
            for waiting, where in held:
                label = waiting.question[0].name.labels[0].decode()
                peer.send(answer_for(waiting, f"host{label}.example.jp."), where)

    with ScriptedPeer(script).running() as peer:
        replies = resolve_all(peer.port, [ptr_name(index) for index in (1, 2, 3)])

    assert sorted(query_id for _, query_id, _ in peer.queries) == [7, 8, 9]
    assert [targets(reply) for reply in replies] == [
        [f"host{index}.example.jp."] for index in (1, 2, 3)
    ]


def test_the_window_grows_by_answers_and_halves_once_a_round_trip_on_loss():
    window = _dns._Window(500, first=320)

    for _ in range(80):
        window.answered()
    assert window.size == 400
    window.lost(now=10.0, round_trip=0.5)
    window.lost(now=10.2, round_trip=0.5)  # the same burst of losses
    assert window.size == 200
    window.lost(now=10.6, round_trip=0.5)
    assert window.size == 100
    for step in range(10):
        window.lost(now=11.0 + step, round_trip=0.5)
    assert window.size == _dns._LEAST_WINDOW
    for _ in range(1000):
        window.answered()
    assert window.size == 500


def test_questions_beyond_the_window_wait_for_answers():
    async def run() -> list[int]:
        window = _dns._Window(10, first=3)
        seen: list[int] = []

        async def question() -> None:
            await window.enter()
            seen.append(window.out)
            await asyncio.sleep(0.01)
            window.answered()
            window.leave()

        await asyncio.gather(*(question() for _ in range(12)))
        return seen

    seen = asyncio.run(run())

    assert max(seen[:3]) == 3 and max(seen) <= 10


@pytest.mark.parametrize(
    "forgery",
    ["wrong-id", "other-question", "other-port", "not-a-reply"],
)
def test_forged_replies_are_ignored(forgery):
    other = dns.name.from_text("4.0.18.198.in-addr.arpa")

    def script(peer, query, client):
        forged = answer_for(query, "attacker.example.jp.")
        forger = None
        if forgery == "wrong-id":
            forged.id = (query.id + 1) % 65536
        elif forgery == "other-question":
            forged = answer_for(dns.message.make_query(other, "PTR"), "attacker.example.jp.")
            forged.id = query.id
        elif forgery == "other-port":
            forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            forger.bind((HOST, 0))
        elif forgery == "not-a-reply":
            forged.flags &= ~dns.flags.QR
        peer.send(forged, client, sock=forger)
        if forger is not None:
            forger.close()
        peer.send(answer_for(query, "genuine.example.jp."), client)

    with ScriptedPeer(script).running() as peer:
        (reply,) = resolve_all(peer.port, [ptr_name(3)])

    assert targets(reply) == ["genuine.example.jp."]


def test_a_lost_query_is_sent_again_with_the_same_id():
    def script(peer, query, client):
        copies = [entry for entry in peer.queries if entry[1] == query.id]
        if len(copies) >= 2:  # the first copy is "lost"
            peer.send(answer_for(query, "late.example.jp."), client)

    with ScriptedPeer(script).running() as peer:
        (reply,) = resolve_all(peer.port, [ptr_name(5)], timeout=1.5)

    assert targets(reply) == ["late.example.jp."]
    assert len({query_id for _, query_id, _ in peer.queries}) == 1
    assert len(peer.queries) >= 2


def test_a_server_that_never_answers_times_out():
    with ScriptedPeer(lambda peer, query, client: None).running() as peer:
        (reply,) = resolve_all(peer.port, [ptr_name(6)], timeout=0.4)

    assert reply.kind == "timeout"


# A truncated reply is asked again over TCP (tools/minidns.py truncates at 512 bytes).

MANY_NAMES = [f"name-{index:02d}-{'x' * 30}.example.jp." for index in range(30)]
dns_server = dns_server_fixture(
    "".join(f"7.0.18.198.in-addr.arpa PTR {name}\n" for name in MANY_NAMES)
    + "8.0.18.198.in-addr.arpa PTR host8.example.jp. 300\n"
    + "host8.example.jp A 198.18.0.8 60\n"
)


def test_a_truncated_reply_is_asked_again_over_tcp(dns_server):
    (reply,) = resolve_all(dns_server.port, [ptr_name(7)])

    assert sorted(targets(reply)) == MANY_NAMES
    assert [transport for transport, _, _ in dns_server.queries] == ["udp", "tcp"]


# Reading replies.


def reply_to(question: Question, *, rcode=dns.rcode.NOERROR, answer=(), authority=()) -> bytes:
    response = dns.message.make_response(dns.message.make_query(question.name, question.rdtype))
    response.set_rcode(rcode)
    for owner, ttl, rdtype, value in answer:
        response.answer.append(dns.rrset.from_text(owner, ttl, "IN", rdtype, value))
    for owner, ttl, rdtype, value in authority:
        response.authority.append(dns.rrset.from_text(owner, ttl, "IN", rdtype, value))
    return response.to_wire()


QUESTION = Question(dns.name.from_text("9.2.0.192.in-addr.arpa"), PTR)
ZONE_SOA = ("2.0.192.in-addr.arpa.", 900, "SOA", SOA.format(minimum=120))


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        pytest.param(
            {"answer": [(QUESTION.name, 600, "PTR", "mail.example.jp.")]},
            ("answer", ["mail.example.jp."], 600),
            id="answer-ttl",
        ),
        pytest.param(
            {
                "answer": [
                    (QUESTION.name, 3600, "CNAME", "9.0-25.2.0.192.in-addr.arpa."),
                    ("9.0-25.2.0.192.in-addr.arpa.", 200, "PTR", "mail.example.jp."),
                    ("other.example.", 5, "PTR", "unrelated.example."),
                ]
            },
            ("answer", ["mail.example.jp."], 200),
            id="classless-delegation-cname-chain",
        ),
        pytest.param(
            {"answer": [("other.example.", 300, "PTR", "unrelated.example.")]},
            ("nodata", [], None),
            id="records-of-another-name-do-not-answer",
        ),
        pytest.param({"authority": [ZONE_SOA]}, ("nodata", [], 120), id="nodata-soa-minimum"),
        pytest.param(
            {"rcode": dns.rcode.NXDOMAIN, "authority": [ZONE_SOA[:1] + (60,) + ZONE_SOA[2:]]},
            ("nxdomain", [], 60),
            id="nxdomain-soa-ttl-below-minimum",
        ),
        pytest.param(
            {"rcode": dns.rcode.NXDOMAIN}, ("nxdomain", [], None), id="nxdomain-without-soa"
        ),
    ],
)
def test_read_reply(reply, expected):
    parsed = read_reply(reply_to(QUESTION, **reply), QUESTION)

    assert (parsed.kind, targets(parsed), parsed.ttl) == expected


def pointing_at_itself(wire: bytes) -> bytes:
    """`wire` with one answer whose owner name is a compression pointer to itself."""
    header = wire[:6] + b"\x00\x01" + wire[8:12]
    return header + wire[12:] + bytes([0xC0, len(wire)]) + b"\x00\x0c\x00\x01" + bytes(6)


@pytest.mark.parametrize(
    "wire",
    [
        reply_to(QUESTION, rcode=dns.rcode.SERVFAIL),
        reply_to(QUESTION, rcode=dns.rcode.REFUSED),
        reply_to(QUESTION, answer=[(QUESTION.name, 60, "PTR", "a.example.")])[:-3],
        pointing_at_itself(reply_to(QUESTION)),
    ],
    ids=["servfail", "refused", "cut-short", "pointer-loop"],
)
def test_a_failed_or_broken_reply_is_the_servers_failure(wire):
    assert read_reply(wire, QUESTION) is None


# The cache.


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def ptr_reply(target: str, ttl: int | None) -> Reply:
    return read_reply(reply_to(QUESTION, answer=[(QUESTION.name, ttl, "PTR", target)]), QUESTION)


def test_cache_keeps_an_answer_exactly_as_long_as_its_ttl():
    clock = Clock()
    cache = DnsCache(clock=clock)
    cache.put(QUESTION.name, PTR, ptr_reply("mail.example.jp.", 300))

    clock.now += 299.9
    assert targets(cache.get(QUESTION.name, PTR)) == ["mail.example.jp."]
    clock.now += 0.1
    assert cache.get(QUESTION.name, PTR) is None


@pytest.mark.parametrize(
    ("reply", "kept_for"),
    [
        (Reply("nxdomain", ttl=120), 120),
        (Reply("nodata", ttl=10**6), MAX_NEGATIVE_TTL),
        (Reply("answer", records=("x",), ttl=10**7), MAX_TTL),
        (Reply("nxdomain", ttl=None), 0),
        (Reply("answer", records=("x",), ttl=0), 0),
        (Reply("timeout", ttl=300), 0),
        (Reply("failure", ttl=300), 0),
    ],
    ids=["negative-ttl", "negative-capped", "positive-capped", "no-soa", "ttl-zero",
         "timeout", "failure"],
)  # fmt: skip
def test_cache_bounds_ttls_and_never_keeps_failures(reply, kept_for):
    clock = Clock()
    cache = DnsCache(clock=clock)
    cache.put(QUESTION.name, PTR, reply)

    clock.now += kept_for - 0.5
    assert (cache.get(QUESTION.name, PTR) is not None) is (kept_for > 0)
    clock.now += 1
    assert cache.get(QUESTION.name, PTR) is None


def test_a_run_with_a_warm_cache_asks_nothing_until_the_ttl_ends(dns_server):
    clock = Clock()
    cache = DnsCache(clock=clock)

    def run():
        return confirm_names(["198.18.0.8"], nameservers=[HOST], port=dns_server.port, cache=cache)

    first, stats = run()
    assert (first["198.18.0.8"].status, stats.lookups, len(dns_server.queries)) == (
        CONFIRMED, 2, 2
    )  # fmt: skip

    clock.now += 59  # the A record (TTL 60) and the PTR (300) are still fresh
    again, stats = run()
    assert again == first
    assert (stats.lookups, stats.cache_hits, len(dns_server.queries)) == (0, 2, 2)

    clock.now += 1  # the A record expired, the PTR did not
    _, stats = run()
    assert (stats.lookups, stats.cache_hits) == (1, 1)
    assert dns_server.queries[-1][1:] == ("host8.example.jp.", "A")


def test_cache_file_carries_unexpired_answers_to_the_next_run(tmp_path: Path):
    clock = Clock()
    cache = DnsCache(clock=clock)
    hostile = dns.name.from_text("9.2.0.192.in-addr.arpa")
    evil = "evil\\010name\\;rm.{{7*7}}.example."
    cache.put(hostile, PTR, ptr_reply(evil, 600))
    cache.put(dns.name.from_text("gone.example"), dns.rdatatype.A, Reply("nodata", ttl=10))
    cache.put(dns.name.from_text("none.example"), dns.rdatatype.A, Reply("nxdomain", ttl=900))
    path = tmp_path / "dns-cache.json"

    clock.now += 20
    cache.save(path)
    loaded = DnsCache.load(path, clock=clock)

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(loaded) == 2
    assert targets(loaded.get(hostile, PTR)) == [evil]
    assert loaded.get(dns.name.from_text("none.example"), dns.rdatatype.A).kind == "nxdomain"
    clock.now += 580
    assert loaded.get(hostile, PTR) is None


@pytest.mark.parametrize(
    ("content", "warning"),
    [
        ("{not json", "cannot be read"),
        ('{"format": "something-else", "version": 1}', "not an smtpguard DNS cache"),
        (
            json.dumps({"format": "smtpguard-dns-cache", "version": 1, "entries": [
                ["a.example.", "A", "answer", 2e9, ["192.0.2.1"]],
                ["b.example.", "A", "answer", 2e9, ["not an address"]],
                ["c.example.", "A", "forged-kind", 2e9, []],
                "garbage",
            ]}),
            "3 unreadable entries",
        ),
    ],
    ids=["not-json", "other-file", "bad-entries"],
)  # fmt: skip
def test_an_unusable_cache_file_warns_and_asks_dns_again(tmp_path: Path, content, warning):
    path = tmp_path / "dns-cache.json"
    path.write_text(content, encoding="utf-8")
    warnings: list[str] = []

    cache = DnsCache.load(path, clock=Clock(), warn=warnings.append)

    assert len(warnings) == 1 and warning in warnings[0]
    assert len(cache) == (1 if "entries" in content else 0)


def test_a_missing_cache_file_is_an_empty_cache(tmp_path: Path):
    warnings: list[str] = []

    cache = DnsCache.load(tmp_path / "absent.json", warn=warnings.append)

    assert (len(cache), warnings) == (0, [])


def test_lookups_keep_failures_out_of_the_cache():
    class Failing:
        async def resolve(self, name, rdtype):
            return Reply("timeout", detail="timed out")

    cache = DnsCache()

    async def run() -> Reply:
        return await Lookups(Failing(), cache=cache).ask(QUESTION.name, PTR)

    assert asyncio.run(run()).kind == "timeout"
    assert len(cache) == 0


def test_cache_file_goes_into_a_state_directory_not_made_yet(tmp_path: Path):
    # The first cycle of a new state directory: the cache must be kept, not lost with a warning.
    cache = DnsCache(clock=Clock())
    cache.put(dns.name.from_text("gone.example"), dns.rdatatype.A, Reply("nodata", ttl=10))
    path = tmp_path / "state" / "dns-cache.json"
    cache.save(str(path))
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert DnsCache.load(str(path), clock=Clock()).get(
        dns.name.from_text("gone.example"), dns.rdatatype.A
    ) is not None
