#!/usr/bin/env python3
"""Write a realistic Postfix gateway log for the benchmark: ordinary mail with the five attack
kinds of the source paper mixed in.

    python benchmarks/genlog.py --lines 1000000 --output /tmp/bench/mail.log
    python benchmarks/genlog.py --lines 1000000 --extra 10000 --output mail.log \
        --extra-output mail.more          # the 1% that follows, for the incremental figure

The gateway `gw1` runs postscreen in front of smtpd, as in the demo sample, and writes syslog
lines (`Dec  3 16:00:00 gw1 postfix/smtpd[4711]: ...`) at about 200 lines a second:

- ordinary mail: postscreen CONNECT / PASS, smtpd connect, client=, cleanup message-id,
  qmgr from= ... removed, smtp status=sent, disconnect; some by IPv6;
- rejected mail: NOQUEUE reject (relay, unknown user, no PTR), timeout and lost connection,
  SASL failures with `auth=0/1` disconnects;
- postscreen: DNSBL ranks with dnsblog lines, rejects by DNSBL, PREGREET, HANGUP,
  COMMAND TIME LIMIT;
- SMTP DoS: two sources opening a short session every second (rule cond3);
- slow post: sources holding one session 250 to 500 s, listed in a DNSBL (cond2);
- 421 storm: one source sending to a domain whose server answers 421; the deliveries are
  deferred and retried (cond3);
- SMTP DDoS: 150 listed bots, each opening a 26 s session every 40 s (cond1);
- all of them at once, as the log runs.

Addresses come from 198.18.0.0/15 (RFC 2544, set aside for benchmarks) and 2001:db8::/32.
The output is the same for the same seed and line count. `--manifest` writes which sources
are attackers of which kind, so the runner can check that the engine finds them.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

START = datetime(2026, 12, 3, 0, 0, 0, tzinfo=UTC).timestamp()
HOST = "gw1"
GATEWAY = "198.19.255.25"
CAMPUS_MX = ("mx1.campus.example", "198.19.255.26")
NOMAIL = ("nomail.campus.example", "198.19.255.27")

LEGITIMATE = 20_000
DOS_SOURCES = ("198.19.1.10", "198.19.1.11")
STORM_SOURCE = "198.19.1.30"
SLOW_SOURCES = tuple(f"198.19.2.{n}" for n in range(1, 9))
BOTS = tuple(f"198.19.{3 + n // 250}.{n % 250 + 1}" for n in range(150))
LISTED_SPAMMERS = tuple(f"198.19.{10 + n // 250}.{n % 250 + 1}" for n in range(2000))


def _legitimate(index: int) -> str:
    if index % 10 == 0:
        return f"2001:db8:{index // 65536:x}:{index % 65536:x}::25"
    return f"198.18.{index // 250 % 256}.{index % 250 + 1}"


class Gateway:
    """The simulated gateway: sessions on pids, their lines bucketed by second."""

    def __init__(self, seed: int):
        self.random = random.Random(seed)
        self.buckets: dict[int, list[str]] = {}
        self.free_pids: list[int] = []
        self.busy: list[tuple[int, int]] = []  # (end second, pid)
        self.next_pid = 4000
        self.queue_id = 0x3A00000000
        self.stamps: dict[int, str] = {}

    # --- plumbing ---------------------------------------------------------------------------

    def stamp(self, second: int) -> str:
        text = self.stamps.get(second)
        if text is None:
            moment = datetime.fromtimestamp(START + second, tz=UTC)
            text = f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S} {HOST} postfix/"
            self.stamps[second] = text
            if len(self.stamps) > 4096:
                self.stamps.clear()
        return text

    def emit(self, second: int, program: str, pid: int, message: str) -> None:
        bucket = self.buckets.get(second)
        if bucket is None:
            bucket = self.buckets[second] = []
        bucket.append(f"{self.stamp(second)}{program}[{pid}]: {message}\n")

    def release(self, second: int) -> None:
        while self.busy and self.busy[0][0] < second:
            self.free_pids.append(heapq.heappop(self.busy)[1])

    def smtpd_pid(self, end: int) -> int:
        if self.free_pids:
            pid = self.free_pids.pop()
        else:
            self.next_pid += 1
            pid = self.next_pid
        heapq.heappush(self.busy, (end, pid))
        return pid

    def new_queue_id(self) -> str:
        self.queue_id += 7919
        return f"{self.queue_id:011X}"

    def port(self) -> int:
        return self.random.randrange(1024, 65535)

    # --- what happens on the wire -------------------------------------------------------------

    def postscreen(self, second: int, ip: str, port: int, *, rank: int = 0) -> None:
        """postscreen's greeting; ranked sources have dnsblog lines first."""
        self.emit(second, "postscreen", 900, f"CONNECT from [{ip}]:{port} to [{GATEWAY}]:25")
        if rank:
            self.emit(
                second, "dnsblog", 901, f"addr {ip} listed by domain dnsbl.example as 127.0.0.2"
            )
            self.emit(second, "postscreen", 900, f"DNSBL rank {rank} for [{ip}]:{port}")
        self.emit(second, "postscreen", 900, f"PASS {'NEW' if rank else 'OLD'} [{ip}]:{port}")

    def mail(
        self,
        second: int,
        ip: str,
        *,
        hold: int = 1,
        sender: str = "news@sender.example",
        to: tuple[str, str] = CAMPUS_MX,
        rank: int = 0,
        name: str = "unknown",
        deferred: bool = False,
    ) -> None:
        """One session delivering one message, lasting `hold` seconds."""
        end = second + hold
        pid = self.smtpd_pid(end)
        peer = f"{name}[{ip}]"
        queue_id = self.new_queue_id()
        self.postscreen(second, ip, self.port(), rank=rank)
        self.emit(second, "smtpd", pid, f"connect from {peer}")
        self.emit(second, "smtpd", pid, f"{queue_id}: client={peer}")
        self.emit(
            end, "cleanup", 950, f"{queue_id}: message-id=<{queue_id}@{sender.split('@')[1]}>"
        )
        self.emit(
            end,
            "qmgr",
            951,
            f"{queue_id}: from=<{sender}>, size={1200 + hold}, nrcpt=1 (queue active)",
        )
        self.emit(
            end,
            "smtpd",
            pid,
            f"disconnect from {peer} ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
        )
        domain, relay = to
        rcpt = f"user{self.random.randrange(5000)}@{domain}"
        if deferred:
            for retry in (1, 301):
                self.emit(
                    end + retry,
                    "smtp",
                    960,
                    f"{queue_id}: to=<{rcpt}>, relay={relay}[{relay}]"
                    f":25, delay={retry}, delays={retry}/0.02/0/0, dsn=4.3.2, status=deferred"
                    f" (host {relay}[{relay}] refused to talk to me: 421 4.3.2 {domain}: no "
                    "SMTP service on this host)",
                )
            return
        self.emit(
            end + 1,
            "smtp",
            960,
            f"{queue_id}: to=<{rcpt}>, relay={domain}[{relay}]:25, "
            f"delay={hold + 1}, delays={hold}/0.01/0.2/0.4, dsn=2.0.0, status=sent (250 2.0.0 "
            f"Ok: queued as {self.new_queue_id()})",
        )
        self.emit(end + 1, "qmgr", 951, f"{queue_id}: removed")

    def rejected(self, second: int, ip: str) -> None:
        """A spam run refused at RCPT, a timeout, a lost connection or a SASL guesser."""
        pick = self.random.random()
        hold = 1 + int(pick * 8)
        end = second + hold
        pid = self.smtpd_pid(end)
        peer = f"unknown[{ip}]"
        helo = f"helo=<{ip.replace('.', '-').replace(':', '-')}.dyn.example>"
        self.postscreen(second, ip, self.port())
        self.emit(second, "smtpd", pid, f"connect from {peer}")
        if pick < 0.45:
            rcpt = f"user{self.random.randrange(99999)}@campus.example"
            reason = (
                "554 5.7.1 <x@elsewhere.example>: Relay access denied"
                if pick < 0.15
                else f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in relay "
                "recipient table"
                if pick < 0.3
                else f"450 4.7.1 Client host rejected: cannot find your hostname, [{ip}]"
            )
            self.emit(
                end,
                "smtpd",
                pid,
                f"NOQUEUE: reject: RCPT from {peer}: {reason}; "
                f"from=<a@spam.example> to=<{rcpt}> proto=ESMTP {helo}",
            )
            self.emit(
                end,
                "smtpd",
                pid,
                f"disconnect from {peer} ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4",
            )
        elif pick < 0.65:
            self.emit(end, "smtpd", pid, f"timeout after DATA (0 bytes) from {peer}")
            self.emit(
                end,
                "smtpd",
                pid,
                f"disconnect from {peer} ehlo=1 mail=1 rcpt=1 data=0/1 commands=3/4",
            )
        elif pick < 0.85:
            command = "CONNECT" if pick < 0.75 else "EHLO"
            self.emit(end, "smtpd", pid, f"lost connection after {command} from {peer}")
            self.emit(end, "smtpd", pid, f"disconnect from {peer} commands=0/0")
        else:
            self.emit(
                end,
                "smtpd",
                pid,
                f"warning: {peer}: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
            )
            self.emit(
                end, "smtpd", pid, f"disconnect from {peer} ehlo=1 auth=0/1 quit=1 commands=2/3"
            )

    def screened(self, second: int, ip: str) -> None:
        """A source that postscreen turns away itself."""
        port = self.port()
        pick = self.random.random()
        self.emit(second, "postscreen", 900, f"CONNECT from [{ip}]:{port} to [{GATEWAY}]:25")
        if pick < 0.6:
            self.emit(
                second, "dnsblog", 901, f"addr {ip} listed by domain dnsbl.example as 127.0.0.2"
            )
            self.emit(second, "postscreen", 900, f"DNSBL rank 3 for [{ip}]:{port}")
            self.emit(
                second + 2,
                "postscreen",
                900,
                f"NOQUEUE: reject: RCPT from [{ip}]:{port}: 550 "
                f"5.7.1 Service unavailable; client [{ip}] blocked using dnsbl.example; "
                "from=<a@spam.example>, to=<b@campus.example>, proto=ESMTP, helo=<x>",
            )
            self.emit(second + 2, "postscreen", 900, f"DISCONNECT [{ip}]:{port}")
        elif pick < 0.8:
            self.emit(
                second,
                "postscreen",
                900,
                f"PREGREET 11 after 0.08 from [{ip}]:{port}: EHLO bot\\r\\n",
            )
            self.emit(second + 1, "postscreen", 900, f"DISCONNECT [{ip}]:{port}")
        elif pick < 0.95:
            self.emit(
                second + 1,
                "postscreen",
                900,
                f"HANGUP after 1.2 from [{ip}]:{port} in tests after SMTP handshake",
            )
            self.emit(second + 1, "postscreen", 900, f"DISCONNECT [{ip}]:{port}")
        else:
            self.emit(
                second + 300, "postscreen", 900, f"COMMAND TIME LIMIT from [{ip}]:{port} after DATA"
            )

    def slow_post(self, second: int, ip: str) -> None:
        """One session that trickles a message for 250 to 500 s, then is cut off."""
        hold = self.random.randrange(250, 500)
        end = second + hold
        pid = self.smtpd_pid(end)
        peer = f"unknown[{ip}]"
        self.postscreen(second, ip, self.port(), rank=3)
        self.emit(second, "smtpd", pid, f"connect from {peer}")
        self.emit(second + 2, "smtpd", pid, f"{self.new_queue_id()}: client={peer}")
        self.emit(end, "smtpd", pid, f"lost connection after DATA (1024 bytes) from {peer}")
        self.emit(
            end, "smtpd", pid, f"disconnect from {peer} ehlo=1 mail=1 rcpt=1 data=0/1 commands=3/4"
        )


class Traffic:
    """Who connects when; rates are sessions a second."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.owed: dict[str, float] = {}
        self.slow_until = {ip: 0 for ip in SLOW_SOURCES}
        self.bot_next = {ip: index * 40 // len(BOTS) for index, ip in enumerate(BOTS)}

    def due(self, kind: str, rate: float) -> int:
        owed = self.owed.get(kind, 0.0) + rate * (0.5 + self.gateway.random.random())
        count = int(owed)
        self.owed[kind] = owed - count
        return count

    def second(self, now: int) -> None:
        gateway = self.gateway
        pick = gateway.random.randrange
        gateway.release(now)

        for _ in range(self.due("mail", 6.0)):
            index = pick(LEGITIMATE)
            gateway.mail(
                now,
                _legitimate(index),
                hold=1 + pick(4),
                sender=f"news@sender{index}.example",
                name=f"mail.sender{index}.example",
            )
        for _ in range(self.due("rejected", 4.0)):
            gateway.rejected(now, f"198.18.{128 + pick(128)}.{pick(1, 255)}")
        for _ in range(self.due("screened", 3.0)):
            gateway.screened(now, LISTED_SPAMMERS[pick(len(LISTED_SPAMMERS))])

        # SMTP DoS: short sessions, one a second from each source.
        for ip in DOS_SOURCES:
            gateway.mail(now, ip, hold=1, sender="info@bulk.example.net")
        # 421 storm: mail for a domain whose server refuses it, deferred and retried.
        if self.due("storm", 0.5):
            gateway.mail(
                now, STORM_SOURCE, hold=1, sender="info@storm.example.net", to=NOMAIL, deferred=True
            )
        # Slow post: each source holds one long session at a time.
        for ip, free_at in self.slow_until.items():
            if now >= free_at:
                gateway.slow_post(now, ip)
                self.slow_until[ip] = now + 600
        # SMTP DDoS: every bot opens a 26 s session every 40 s.
        for ip, next_at in self.bot_next.items():
            if now >= next_at:
                gateway.mail(now, ip, hold=26, sender="info@bot.example.org", rank=3)
                self.bot_next[ip] = now + 40


def generate(seed: int = 2016) -> Iterator[list[str]]:
    """The log's lines, one list a second, without end."""
    gateway = Gateway(seed)
    traffic = Traffic(gateway)
    now = 0
    while True:
        traffic.second(now)
        yield gateway.buckets.pop(now, [])
        now += 1


def write(
    path: Path, lines: int, *, extra: int = 0, extra_path: Path | None = None, seed: int = 2016
) -> None:
    """The first `lines` lines to `path`; the `extra` lines after them to `extra_path`."""
    stream = generate(seed)
    for target, count in ((path, lines), (extra_path, extra)):
        if target is None or count == 0:
            continue
        with open(target, "w", encoding="ascii") as handle:
            while count > 0:
                chunk = next(stream)
                if len(chunk) > count:
                    # The rest of this second goes first into the next file.
                    stream = _prepend(chunk[count:], stream)
                    chunk = chunk[:count]
                handle.writelines(chunk)
                count -= len(chunk)


def _prepend(chunk: list[str], stream: Iterator[list[str]]) -> Iterator[list[str]]:
    yield chunk
    yield from stream


def manifest() -> dict:
    """The attackers of each kind and the rule the default rules should match them by."""
    return {
        "SMTP DoS": {"rule": "cond3", "sources": list(DOS_SOURCES)},
        "421 storm": {"rule": "cond3", "sources": [STORM_SOURCE]},
        "slow post": {"rule": "cond2", "sources": list(SLOW_SOURCES)},
        "SMTP DDoS": {"rule": "cond1", "sources": list(BOTS)},
        "legitimate": {"rule": None, "sample": [_legitimate(n) for n in range(0, 20, 3)]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument(
        "--extra", type=int, default=0, help="lines that follow, for --extra-output"
    )
    parser.add_argument("--extra-output", type=Path)
    parser.add_argument("--manifest", type=Path)
    parser.add_argument("--seed", type=int, default=2016)
    options = parser.parse_args(argv)

    write(
        options.output,
        options.lines,
        extra=options.extra,
        extra_path=options.extra_output,
        seed=options.seed,
    )
    if options.manifest:
        options.manifest.write_text(json.dumps(manifest(), indent=1) + "\n", encoding="ascii")
    return 0


if __name__ == "__main__":
    sys.exit(main())
