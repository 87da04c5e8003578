#!/usr/bin/env python3
"""The lab's traffic: the five attack kinds next to legitimate mail, a probe, a 421 host.

    traffic.py attack --duration 120 --result FILE   # inside the internet namespace
    traffic.py probe --campus-log FILE [--expect-defended]   # inside the internet namespace
    traffic.py nomail --listen ADDRESS               # inside the campus namespace
    traffic.py plan                                  # the sources and what to expect, JSON

`lab.py attack` and `lab.py probe` run these in the right namespace. The attack reuses the
sample generator's driver (tools/sample/make_sample.py): every session is bounded in time,
every pattern in count, and the whole run ends after --duration seconds, sessions cut.
Senders, PTR names and DNSBL ranks are in `lab_sources()`; the rules that fit the lab's
time scale are in inventory/lab (the paper's values need hours of traffic). A check from
CHECK_AT seconds on must block every source whose `expect` says so and nothing else. The
probe exits 1 when a source that should be served is cut off, and with --expect-defended (after
the cycle) also when a source the cycle should block is still served.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "sample"))

import make_sample  # noqa: E402  (the sample generator's plan types and driver)
from make_sample import (  # noqa: E402
    Driver,
    Pattern,
    Source,
    dnsbl_query_name,
    dnsbl_zones_of,
    reverse_name,
)

__all__ = ["dnsbl_query_name", "dnsbl_zones_of", "lab_sources", "reverse_name"]

LOG = logging.getLogger("smtpguard.lab.traffic")
GATEWAY = make_sample.GATEWAY_IPV4
GATEWAY_V6 = make_sample.GATEWAY_IPV6
BASE_DURATION = 120.0
CHECK_AT = 40.0  # seconds into the attack when every flooding source matches its rule
PROBE_TIMEOUT = 3.0
PROGRESS = 1.0  # seconds between the records a running attack writes


def lab_sources(duration: float = BASE_DURATION) -> list[Source]:
    """Who sends what for `duration` seconds, and what a check at CHECK_AT must decide.

    Floods run at fixed rates until the end; near misses stay below every rule however long
    the run lasts, so a later check decides the same.
    """

    def every(interval: float, start: float, stop: float | None = None) -> tuple[int, float]:
        stop = duration - 2 if stop is None else min(stop, duration - 2)
        return max(1, int((stop - start) / interval) + 1), stop

    def mail(
        interval: float, start: float, domain: str = "campus.example", stop: float | None = None
    ) -> Pattern:
        count, end = every(interval, start, stop)
        return Pattern("mail", count, start, end, domain=domain)

    def hold(interval: float, start: float, seconds: float = 12, probe: int = 0) -> Pattern:
        count, end = every(interval, start)
        return Pattern("hold", count, start, end, hold=seconds, trickle=4, relay_probe_every=probe)

    def ddos(probe: int = 0) -> tuple[Pattern, ...]:
        return (hold(1.4, 2, probe=probe),)

    ddos_note = "DDoS: a session of 12 s every 1.4 s"
    # fmt: off
    return [
        Source("192.0.2.10", "legitimate", "a mail every 4 s", "none", (mail(4, 1),),
               "mail.sender-one.example", ptr="mail.sender-one.example",
               ptr_target="192.0.2.10"),
        Source("192.0.2.11", "legitimate", "a mail every 4 s", "none", (mail(4, 2),),
               "smtp.sender-two.example", ptr="smtp.sender-two.example",
               ptr_target="192.0.2.11"),
        Source("192.0.2.12", "legitimate", "a mail every 4 s, no PTR", "none",
               (mail(4, 3),), "mx.sender-three.example"),
        Source("192.0.2.13", "legitimate", "a mail every 4 s", "none", (mail(4, 4),),
               "out.sender-four.example", ptr="out.sender-four.example",
               ptr_target="192.0.2.13"),
        Source("2001:db8:beef::10", "legitimate", "a mail every 4 s, IPv6", "none",
               (mail(4, 1.5),), "mail6.sender-five.example", ptr="mail6.sender-five.example",
               ptr_target="2001:db8:beef::10"),
        Source("2001:db8:beef::11", "legitimate", "a mail every 4 s, IPv6, no PTR", "none",
               (mail(4, 2.5),), "out6.sender-six.example"),
        Source("203.0.113.10", "SMTP DoS", "3.5 short mail sessions a second", "block cond3",
               (mail(0.28, 3),), "bulk10.example.net"),
        Source("203.0.113.11", "SMTP DoS", "3.5 short mail sessions a second", "block cond3",
               (mail(0.28, 3.1),), "bulk11.example.net", rank=3,
               ptr="bulk11.example.net", ptr_target="203.0.113.11"),
        Source("203.0.113.12", "near miss", "60 short mail sessions in a minute", "none",
               (mail(1, 3, stop=62),), "bulk12.example.net"),
        Source("203.0.113.20", "slow post", "one session held open", "block cond2",
               (Pattern("open", 1, 1, 1, trickle=8),), "slow20.example.net", rank=3),
        Source("2001:db8:bad::20", "slow post", "one session held open, IPv6", "block cond2",
               (Pattern("open", 1, 1, 1, trickle=8),), "slow6.example.org", rank=3),
        Source("203.0.113.22", "near miss", "one session held 25 s", "none",
               (Pattern("hold", 1, 2, 2, hold=25, trickle=8),), "slow22.example.net",
               rank=3),
        Source("203.0.113.30", "421 storm", "3.5 mails a second to nomail.campus.example",
               "block cond3", (mail(0.28, 3.2, domain="nomail.campus.example"),),
               "storm30.example.net"),
        Source("203.0.113.9", "SMTP DDoS", ddos_note + "; forward-confirmed .jp name",
               "spare domestic", ddos(), "mail.example.ac.jp", rank=3,
               ptr="mail.example.ac.jp", ptr_target="203.0.113.9"),
        Source("203.0.113.40", "SMTP DDoS", ddos_note, "block cond1", ddos(),
               "host-40.dynamic.example.net", rank=3, ptr="host-40.dynamic.example.net",
               ptr_target="203.0.113.40"),
        Source("203.0.113.41", "SMTP DDoS", ddos_note + "; PTR without an A record",
               "block cond1", ddos(), "ppp41.pool.example.com", rank=3,
               ptr="ppp41.pool.example.com"),
        Source("203.0.113.42", "SMTP DDoS", ddos_note + "; relay probes", "block cond1",
               ddos(probe=4), "[192.0.2.10]", rank=3),
        Source("203.0.113.43", "SMTP DDoS", ddos_note + "; HELO claims a .jp name",
               "block cond1", ddos(), "mail.example.ac.jp", rank=3),
        Source("203.0.113.45", "SMTP DDoS", ddos_note + "; .jp PTR without an A record",
               "block cond1", ddos(), "dsl45.pool.example.ne.jp", rank=3,
               ptr="dsl45.pool.example.ne.jp"),
        Source("203.0.113.46", "SMTP DDoS", ddos_note + "; listed in both zones",
               "block cond1", ddos(), "bot46.example.org", rank=5),
        Source("203.0.113.47", "SMTP DDoS", ddos_note + "; .jp PTR resolving elsewhere",
               "block cond1", ddos(), "mx1.unconfirmed.ne.jp", rank=3,
               ptr="mx1.unconfirmed.ne.jp", ptr_target="203.0.113.200"),
        Source("2001:db8:bad::40", "SMTP DDoS", ddos_note + "; IPv6, forward-confirmed name",
               "block cond1", ddos(), "flood6.example.org", rank=3, ptr="flood6.example.org",
               ptr_target="2001:db8:bad::40"),
        Source("198.51.100.140", "SMTP DDoS", ddos_note + "; inside the partner network",
               "spare allowlist", ddos(), "smtp.partner-univ.example", rank=3,
               ptr="smtp.partner-univ.example", ptr_target="198.51.100.140"),
        Source("203.0.113.50", "near miss", "10 sessions of 12 s", "none",
               (Pattern("hold", 10, 2, 30, hold=12, trickle=4),), "bot50.example.org",
               rank=3),
        Source("203.0.113.52", "near miss", "DDoS shape, but DNSBL rank 2 (risk 63%)", "none",
               (hold(3, 2),), "bot52.example.org", rank=2),
    ]
    # fmt: on


def sender_addresses() -> list[str]:
    return [source.address for source in lab_sources()]


# --- Attack --------------------------------------------------------------------------------


async def attack(duration: float, *, legit_only: bool, result: Path | None = None) -> dict:
    """Run the plan for `duration` seconds at most; every pattern is bounded in count too.

    With `result`, the record so far is written there every PROGRESS seconds (the probe counts
    the legitimate mail sent while the attack runs); the caller writes the final one.
    """
    plan = [s for s in lab_sources(duration) if not legit_only or s.kind == "legitimate"]
    driver = Driver(plan)
    loop = asyncio.get_running_loop()
    origin = loop.time()
    tasks = [
        asyncio.create_task(driver.run_pattern(source, pattern, origin))
        for source in plan
        for pattern in source.patterns
    ]
    progress = asyncio.create_task(keep_writing(result, plan, driver, duration))
    done, pending = await asyncio.wait(tasks, timeout=duration)
    progress.cancel()
    for task in pending:
        task.cancel()
    await asyncio.gather(progress, *tasks, return_exceptions=True)
    return {**summary(plan, driver, duration), "finished_early": not pending}


def summary(plan: Sequence[Source], driver: Driver, duration: float) -> dict:
    per_source: dict[str, dict] = {}
    for source in plan:
        records = [r for r in driver.records if r.source == source.address]
        per_source[source.address] = {
            "kind": source.kind,
            "expect": source.expect,
            "sender": source.sender,
            "sessions": len(records),
            "greeted": sum(r.handed_off is not None for r in records),
            "failed": sum(r.error is not None for r in records),
            "sent": driver.sent[source.address],
        }
    return {"duration": duration, "sources": per_source}


async def keep_writing(
    result: Path | None, plan: Sequence[Source], driver: Driver, duration: float
) -> None:
    while result is not None:
        write_atomically(result, json.dumps({**summary(plan, driver, duration), "running": True}))
        await asyncio.sleep(PROGRESS)


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text + "\n")
    temporary.replace(path)


# --- Probe ---------------------------------------------------------------------------------


async def greeting(source: str, *, timeout: float = PROBE_TIMEOUT) -> bool:
    """Does `source` get a 220 from the gateway (its address of the same family) in time?"""
    gateway = GATEWAY_V6 if ":" in source else GATEWAY
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(gateway, 25, local_addr=(source, 0)), timeout
        )
    except (TimeoutError, OSError):
        return False
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
        writer.write(b"QUIT\r\n")
        return line.startswith(b"220")
    except (TimeoutError, OSError):
        return False
    finally:
        writer.transport.abort()


def campus_deliveries(campus_log: Path) -> Counter[str]:
    """Messages the campus server queued, by envelope sender (its qmgr lines, once each)."""
    seen: set[str] = set()
    count: Counter[str] = Counter()
    pattern = re.compile(rb"postfix/qmgr\[\d+\]: ([0-9A-F]+): from=<([^>]*)>")
    for path in sorted(campus_log.parent.glob(campus_log.name + "*")):
        if path.suffix == ".gz":
            continue
        for match in pattern.finditer(path.read_bytes()):
            queue_id, sender = match.group(1).decode(), match.group(2).decode()
            if queue_id not in seen:
                seen.add(queue_id)
                count[sender] += 1
    return count


async def probe(campus_log: Path | None, *, expect_defended: bool = False) -> dict:
    sources = lab_sources()
    answers = await asyncio.gather(*(greeting(source.address) for source in sources))
    result: dict = {"sources": {}, "expect_defended": expect_defended}
    for source, ok in zip(sources, answers, strict=True):
        seen = {"kind": source.kind, "expect": source.expect, "greeting": ok}
        result["sources"][source.address] = {**seen, "verdict": verdict(seen)}
    result["wrong"] = [
        address
        for address, seen in result["sources"].items()
        if is_wrong(seen["verdict"], expect_defended=expect_defended)
    ]
    if campus_log is not None:
        deliveries = campus_deliveries(campus_log)
        legit = [source for source in sources if source.kind == "legitimate"]
        result["campus"] = dict(deliveries)
        result["legit_delivered"] = sum(deliveries[source.sender] for source in legit)
    return result


def legit_sent(records: Sequence[Path]) -> int:
    """Legitimate mails the gateway accepted, by the attacks' records (also while running)."""
    sent = 0
    for path in records:
        try:
            sources = json.loads(path.read_text())["sources"]
        except (OSError, ValueError, KeyError):
            continue  # an attack stopped before its first record
        sent += sum(s["sent"] for s in sources.values() if s["kind"] == "legitimate")
    return sent


SERVED_WRONGLY = "still served"
CUT_WRONGLY = "CUT OFF, should be served"


def verdict(seen: dict) -> str:
    """What a source's greeting says against what the cycle should do with it."""
    to_block = seen["expect"].startswith("block")
    if seen["greeting"] != to_block:
        return "ok"
    return SERVED_WRONGLY if to_block else CUT_WRONGLY


def is_wrong(found: str, *, expect_defended: bool) -> bool:
    """A legitimate sender or near miss cut off is wrong always; an attacker still served only
    once the defence should hold (before the cycle, every source is served)."""
    return found == CUT_WRONGLY or (found == SERVED_WRONGLY and expect_defended)


def table_of(result: dict) -> str:
    """The probe as one line a source, against what the cycle should do with it."""
    lines = [f"{'source':<18} {'kind':<11} {'the cycle should':<17} {'220?':<5} verdict"]
    for address, seen in result["sources"].items():
        lines.append(
            f"{address:<18} {seen['kind']:<11} {seen['expect']:<17} "
            f"{'yes' if seen['greeting'] else 'no':<5} {seen['verdict']}"
        )
    if "legit_delivered" in result:
        sent = result.get("legit_sent")
        of_sent = "" if sent is None else f" of {sent} sent by `lab.py attack`"
        since = f" ({result['since']})" if result.get("since") else ""
        lines.append(
            f"legitimate mails at the campus server: {result['legit_delivered']}{of_sent}{since}"
        )
    lines.append(judgement(result))
    return "\n".join(lines)


def judgement(result: dict) -> str:
    wrong = result["wrong"]
    if wrong:
        return f"WRONG: {len(wrong)} sources not as they should be: {', '.join(wrong)}"
    if result["expect_defended"]:
        return "every source as the cycle should leave it"
    served = sum(seen["verdict"] == SERVED_WRONGLY for seen in result["sources"].values())
    if served:
        return (
            f"no legitimate sender cut off; {served} attackers still served, as before a cycle "
            "(after the cycle, --expect-defended counts them as wrong)"
        )
    return "every source as the cycle should leave it"


# --- The 421 host --------------------------------------------------------------------------


async def nomail(listen: str) -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"421 4.3.2 nomail.campus.example: no SMTP service on this host\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, listen, 25)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["attack", "probe", "nomail", "plan"])
    parser.add_argument("--duration", type=float, default=BASE_DURATION)
    parser.add_argument("--legit-only", action="store_true")
    parser.add_argument("--result", type=Path, help="also write the JSON result there")
    parser.add_argument("--campus-log", type=Path)
    parser.add_argument("--listen")
    parser.add_argument("--table", action="store_true", help="probe: one line a source")
    parser.add_argument(
        "--expect-defended",
        action="store_true",
        help="probe: an attacker the cycle should block but still served is wrong too",
    )
    parser.add_argument(
        "--attack-record",
        type=Path,
        action="append",
        help="probe: count the legitimate mail this attack's record says it sent (repeatable)",
    )
    parser.add_argument("--since", help="probe: since when the records count, in words")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("make_sample").setLevel(logging.ERROR)  # blocked sessions time out

    if args.command == "nomail":
        asyncio.run(nomail(args.listen))
        return 0
    if args.command == "plan":
        plan = [{"ip": s.address, "kind": s.kind, "expect": s.expect} for s in lab_sources()]
        print(json.dumps(plan, indent=2))
        return 0
    started = time.monotonic()
    if args.command == "attack":
        result = asyncio.run(attack(args.duration, legit_only=args.legit_only, result=args.result))
    else:
        result = asyncio.run(probe(args.campus_log, expect_defended=args.expect_defended))
        if args.since is not None:
            # Read after the campus log: while an attack runs, delivered trails sent (but for
            # the mail of the last PROGRESS seconds, which its record may not show yet).
            result["legit_sent"] = legit_sent(args.attack_record or [])
            result["since"] = args.since
    result["seconds"] = round(time.monotonic() - started, 1)
    text = table_of(result) if args.table else json.dumps(result, indent=2)
    if args.result:
        write_atomically(args.result, text)
    print(text)
    if result.get("wrong"):
        LOG.error("%s", judgement(result))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
