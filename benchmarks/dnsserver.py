#!/usr/bin/env python3
"""The benchmark's DNS server: authoritative answers from a zone, every one `--latency` late.

    dnsserver.py --zone candidates.zone --latency 0.05 --portfile dns.port

The zone has one record a line, `NAME TYPE VALUE [TTL]` (the tools/minidns.py format without
its test hooks). Every reply is built with dnspython when the server starts, so that answering
costs a look-up and a timer: the figure then measures the client against a distant resolver,
not the server's own parsing (tools/minidns.py spends about a quarter of a millisecond of CPU
on each question, which alone would take 5 s for 20,000 of them). A name that is not in the
zone is NXDOMAIN. UDP only, on 127.0.0.1; runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import struct
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

# Bursts of hundreds of questions must not overflow the receive queue (capped by rmem_max).
_BUFFER = 4 << 20
_HEADER = 12


def load_replies(path: Path) -> dict[bytes, bytes]:
    """Reply wire (id left zero) by question section (name lowercased, type, class IN)."""
    rrsets: dict[tuple[dns.name.Name, int], dns.rrset.RRset] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        name, rdtype, value = dns.name.from_text(fields[0]), fields[1], fields[2]
        ttl = int(fields[3]) if len(fields) > 3 else 300
        rrset = dns.rrset.from_text(name, ttl, "IN", rdtype, value)
        key = (name, int(rrset.rdtype))
        if key in rrsets:
            rrsets[key].union_update(rrset)
        else:
            rrsets[key] = rrset

    replies = {}
    for (name, rdtype), rrset in rrsets.items():
        query = dns.message.make_query(name, rdtype)
        query.id = 0
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.answer.append(rrset)
        replies[_question(query.to_wire())] = response.to_wire()
    return replies


def _question(wire: bytes) -> bytes:
    """The question section of a query, its name lowercased; b"" when there is none."""
    end = _HEADER
    while end < len(wire) and wire[end]:
        if wire[end] >= 64:  # a compressed or unknown label type: not a plain question
            return b""
        end += wire[end] + 1
    if end + 5 > len(wire):
        return b""
    return wire[_HEADER:end].lower() + wire[end : end + 5]


class _Server(asyncio.DatagramProtocol):
    def __init__(self, replies: dict[bytes, bytes], latency: float):
        self.replies, self.latency = replies, latency
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        question = _question(data)
        if len(data) < _HEADER or not question:
            return
        reply = self.replies.get(question)
        if reply is None:
            flags = dns.flags.QR | dns.flags.AA | dns.flags.RD | dns.rcode.NXDOMAIN
            reply = struct.pack("!HHHHHH", 0, flags, 1, 0, 0, 0) + data[_HEADER:]
        asyncio.get_running_loop().call_later(self.latency, self.send, data[:2] + reply[2:], addr)

    def send(self, reply: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)


async def serve(zone: Path, latency: float, portfile: str | None) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
    sock.bind(("127.0.0.1", 0))
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Server(load_replies(zone), latency), sock=sock
    )
    if portfile:
        partial = f"{portfile}.partial"
        Path(partial).write_text(f"{sock.getsockname()[1]}\n", encoding="ascii")
        os.replace(partial, portfile)
    stop = loop.create_future()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, lambda: stop.done() or stop.set_result(None))
    try:
        await stop
    finally:
        transport.close()
        if portfile:
            Path(portfile).unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zone", type=Path, required=True)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--portfile")
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.zone, arguments.latency, arguments.portfile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
