"""Write the Sendmail scenario under tests/data/formats/sendmail/: a syslog mail log of one
gateway (`mx2 sm-mta[pid]`), its risk file and its answer.

    .venv/bin/python tests/support/make_sendmail.py

Check time 2026-12-03 10:00:00 UTC, 30-minute window, capacity 100. Each session is one pid:
ordinary mail (a `from=` line, then its delivery by the same pid, then silence), a slow post
(203.0.113.50: a greylisted RCPT, then `timeout waiting for input` 300 s later), a few-source
flood (203.0.113.60: 45 sessions that lose their input channel after 25 s), a many-session
source (192.0.2.10: 310 sessions, pre-greeting traffic then `did not issue MAIL`), sessions
refused by check_relay with 421 (192.0.2.44) and 30 sessions of 192.0.2.77 whose pids are
still talking at the check. The answer is computed here from the sessions themselves.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent / "data" / "formats" / "sendmail"
NOW = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC).timestamp()
START = NOW - 1800
RISKS = {"203.0.113.50": 96.0, "203.0.113.60": 97.0, "192.0.2.10": 10.0}
RULES = (("cond1", 20, 40, 95), ("cond2", 200, 1, 95), ("cond3", 0, 300, 0))


def stamp(when: float) -> str:
    moment = datetime.fromtimestamp(when, tz=UTC)
    return f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S}"


def relay(source: str) -> str:
    return f"[IPv6:{source}]" if ":" in source else f"host.example.net [{source}]"


def sessions() -> list[tuple[str, float, float, str, bool]]:
    """(source, first line, last line, kind, still open at the check)"""
    found = []
    for index in range(150):
        found.append((f"198.51.100.{index % 120 + 1}", START + 30 + 10 * index, 3, "mail"))
    for index in range(6):
        found.append(("2001:db8::25", START + 40 + 200 * index, 3, "mail"))
    for index in range(3):
        found.append(("203.0.113.50", START + 60 + 400 * index, 300, "slow"))
    for index in range(45):
        found.append(("203.0.113.60", START + 720 + 10 * index, 25, "lost"))
    for index in range(310):
        found.append(("192.0.2.10", START + 60 + 3 * index, 1, "pregreet"))
    for index in range(5):
        found.append(("192.0.2.44", START + 1000 + index, 0, "relay"))
    for index in range(30):
        found.append(("192.0.2.77", NOW - 60 + index, 10, "open"))
    return [(source, start, start + length, kind, kind == "open")
            for source, start, length, kind in found]  # fmt: skip


def lines(table) -> list[tuple[float, str]]:
    out = []
    for number, (source, first, last, kind, _open) in enumerate(table):
        head = f"mx2 sm-mta[{40000 + number}]: 5B3A{number:06d}"
        peer = relay(source)
        if kind in ("mail", "open"):
            texts = [
                (
                    first,
                    f"{head}: from=<a@example.org>, size=1800, class=0, nrcpts=1, "
                    f"msgid=<{number}@example.org>, proto=ESMTP, daemon=MTA, "
                    f"relay={peer}",
                ),
                (
                    last,
                    f"{head}: to=<u@campus.example>, delay=00:00:03, mailer=relay, "
                    "pri=31800, relay=mx1.campus.example [10.0.0.5], dsn=2.0.0, "
                    "stat=Sent (ok)",
                ),
            ]
        elif kind == "slow":
            texts = [
                (
                    first,
                    f"{head}: ruleset=check_rcpt, arg1=<u@campus.example>, "
                    f"relay={peer}, reject=451 4.7.1 Please try again later",
                ),
                (last, f"{head}: timeout waiting for input from {peer} during server cmd read"),
            ]
        elif kind == "lost":
            texts = [
                (
                    first,
                    f"{head}: from=<b@example.net>, size=0, class=0, nrcpts=0, "
                    f"proto=ESMTP, daemon=MTA, relay={peer}",
                ),
                (last, f"{head}: lost input channel from {peer} to MTA after rcpt"),
            ]
        elif kind == "pregreet":
            texts = [
                (
                    first,
                    f"{head}: rejecting commands from {peer} due to pre-greeting "
                    "traffic after 0 seconds",
                ),
                (
                    last,
                    f"{head}: {peer} did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA",
                ),
            ]
        else:
            texts = [
                (
                    first,
                    f"{head}: ruleset=check_relay, arg1=host.example.net, "
                    f"arg2={source}, relay={peer}, reject=421 4.3.2 Connection rate "
                    "limit exceeded.",
                )
            ]
        out.extend((when, f"{stamp(when)} {text}") for when, text in texts)
    out.append(
        (
            START + 901,
            f"{stamp(START + 901)} mx2 sm-mta[49999]: 5B3A999999: "
            "to=<u@campus.example>, delay=00:00:01, mailer=relay, pri=30000, "
            "relay=mx2.campus.example [10.0.0.6], dsn=4.0.0, stat=Deferred: "
            "421 4.3.2 Service not available",
        )
    )
    out.append((START + 902, f"{stamp(START + 902)} mx2 postfix/pickup[3]: unrelated line"))
    return sorted(out, key=lambda item: item[0])


def answer(table) -> dict:
    per: dict[str, list] = {}
    deltas: dict[float, int] = {}
    for source, first, last, _kind, still_open in table:
        length = (NOW if still_open else last) - first
        entry = per.setdefault(source, [0, 0.0, 0, []])
        entry[0] += 1
        entry[1] = max(entry[1], length)
        entry[2] += still_open
        entry[3].append(length)
        deltas[first] = deltas.get(first, 0) + 1
        if not still_open:
            deltas[last] = deltas.get(last, 0) - 1
    level = peak = 0
    for moment in sorted(deltas):
        level += deltas[moment]
        peak = max(peak, level)
    matches = {}
    for source, (count, longest, still_open, lengths) in per.items():
        rules = [name for name, duration, least, risk in RULES
                 if sum(1 for length in lengths if length >= duration) >= least
                 and RISKS.get(source, 0.0) >= risk]  # fmt: skip
        if rules:
            matches[source] = {
                "rule": rules[0],
                "rules": rules,
                "sessions": count,
                "longest_session": longest,
                "open_sessions": still_open,
            }
    current = sum(1 for *_rest, still_open in table if still_open)
    return {
        "now": "2026-12-03T10:00:00+00:00",
        "capacity": 100,
        "current_sessions": current,
        "peak_sessions": peak,
        "candidates": matches,
        "sessions": {source: entry[0] for source, entry in per.items()},
    }


def main(target: Path = HERE) -> None:
    table = sessions()
    target.mkdir(parents=True, exist_ok=True)
    (target / "maillog").write_text("".join(text + "\n" for _when, text in lines(table)))
    (target / "risk.csv").write_text("".join(f"{ip},{risk}\n" for ip, risk in RISKS.items()))
    (target / "answer.json").write_text(json.dumps(answer(table), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
