"""DNS questions about sources: forward-confirmed reverse DNS and DNSBL risk, on dnspython.

Everything here is asynchronous with bounded concurrency; each question is asked once a run
(`Lookups` keeps the answers) and, with a `DnsCache`, not again until its TTL runs out, also
in later runs when the cache is kept in a file. The synchronous wrappers `confirm_names` and
`dnsbl_risk` are what modules call. Text that comes from DNS only leaves through `clean_text`.

Questions go out over a few shared UDP sockets (`StubResolver`): each carries up to
`QUESTIONS_PER_SOCKET` questions at once, and a reply is taken only when its id, the server it
came from and its question section all match a question waiting on that socket. A truncated
reply is asked again over TCP. dnspython encodes the names and decodes names and records.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import json
import logging
import os
import re
import secrets
import socket
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.reversename

from ansible_collections.campusnet.smtpguard.plugins.module_utils._addresses import (
    IPAddress,
    parse_address,
)

LOG = logging.getLogger(__name__)

CONFIRMED = "confirmed"
UNCONFIRMED = "unconfirmed"
NO_PTR = "none"
ERROR = "error"

# A hostile reverse zone can list many names; only this many are checked forward.
MAX_PTR_NAMES = 4

# Questions waiting on one UDP socket at most. Fewer sockets cost less than one a question;
# several keep the source port as part of what a forged reply has to guess.
QUESTIONS_PER_SOCKET = 64

# Bounds on how long an answer is kept, whatever its TTL says (negative answers: RFC 2308).
MAX_TTL = 86400
MAX_NEGATIVE_TTL = 3600

# Answers of a DNSBL: 127.0.0.0/8 means listed, except the operators' error codes.
_LISTED = ipaddress.ip_network("127.0.0.0/8")
_ERROR_CODES = ipaddress.ip_network("127.255.255.0/24")

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# DNS header (RFC 1035 4.1.1): id, flags, and the four section counts.
_HEADER = struct.Struct("!HHHHHH")
_RECORD = struct.Struct("!HHIH")  # type, class, TTL, data length after an owner name
_QR, _TC, _RD = 0x8000, 0x0200, 0x0100
_NOERROR, _NXDOMAIN = 0, 3
# Questions out at once when a resolver starts, and the fewest it cuts back to after losses:
# as many as the modules ask at once by default, so that a server that answers nothing at
# all costs no more time than before the window existed.
_FIRST_WINDOW = 50
_LEAST_WINDOW = 50
# Within one UDP attempt the query goes out again when no reply came within the server's
# retransmission timeout (RFC 6298: smoothed round trip plus four deviations, at least
# _MIN_RESEND seconds), doubling each time: a query lost in a full receive queue then costs
# about a round trip, not the whole timeout.
_MIN_RESEND = 0.2
# A CNAME chain inside one reply is followed this far.
_MAX_CHAIN = 8
# A receive buffer for replies that arrive together; the kernel caps it at net.core.rmem_max.
_RECEIVE_BUFFER = 1 << 20

Warn = Callable[[str], None]
ZoneSpec = str | Mapping[str, Any]


def clean_text(text: str, *, limit: int = 300) -> str:
    """`text` without control characters and cut to `limit` characters, for results and logs."""
    text = _CONTROL.sub("", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def name_text(name: dns.name.Name) -> str:
    """A name as escaped presentation text without the final dot, safe to show."""
    return clean_text(name.to_text(omit_final_dot=True))


@dataclass
class LookupStats:
    """What one run asked: questions sent, answers reused, and the failures among them.

    `cache_hits` counts the questions answered without asking: asked before in the same run,
    or still within their TTL in the cache.
    """

    lookups: int = 0
    cache_hits: int = 0
    timeouts: int = 0
    failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "lookups": self.lookups,
            "cache_hits": self.cache_hits,
            "timeouts": self.timeouts,
            "failures": self.failures,
        }


@dataclass(frozen=True)
class Reply:
    """The outcome of one question: answer, nodata, nxdomain, timeout or failure.

    `ttl` is how many seconds the outcome may be reused: the smallest TTL along the answer's
    CNAME chain, or for nodata and nxdomain the SOA's negative TTL; None when it may not be.
    """

    kind: str
    records: tuple[Any, ...] = ()
    detail: str = ""
    ttl: int | None = None

    @property
    def failed(self) -> bool:
        return self.kind in ("timeout", "failure")


# Messages on the wire.


class Question:
    """One question, with its question section in wire form to match replies against."""

    __slots__ = ("name", "rdtype", "section")

    def __init__(self, name: dns.name.Name, rdtype: int) -> None:
        self.name = name
        self.rdtype = int(rdtype)
        self.section = name.to_wire() + struct.pack("!HH", self.rdtype, dns.rdataclass.IN)

    def query(self, query_id: int) -> bytes:
        """A standard query with recursion desired, no EDNS."""
        return _HEADER.pack(query_id, _RD, 1, 0, 0, 0) + self.section

    def is_answered_by(self, wire: bytes) -> bool:
        """Whether `wire` is a reply holding exactly this question (names compare caseless)."""
        section = self.section
        if len(wire) < _HEADER.size + len(section):
            return False
        _, flags, questions, _, _, _ = _HEADER.unpack_from(wire)
        if not flags & _QR or questions != 1:
            return False
        echoed = wire[_HEADER.size : _HEADER.size + len(section)]
        # Label lengths are below 64, so lower() only folds the letters of the labels.
        return echoed[:-4].lower() == section[:-4].lower() and echoed[-4:] == section[-4:]


def read_reply(wire: bytes, question: Question) -> Reply | None:
    """The Reply in a response to `question`, or None when the server failed to answer it.

    A server fails with SERVFAIL, REFUSED, any other error code, or a reply dnspython cannot
    decode; the caller then asks the next server. Only the records that answer the question
    (along a CNAME chain) and an SOA in the authority section are decoded.
    """
    try:
        _, flags, questions, answers, authorities, _ = _HEADER.unpack_from(wire)
        rcode = flags & 0x000F
        if rcode not in (_NOERROR, _NXDOMAIN):
            return None
        offset = _HEADER.size + len(question.section) if questions else _HEADER.size
        wanted = (question.rdtype, _CNAME)
        answer, offset = _read_records(wire, offset, answers, wanted, question.name)
        authority, _ = _read_records(wire, offset, authorities, (_SOA,), question.name)
    except (dns.exception.DNSException, struct.error, ValueError):
        return None

    if rcode == _NXDOMAIN:
        return Reply("nxdomain", ttl=_negative_ttl(authority))
    records, ttl = _follow_chain(answer, question)
    if not records:
        return Reply("nodata", ttl=_negative_ttl(authority))
    return Reply("answer", records=records, ttl=ttl)


_CNAME = int(dns.rdatatype.CNAME)
_SOA = int(dns.rdatatype.SOA)
# A compressed name pointing at offset 12: the question's name, right after the header.
_POINTER_TO_QUESTION = b"\xc0\x0c"
_Record = tuple[dns.name.Name, int, int, Any]  # owner, type, TTL, rdata


def _read_records(
    wire: bytes, offset: int, count: int, wanted: tuple[int, ...], question_name: dns.name.Name
) -> tuple[list[_Record], int]:
    """The records of one section whose type is in `wanted` (class IN), and the next offset.

    An owner name that only points back to the question's name (checked by the caller to be
    the name asked) is taken as that name without decoding it again.
    """
    records = []
    for _ in range(count):
        if wire[offset : offset + 2] == _POINTER_TO_QUESTION:
            owner, used = question_name, 2
        else:
            owner, used = dns.name.from_wire(wire, offset)
        rdtype, rdclass, ttl, length = _RECORD.unpack_from(wire, offset + used)
        start = offset + used + _RECORD.size
        if start + length > len(wire):
            raise dns.exception.FormError("a record runs past the end of the reply")
        if rdtype in wanted and rdclass == dns.rdataclass.IN:
            rdata = dns.rdata.from_wire(rdclass, rdtype, wire, start, length)
            # RFC 2181 8: a TTL with the top bit set is zero.
            records.append((owner, rdtype, ttl if ttl < 2**31 else 0, rdata))
        offset = start + length
    return records, offset


def _follow_chain(answer: list[_Record], question: Question) -> tuple[tuple[Any, ...], int]:
    """The records of the asked type at the end of the CNAME chain, and the chain's least TTL."""
    name, ttls = question.name, []
    for _ in range(_MAX_CHAIN):
        found = [(ttl, rdata) for owner, rdtype, ttl, rdata in answer
                 if rdtype == question.rdtype and owner == name]  # fmt: skip
        if found:
            return tuple(rdata for _, rdata in found), min(ttls + [ttl for ttl, _ in found])
        alias = next(((ttl, rdata) for owner, rdtype, ttl, rdata in answer
                      if rdtype == _CNAME and owner == name), None)  # fmt: skip
        if alias is None:
            break
        ttls.append(alias[0])
        name = alias[1].target
    return (), 0


def _negative_ttl(authority: list[_Record]) -> int | None:
    """How long a nodata or nxdomain may be kept (RFC 2308 5): None without an SOA."""
    for _, _, ttl, soa in authority:
        return min(ttl, soa.minimum)
    return None


# Asking over UDP and TCP.


class _Channel(asyncio.DatagramProtocol):
    """One UDP socket carrying several questions at once, told apart by query id."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[int, tuple[tuple[str, int], Question, asyncio.Future[bytes]]] = {}
        self.ignored = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, question: Question, server: tuple[str, int]) -> tuple[int, asyncio.Future]:
        """Send `question` to `server` under a fresh random id; the future gets the reply."""
        query_id = secrets.randbelow(65536)
        while query_id in self.waiting:
            query_id = secrets.randbelow(65536)
        future = asyncio.get_running_loop().create_future()
        self.waiting[query_id] = (server, question, future)
        self.resend(query_id)
        return query_id, future

    def resend(self, query_id: int) -> None:
        server, question, _ = self.waiting[query_id]
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(question.query(query_id), server)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        entry = self.waiting.get(int.from_bytes(data[:2], "big")) if len(data) >= 2 else None
        if entry is None:
            self.ignored += 1
            return
        server, question, future = entry
        # A reply from elsewhere, or for another question under a reused id, is not ours.
        if (addr[0], addr[1]) != server or future.done() or not question.is_answered_by(data):
            self.ignored += 1
            return
        future.set_result(data)

    def error_received(self, exc: Exception) -> None:
        LOG.debug("DNS socket error: %r", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        for _, _, future in self.waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("the DNS socket closed"))


class _RoundTrip:
    """The smoothed round trip to one server and when to send a query again (RFC 6298)."""

    def __init__(self, timeout: float) -> None:
        self.smoothed: float | None = None
        self.deviation = 0.0
        # Before the first answer: a third of the timeout, at most RFC 6298's one second.
        self.resend_after = min(1.0, timeout / 3)

    def measure(self, seconds: float) -> None:
        if self.smoothed is None:
            self.smoothed, self.deviation = seconds, seconds / 2
        else:
            self.deviation = 0.75 * self.deviation + 0.25 * abs(self.smoothed - seconds)
            self.smoothed = 0.875 * self.smoothed + 0.125 * seconds
        self.resend_after = max(_MIN_RESEND, self.smoothed + 4 * self.deviation)


class _Window:
    """How many questions may be out at once: one more after each answer, half after a loss.

    Additive increase and multiplicative decrease, as TCP does: a server that drops queries
    because its receive queue is full gets fewer, instead of the same ones again and again.
    It starts at `first`, never exceeds `limit` and never falls below `_LEAST_WINDOW`.
    """

    def __init__(self, limit: int, first: int = _FIRST_WINDOW) -> None:
        self.limit = max(1, limit)
        self.size = float(min(self.limit, first))
        self.out = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._cut_at = -1.0

    async def enter(self) -> None:
        while self.out >= int(self.size):
            future = asyncio.get_running_loop().create_future()
            self._waiting.append(future)
            try:
                await future
            finally:
                if not future.done():
                    future.cancel()
        self.out += 1

    def leave(self) -> None:
        self.out -= 1
        self._wake()

    def answered(self) -> None:
        self.size = min(float(self.limit), self.size + 1)
        self._wake()

    def lost(self, *, now: float, round_trip: float) -> None:
        """Halve the window, at most once a round trip (one burst of losses is one loss)."""
        if now - self._cut_at >= round_trip:
            self.size = max(float(_LEAST_WINDOW), self.size / 2)
            self._cut_at = now

    def _wake(self) -> None:
        room = int(self.size) - self.out
        while room > 0 and self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(None)
                room -= 1


class StubResolver:
    """Asks `nameservers` on `port` in turn: `timeout` an attempt, `lifetime` a question.

    A server that answers with an error (SERVFAIL, REFUSED) or an undecodable reply is not
    asked that question again; servers that time out are asked again while the lifetime
    lasts. Call `close()` before the event loop ends.
    """

    def __init__(
        self,
        nameservers: Sequence[str],
        *,
        port: int,
        timeout: float,
        lifetime: float,
        window: int = 1000,
        first_window: int = _FIRST_WINDOW,
    ) -> None:
        self.nameservers = list(nameservers)
        self.port = port
        self.timeout = timeout
        self.lifetime = lifetime
        self._window = _Window(window, first_window)
        self._channels: dict[int, list[_Channel]] = {}
        self._opening: asyncio.Lock | None = None
        self._round_trips: dict[str, _RoundTrip] = {}

    async def resolve(self, name: dns.name.Name, rdtype: int) -> Reply:
        question = Question(name, int(rdtype))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lifetime
        servers = list(self.nameservers)
        while servers:
            for server in tuple(servers):
                remaining = deadline - loop.time()
                # An attempt shorter than a tenth of the timeout is not worth making.
                if remaining < self.timeout / 10:
                    return Reply("timeout", detail="timed out")
                wire = await self._udp(question, server, min(self.timeout, remaining))
                if wire is not None and _HEADER.unpack_from(wire)[1] & _TC:
                    wire = await self._tcp(question, server, max(deadline - loop.time(), 0.0))
                if wire is None:
                    continue
                reply = read_reply(wire, question)
                if reply is not None:
                    return reply
                servers.remove(server)
        return Reply("failure", detail="no server answered (SERVFAIL or refused)")

    async def _udp(self, question: Question, server: str, timeout: float) -> bytes | None:
        """The reply within `timeout`, or None; the query is sent again while none comes.

        The copies carry the same id, so a late reply to any of them counts. Only replies to
        a query sent once measure the round trip (Karn's rule).
        """
        loop = asyncio.get_running_loop()
        round_trip = self._round_trips.setdefault(server, _RoundTrip(self.timeout))
        await self._window.enter()
        channel = await self._channel(server)
        query_id, future = channel.send(question, (server, self.port))
        started = loop.time()
        deadline, wait, resent = started + timeout, round_trip.resend_after, False
        try:
            while True:
                await asyncio.wait((future,), timeout=max(0.0, min(wait, deadline - loop.time())))
                if future.done():
                    if future.exception() is not None:
                        return None
                    if not resent:
                        round_trip.measure(loop.time() - started)
                    self._window.answered()
                    return future.result()
                self._window.lost(now=loop.time(), round_trip=round_trip.resend_after)
                if loop.time() >= deadline:
                    return None
                channel.resend(query_id)
                resent, wait = True, wait * 2
        finally:
            channel.waiting.pop(query_id, None)
            future.cancel()
            self._window.leave()

    async def _tcp(self, question: Question, server: str, timeout: float) -> bytes | None:
        """The whole reply over TCP, after a truncated one over UDP; None when none came."""

        async def exchange() -> bytes:
            reader, writer = await asyncio.open_connection(server, self.port)
            try:
                query = question.query(secrets.randbelow(65536))
                writer.write(len(query).to_bytes(2, "big") + query)
                await writer.drain()
                length = int.from_bytes(await reader.readexactly(2), "big")
                reply = await reader.readexactly(length)
            finally:
                writer.close()
            return reply if reply[:2] == query[:2] and question.is_answered_by(reply) else b""

        try:
            return await asyncio.wait_for(exchange(), timeout) or None
        except (asyncio.IncompleteReadError, OSError):
            return None

    async def _channel(self, server: str) -> _Channel:
        """A socket of the server's address family with room for one more question."""
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        channels = self._channels.setdefault(family, [])
        for channel in channels:
            if len(channel.waiting) < QUESTIONS_PER_SOCKET:
                return channel
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            for channel in channels:
                if len(channel.waiting) < QUESTIONS_PER_SOCKET:
                    return channel
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
                sock.setblocking(False)
                _, channel = await asyncio.get_running_loop().create_datagram_endpoint(
                    _Channel, sock=sock
                )
            except BaseException:
                sock.close()
                raise
            channels.append(channel)
            return channel

    def close(self) -> None:
        """Close every socket; questions still waiting fail."""
        for channels in self._channels.values():
            for channel in channels:
                if channel.transport is not None:
                    channel.transport.close()
        self._channels.clear()
        self._opening = None


def make_resolver(
    *,
    nameservers: Sequence[str] | None = None,
    port: int = 53,
    timeout: float = 2.0,
    lifetime: float | None = None,
) -> StubResolver:
    """A resolver asking `nameservers` on `port`, or the system's resolvers when none are given.

    `timeout` bounds one attempt at one server; `lifetime` one whole question and defaults to
    one attempt per server.
    """
    if timeout <= 0:
        raise ValueError(f"the DNS timeout must be positive, not {timeout!r}")
    if not 0 < port < 65536:
        raise ValueError(f"the DNS port must be between 1 and 65535, not {port!r}")

    servers = []
    for server in nameservers or _system_nameservers():
        address = parse_address(str(server))
        if address is None:
            raise ValueError(f"nameserver {server!r} is not an IP address")
        servers.append(str(address))
    lifetime = lifetime if lifetime else timeout * max(1, len(servers))
    return StubResolver(servers, port=port, timeout=timeout, lifetime=lifetime)


def _system_nameservers() -> list[str]:
    """The nameservers of the system's resolver configuration (/etc/resolv.conf)."""
    try:
        configured = dns.resolver.Resolver(configure=True).nameservers
    except (OSError, dns.exception.DNSException) as exc:
        raise ValueError(
            f"no nameservers given and the system resolver configuration is unusable ({exc});"
            " set nameservers"
        ) from None
    servers = [str(server) for server in configured]
    if not servers or any(parse_address(server) is None for server in servers):
        raise ValueError(
            "no nameservers given and the system resolver configuration lists none usable"
            f" ({', '.join(clean_text(s) for s in servers) or 'none'}); set nameservers"
        )
    return servers


# Keeping answers.


class DnsCache:
    """Answers kept until their TTL runs out (at most MAX_TTL, negative ones MAX_NEGATIVE_TTL).

    Timeouts and failures are never kept, nor anything without a TTL (a negative answer
    without an SOA). `load` and `save` carry the cache to the next run in a JSON file.
    """

    FORMAT = "smtpguard-dns-cache"
    VERSION = 1

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._entries: dict[tuple[dns.name.Name, int], tuple[float, Reply]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: dns.name.Name, rdtype: int) -> Reply | None:
        """The kept outcome of a question, or None when there is none or it expired."""
        key = (name, int(rdtype))
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, name: dns.name.Name, rdtype: int, reply: Reply) -> None:
        if reply.failed or reply.ttl is None:
            return
        ttl = min(reply.ttl, MAX_TTL if reply.kind == "answer" else MAX_NEGATIVE_TTL)
        if ttl > 0:
            self._entries[(name, int(rdtype))] = (self.clock() + ttl, reply)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time,
             warn: Warn | None = None) -> DnsCache:  # fmt: skip
        """The unexpired entries of a cache file; a missing file is an empty cache.

        A file that cannot be read is ignored with a warning: the run asks DNS again.
        """
        cache = cls(clock=clock)
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return cache
        except (OSError, ValueError) as exc:
            _warn(warn, f"DNS cache {path} cannot be read ({exc}); asking DNS again")
            return cache
        if not isinstance(data, dict) or (data.get("format"), data.get("version")) != (
            cls.FORMAT, cls.VERSION
        ):  # fmt: skip
            _warn(warn, f"DNS cache {path} is not an smtpguard DNS cache; asking DNS again")
            return cache

        now, skipped = clock(), 0
        for entry in data.get("entries") or ():
            try:
                name, type_text, kind, expires, texts = entry
                if float(expires) <= now:
                    continue
                if kind not in ("answer", "nodata", "nxdomain"):
                    raise ValueError(kind)
                rdtype = dns.rdatatype.from_text(type_text)
                records = tuple(dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)
                                for text in texts)  # fmt: skip
                reply = Reply(kind, records=records)
                cache._entries[(dns.name.from_text(name), int(rdtype))] = (float(expires), reply)
            except (TypeError, ValueError, dns.exception.DNSException):
                skipped += 1
        if skipped:
            _warn(warn, f"DNS cache {path}: {skipped} unreadable entries were left out")
        return cache

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the unexpired entries to `path` atomically, readable by the owner only."""
        now = self.clock()
        entries = [
            [name.to_text(), dns.rdatatype.to_text(rdtype), reply.kind, round(expires, 3),
             [record.to_text() for record in reply.records]]
            for (name, rdtype), (expires, reply) in self._entries.items()
            if expires > now
        ]  # fmt: skip
        data = {"format": self.FORMAT, "version": self.VERSION, "entries": entries}
        directory = os.path.dirname(os.path.abspath(path))
        # The first run of a new state directory comes before anything else made it.
        os.makedirs(directory, mode=0o700, exist_ok=True)
        handle, partial = tempfile.mkstemp(prefix=".dns-cache.", dir=directory)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(data, stream, separators=(",", ":"))
            os.replace(partial, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise


class Lookups:
    """The DNS questions of one run: at most `concurrency` at a time, each asked once.

    With a `cache`, a question still within its TTL there is not asked at all, and every new
    answer is put into it.
    """

    def __init__(
        self, resolver: Any, *, concurrency: int = 50, cache: DnsCache | None = None
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency!r}")
        self.resolver = resolver
        self.cache = cache
        self.concurrency = concurrency
        self.stats = LookupStats()
        self._semaphore = asyncio.Semaphore(concurrency)
        self._replies: dict[tuple[dns.name.Name, int], asyncio.Future[Reply]] = {}

    async def ask(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> Reply:
        key = (name, int(rdtype))
        pending = self._replies.get(key)
        if pending is None:
            kept = self.cache.get(name, rdtype) if self.cache is not None else None
            if kept is not None:
                self.stats.cache_hits += 1
                return kept
            pending = asyncio.ensure_future(self._query(name, rdtype))
            self._replies[key] = pending
        else:
            self.stats.cache_hits += 1
        return await asyncio.shield(pending)

    async def _query(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> Reply:
        async with self._semaphore:
            self.stats.lookups += 1
            try:
                reply = await self.resolver.resolve(name, rdtype)
            except dns.exception.DNSException as exc:
                reply = Reply("failure", detail=clean_text(type(exc).__name__))
        if reply.kind == "timeout":
            self.stats.timeouts += 1
        elif reply.kind == "failure":
            self.stats.failures += 1
        elif self.cache is not None:
            self.cache.put(name, rdtype, reply)
        return reply


# Forward-confirmed reverse DNS.


@dataclass(frozen=True)
class PtrResult:
    """What reverse DNS says about one source.

    `name` is the confirmed name, or the first PTR name when none confirms; `detail` says why
    in a few words.
    """

    address: str
    status: str
    name: dns.name.Name | None = None
    detail: str = ""

    @property
    def name_text(self) -> str | None:
        return None if self.name is None else name_text(self.name)


def reverse_name(address: IPAddress) -> dns.name.Name:
    """The PTR name of `address` (`4.3.2.1.in-addr.arpa.`, nibbles under ip6.arpa)."""
    return dns.name.Name(address.reverse_pointer.encode("ascii").split(b".") + [b""])


async def check_ptr(address: IPAddress, *, lookups: Lookups) -> PtrResult:
    """Look up the PTR names of `address` and whether one resolves back to it."""
    text = str(address)
    reply = await lookups.ask(reverse_name(address), dns.rdatatype.PTR)
    if reply.failed:
        return PtrResult(text, ERROR, detail=f"PTR lookup {reply.detail}")
    if not reply.records:
        return PtrResult(text, NO_PTR, detail="no PTR record")

    names = sorted({record.target for record in reply.records})[:MAX_PTR_NAMES]
    rdtype = dns.rdatatype.A if address.version == 4 else dns.rdatatype.AAAA
    if len(names) == 1:
        forward = [await lookups.ask(names[0], rdtype)]
    else:
        forward = await asyncio.gather(*(lookups.ask(name, rdtype) for name in names))

    for name, answer in zip(names, forward, strict=True):
        if any(parse_address(record.address) == address for record in answer.records):
            return PtrResult(text, CONFIRMED, name=name, detail="forward-confirmed")

    failed = [(name, answer) for name, answer in zip(names, forward, strict=True) if answer.failed]
    if failed:
        name, answer = failed[0]
        return PtrResult(
            text,
            ERROR,
            name=names[0],
            detail=f"forward lookup of {name_text(name)} {answer.detail}",
        )
    return PtrResult(text, UNCONFIRMED, name=names[0], detail="does not resolve back to the source")


async def check_ptrs(addresses: Iterable[IPAddress], *, lookups: Lookups) -> dict[str, PtrResult]:
    """`check_ptr` for every address, concurrently; keys are the normalised address texts."""
    unique = list(dict.fromkeys(addresses))
    results = await _each(unique, lambda a: check_ptr(a, lookups=lookups), lookups.concurrency)
    return {result.address: result for result in results}


async def _each(
    items: Sequence[Any], function: Callable[[Any], Awaitable[Any]], workers: int
) -> list[Any]:
    """`function` of every item, in order, by at most `workers` coroutines at a time.

    Few workers taking the next item instead of one task per item keep the event loop's
    queues short when there are tens of thousands of items.
    """
    results: list[Any] = [None] * len(items)
    indexes = iter(range(len(items)))

    async def work() -> None:
        for index in indexes:
            results[index] = await function(items[index])

    await asyncio.gather(*(work() for _ in range(max(1, min(workers, len(items))))))
    return results


def confirm_names(
    addresses: Iterable[str],
    *,
    nameservers: Sequence[str] | None = None,
    port: int = 53,
    timeout: float = 2.0,
    lifetime: float | None = None,
    concurrency: int = 50,
    cache: DnsCache | None = None,
) -> tuple[dict[str, PtrResult], LookupStats]:
    """Forward-confirmed reverse DNS for `addresses` in one run, with the run's statistics.

    `cache` answers what it still holds and keeps the new answers.
    """
    parsed = _parse_addresses(addresses)
    resolver = make_resolver(nameservers=nameservers, port=port, timeout=timeout, lifetime=lifetime)

    async def run() -> tuple[dict[str, PtrResult], LookupStats]:
        lookups = Lookups(resolver, concurrency=concurrency, cache=cache)
        try:
            return await check_ptrs(parsed, lookups=lookups), lookups.stats
        finally:
            resolver.close()

    return asyncio.run(run())


# DNSBL risk.


@dataclass(frozen=True)
class DnsblZone:
    """One DNS block list and the risk (percent) a listing there adds."""

    zone: dns.name.Name
    weight: float = 100.0

    @property
    def label(self) -> str:
        return name_text(self.zone)


def parse_dnsbl_zones(zones: Iterable[ZoneSpec]) -> list[DnsblZone]:
    """Read `[{zone, weight}]` (or bare zone names); errors name the bad entry."""
    parsed = []
    for entry in zones or ():
        spec = {"zone": entry} if isinstance(entry, str) else dict(entry)
        unknown = sorted(set(spec) - {"zone", "weight"})
        if unknown:
            raise ValueError(f"DNSBL entry {entry!r} has unknown keys {unknown}; use zone, weight")

        zone = str(spec.get("zone") or "").strip().strip(".")
        try:
            name = dns.name.from_text(zone) if zone else None
        except dns.exception.DNSException as exc:
            raise ValueError(f"DNSBL zone {zone!r} is not a domain name: {exc}") from None
        if name is None:
            raise ValueError(f"DNSBL entry {entry!r} needs a zone")

        try:
            weight = float(spec.get("weight", 100.0))
        except (TypeError, ValueError):
            raise ValueError(f"DNSBL zone {zone!r} has a weight that is not a number") from None
        if not 0 <= weight <= 100:
            raise ValueError(f"DNSBL zone {zone!r} weight must be 0 to 100, not {weight}")
        parsed.append(DnsblZone(name, weight))
    return parsed


def dnsbl_query_name(address: IPAddress, zone: dns.name.Name) -> dns.name.Name:
    """`<reversed octets or nibbles>.<zone>`: 192.0.2.1 in zen.example is 1.2.0.192.zen.example."""
    reverse = reverse_name(address)
    suffix = dns.reversename.ipv4_reverse_domain
    if address.version == 6:
        suffix = dns.reversename.ipv6_reverse_domain
    return reverse.relativize(suffix).derelativize(zone)


def classify_dnsbl(reply: Reply) -> str:
    """`listed`, `clean`, `error-code` (an operator's 127.255.255.x), `bogus` or `failed`."""
    if reply.failed:
        return "failed"
    if not reply.records:
        return "clean"
    answers = [ipaddress.ip_address(record.address) for record in reply.records]
    if any(a in _LISTED and a not in _ERROR_CODES for a in answers):
        return "listed"
    if any(a in _ERROR_CODES for a in answers):
        return "error-code"
    return "bogus"


async def check_dnsbls(
    addresses: Iterable[IPAddress],
    *,
    zones: Sequence[DnsblZone],
    lookups: Lookups,
    warn: Warn | None = None,
) -> dict[str, float | None]:
    """The risk of every address from the block lists that list it.

    The risk is the sum of the weights of the zones listing the address, at most 100; None
    when no zone gave a usable answer for it (timeout, failure, error code).
    """
    unique = list(dict.fromkeys(addresses))
    questions = [(a, z) for a in unique for z in zones]
    names = [dnsbl_query_name(address, zone.zone) for address, zone in questions]
    replies = await _each(
        names, lambda name: lookups.ask(name, dns.rdatatype.A), lookups.concurrency
    )

    risk: dict[str, float | None] = {str(a): None for a in unique}
    ignored: dict[tuple[str, str, str], list[str]] = {}
    for (address, zone), reply in zip(questions, replies, strict=True):
        verdict = classify_dnsbl(reply)
        if verdict in ("error-code", "bogus"):
            codes = ", ".join(sorted({record.address for record in reply.records}))
            ignored.setdefault((zone.label, verdict, codes), []).append(str(address))
        if verdict in ("listed", "clean"):
            weight = zone.weight if verdict == "listed" else 0.0
            risk[str(address)] = min(100.0, (risk[str(address)] or 0.0) + weight)

    for (zone_label, verdict, codes), sources in ignored.items():
        meaning = "a list operator's error code" if verdict == "error-code" else "not in 127/8"
        _warn(
            warn,
            f"DNSBL {zone_label} answered {clean_text(codes)} ({meaning}) for {len(sources)}"
            f" source(s), e.g. {sources[0]}; those answers were ignored",
        )
    return risk


def dnsbl_risk(
    addresses: Iterable[str],
    *,
    zones: Iterable[ZoneSpec],
    nameservers: Sequence[str] | None = None,
    port: int = 53,
    timeout: float = 2.0,
    lifetime: float | None = None,
    concurrency: int = 50,
    warn: Warn | None = None,
    cache: DnsCache | None = None,
) -> dict[str, float | None]:
    """Risk in percent per source from DNS block lists: 0.0 when not listed, None when unknown."""
    parsed = _parse_addresses(addresses)
    parsed_zones = parse_dnsbl_zones(zones)
    if not parsed_zones:
        raise ValueError("no DNSBL zones given")
    resolver = make_resolver(nameservers=nameservers, port=port, timeout=timeout, lifetime=lifetime)

    async def run() -> dict[str, float | None]:
        lookups = Lookups(resolver, concurrency=concurrency, cache=cache)
        try:
            return await check_dnsbls(parsed, zones=parsed_zones, lookups=lookups, warn=warn)
        finally:
            resolver.close()

    return asyncio.run(run())


def _parse_addresses(addresses: Iterable[str]) -> list[IPAddress]:
    parsed = []
    for text in addresses:
        address = parse_address(str(text))
        if address is None:
            raise ValueError(f"{clean_text(str(text))!r} is not an IP address")
        parsed.append(address)
    return parsed


def _warn(warn: Warn | None, message: str) -> None:
    if warn is None:
        LOG.warning("%s", message)
    else:
        warn(message)
