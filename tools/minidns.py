#!/usr/bin/env python3
"""A small authoritative DNS server for tests and the lab: one record table, UDP and TCP.

Zone file, one record a line (``#`` starts a comment; every name is taken as absolute):

    NAME TYPE VALUE [TTL]

    9.113.0.203.in-addr.arpa  PTR  mail.example.ac.jp.
    mail.example.ac.jp        A    203.0.113.9          600
    9.113.0.203.dnsbl.example A    127.0.0.2

VALUE is in the usual presentation format, escapes included; `;` starts a comment there, so a
name holding one is written ``evil\\;name.example.``, and a space inside a label as ``\\032``.
When VALUE has several fields (MX, TXT) a last field that is a whole number is the TTL;
quote a TXT string that is only digits. A name that has no record is NXDOMAIN; a known
name without the asked type is NOERROR with an empty answer (NODATA).

Library use, with test hooks (added latency, a per-name delay, names never answered, names
answered with SERVFAIL):

    with DNSServer(load_zone_file("records.zone"), host="127.0.0.1", port=0) as server:
        server.delay("slow.example", 0.2)
        server.drop("9.113.0.203.dnsbl.example")
        resolver.port = server.port

Script use, until SIGTERM or SIGINT:

    python tools/minidns.py --listen 127.0.0.1 --port 0 --zone records.zone --portfile port
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import re
import signal
import socket
import struct
import sys
import threading
import traceback
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

DEFAULT_TTL = 300
_COMMENT = re.compile(r"(^|\s)#.*$")
_BIND_ATTEMPTS = 20


class ZoneError(ValueError):
    """A record that cannot be read; the message names the file and line."""


def _name(text: str | dns.name.Name) -> dns.name.Name:
    if isinstance(text, dns.name.Name):
        return text.derelativize(dns.name.root)
    return dns.name.from_text(text, origin=dns.name.root)


class Zone:
    """Records by owner name and type; every name is absolute."""

    def __init__(self) -> None:
        self._rrsets: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], dns.rrset.RRset] = {}
        self._names: set[dns.name.Name] = set()

    @classmethod
    def from_text(cls, text: str, *, source: str = "<zone>") -> Zone:
        return cls().read(text, source=source)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Zone:
        return cls().read_file(path)

    def read(self, text: str, *, source: str = "<zone>") -> Zone:
        """Add every record in `text`; a bad line raises ZoneError naming it."""
        for number, line in enumerate(text.splitlines(), start=1):
            try:
                self.add_line(line)
            except (ValueError, dns.exception.DNSException) as exc:
                raise ZoneError(f"{source} line {number}: {exc} ({line.strip()!r})") from None
        return self

    def read_file(self, path: str | os.PathLike[str]) -> Zone:
        return self.read(Path(path).read_text(encoding="utf-8"), source=str(path))

    def add_line(self, line: str) -> None:
        """Add one `NAME TYPE VALUE [TTL]` line; blank and comment lines add nothing."""
        line = _COMMENT.sub("", line).strip()
        if not line:
            return

        fields = line.split(None, 2)
        if len(fields) < 3:
            raise ValueError("expected NAME TYPE VALUE [TTL]")
        name, rdtype, value = fields

        ttl = DEFAULT_TTL
        head, _, last = value.rpartition(" ")
        if head.strip() and last.isdigit():
            value, ttl = head.strip(), int(last)

        self.add(name, rdtype, value, ttl=ttl)

    def add(
        self, name: str | dns.name.Name, rdtype: str, value: str, *, ttl: int = DEFAULT_TTL
    ) -> None:
        """Add one record; records of the same name and type form one RRset."""
        owner = _name(name)
        rrset = dns.rrset.from_text_list(
            owner, ttl, dns.rdataclass.IN, rdtype, [value], origin=dns.name.root, relativize=False
        )

        key = (owner, rrset.rdtype)
        if key in self._rrsets:
            for rdata in rrset:
                self._rrsets[key].add(rdata, ttl)
        else:
            self._rrsets[key] = rrset
        self._names.add(owner)

    def lookup(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> tuple[dns.rcode.Rcode, list[dns.rrset.RRset]]:
        """The rcode and answer RRsets for one question."""
        if name not in self._names:
            return dns.rcode.NXDOMAIN, []
        if rdtype == dns.rdatatype.ANY:
            return dns.rcode.NOERROR, [r for (n, _), r in self._rrsets.items() if n == name]
        rrset = self._rrsets.get((name, rdtype))
        return dns.rcode.NOERROR, [rrset] if rrset is not None else []

    def __len__(self) -> int:
        return len(self._rrsets)


def load_zone_file(path: str | os.PathLike[str]) -> Zone:
    """The records of one zone file; a bad line raises ZoneError naming it."""
    return Zone.from_file(path)


class DNSServer:
    """An authoritative server for one Zone on a UDP and a TCP socket of the same port.

    It runs an asyncio loop in a background thread. The hooks (`latency`, `delay`, `drop`,
    `servfail`) may change while it runs; `queries` records every question as
    (transport, name, type).
    """

    def __init__(self, zone: Zone | None = None, *, host: str = "127.0.0.1", port: int = 0):
        self.zone = zone if zone is not None else Zone()
        self.host = host
        self.latency = 0.0
        self.queries: list[tuple[str, str, str]] = []
        self._requested_port = port
        self._port: int | None = None
        self._delays: dict[dns.name.Name, float] = {}
        self._dropped: set[dns.name.Name] = set()
        self._failing: set[dns.name.Name] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the DNS server is not started")
        return self._port

    def delay(self, name: str, seconds: float) -> None:
        """Answer questions for `name` only after `seconds` (on top of `latency`)."""
        self._delays[_name(name)] = seconds

    def drop(self, name: str, dropped: bool = True) -> None:
        """Never answer questions for `name`: the client times out."""
        if dropped:
            self._dropped.add(_name(name))
        else:
            self._dropped.discard(_name(name))

    def servfail(self, name: str, failing: bool = True) -> None:
        """Answer questions for `name` with SERVFAIL."""
        if failing:
            self._failing.add(_name(name))
        else:
            self._failing.discard(_name(name))

    def clear_hooks(self) -> None:
        self.latency = 0.0
        self._delays.clear()
        self._dropped.clear()
        self._failing.clear()

    def start(self) -> DNSServer:
        if self._thread is not None:
            raise RuntimeError("the DNS server is already started")
        self._udp, self._tcp = _bind_pair(self.host, self._requested_port)
        self._port = self._udp.getsockname()[1]

        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name=f"minidns:{self._port}", daemon=True
        )
        self._thread.start()
        ready.wait()

        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close both sockets and end the thread; safe to call twice."""
        if self._thread is None or self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> DNSServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # The loop thread.

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = self._loop
        assert loop is not None and self._udp is not None and self._tcp is not None
        asyncio.set_event_loop(loop)
        try:
            self._udp_transport, _ = loop.run_until_complete(
                loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=self._udp)
            )
            self._tcp_server = loop.run_until_complete(
                asyncio.start_server(self._serve_tcp, sock=self._tcp)
            )
        except BaseException as exc:  # handed to start() in the calling thread
            failure.append(exc)
            self._udp.close()
            self._tcp.close()
            loop.close()
            ready.set()
            return

        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _shutdown(self) -> None:
        self._udp_transport.close()
        self._tcp_server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._tcp_server.wait_closed()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # so that stop() cancels a connection waiting on a delay
        self._writers.add(writer)
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                wire = await reader.readexactly(length)
                reply = await self.answer_safely(wire, transport="tcp")
                if reply is not None:
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # stop() ends the connection. Returning instead of re-raising: Python 3.11's
            # stream protocol calls exception() on the finished task, which raises if cancelled.
            pass
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def answer_safely(self, wire: bytes, *, transport: str) -> bytes | None:
        """`answer`, turning a failure of this server into SERVFAIL and a traceback on stderr."""
        try:
            return await self.answer(wire, transport=transport)
        except asyncio.CancelledError:
            raise
        except Exception:
            traceback.print_exc(file=sys.stderr)
            return _header_only(wire, dns.rcode.SERVFAIL)

    async def answer(self, wire: bytes, *, transport: str) -> bytes | None:
        """The reply to one query in wire format, or None when it must go unanswered."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return _header_only(wire, dns.rcode.FORMERR)

        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response.to_wire()
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()

        question = query.question[0]
        name = question.name
        self.queries.append((transport, name.to_text(), dns.rdatatype.to_text(question.rdtype)))
        if name in self._dropped:
            return None

        wait = self.latency + self._delays.get(name, 0.0)
        if wait > 0:
            await asyncio.sleep(wait)

        if name in self._failing:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        if question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        rcode, rrsets = self.zone.lookup(name, question.rdtype)
        response.set_rcode(rcode)
        response.answer.extend(rrsets)

        if transport == "tcp":
            return response.to_wire()
        limit = max(query.payload, 512) if query.edns >= 0 else 512
        return response.to_wire(max_size=limit, prefer_truncation=True)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer):
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server._spawn(self._reply(data, addr))

    async def _reply(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = await self.server.answer_safely(data, transport="udp")
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)


def _header_only(wire: bytes, rcode: dns.rcode.Rcode) -> bytes | None:
    """A bare reply header with `rcode` for the query in `wire`; nothing if it has no id."""
    if len(wire) < 2:
        return None
    flags = dns.flags.QR | rcode
    return wire[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same port; port 0 picks a free one for both."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(_BIND_ATTEMPTS if port == 0 else 1):
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            tcp.bind((host, port))
            tcp.listen(64)
            udp.bind((host, tcp.getsockname()[1]))
        except OSError as exc:
            tcp.close()
            udp.close()
            if port == 0 and exc.errno == errno.EADDRINUSE:
                continue
            raise
        tcp.setblocking(False)
        udp.setblocking(False)
        return udp, tcp
    raise OSError(errno.EADDRINUSE, f"no free port on {host} for both UDP and TCP")


# Script use.


def _parse_arguments(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port for UDP and TCP; 0 picks one")
    parser.add_argument("--zone", action="append", required=True, help="zone file; repeatable")
    parser.add_argument("--pidfile", help="write the process id here; removed on exit")
    parser.add_argument("--portfile", help="write the bound port here; removed on exit")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to answers")
    parser.add_argument("--delay", action="append", default=[], metavar="NAME=SECONDS")
    parser.add_argument("--drop", action="append", default=[], metavar="NAME")
    return parser.parse_args(None if argv is None else list(argv))


def _write_atomically(path: str, text: str) -> None:
    partial = f"{path}.partial"
    Path(partial).write_text(text, encoding="utf-8")
    os.replace(partial, path)


def main(argv: Iterable[str] | None = None) -> int:
    arguments = _parse_arguments(argv)

    zone = Zone()
    try:
        for path in arguments.zone:
            zone.read_file(path)
    except (OSError, ZoneError) as exc:
        print(f"minidns: {exc}", file=sys.stderr)
        return 2

    server = DNSServer(zone, host=arguments.listen, port=arguments.port)
    server.latency = arguments.latency
    for item in arguments.delay:
        name, _, seconds = item.rpartition("=")
        server.delay(name, float(seconds))
    for name in arguments.drop:
        server.drop(name)

    # Block the signals before the server thread exists so that only sigwait() sees them.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    written: list[str] = []
    with server:
        if arguments.pidfile:
            _write_atomically(arguments.pidfile, f"{os.getpid()}\n")
            written.append(arguments.pidfile)
        if arguments.portfile:
            _write_atomically(arguments.portfile, f"{server.port}\n")
            written.append(arguments.portfile)
        print(server.port, flush=True)
        try:
            signal.sigwait(stop_signals)
        finally:
            for path in written:
                Path(path).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
