"""Write the Exim scenario under tests/data/formats/exim/: a main log with +smtp_connection,
+pid, +incoming_port, +incoming_interface and +smtp_no_mail, its risk file and its answer.

    .venv/bin/python tests/support/make_exim.py

Sessions (check time 2026-12-03 10:00:00 UTC, 30-minute window, capacity 100): ordinary mail
from 198.51.100.0/24 and 2001:db8::/32, a slow post (203.0.113.50, 200 s and more, one still
open), a few-source flood (203.0.113.60, 45 sessions of 25 s), a many-session source
(192.0.2.10, 310 sessions) and 30 sessions of 192.0.2.77 still open at the check. The answer
is computed here from the sessions themselves, not by the analysis.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent / "data" / "formats" / "exim"
NOW = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC).timestamp()
START = NOW - 1800
DAEMON = 1200
RISKS = {"203.0.113.50": 96.0, "203.0.113.60": 97.0, "192.0.2.10": 10.0}
RULES = (("cond1", 20, 40, 95), ("cond2", 200, 1, 95), ("cond3", 0, 300, 0))


def stamp(when: float) -> str:
    return datetime.fromtimestamp(when, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def span(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def sessions() -> list[tuple[str, float, float | None, str]]:
    """(source, start, end or None, how it ends)"""
    found = []
    for index in range(150):
        found.append((f"198.51.100.{index % 120 + 1}", START + 30 + 11 * index, None, "quit"))
    for index in range(6):
        found.append(("2001:db8::25", START + 40 + 200 * index, None, "quit"))
    for index in range(3):
        found.append(("203.0.113.50", START + 60 + 400 * index, None, "timeout"))
    found.append(("203.0.113.50", NOW - 300, None, "open"))
    for index in range(45):
        found.append(("203.0.113.60", START + 720 + 10 * index, None, "nomail"))
    for index in range(310):
        found.append(("192.0.2.10", START + 60 + 3 * index, None, "lost"))
    for index in range(30):
        found.append(("192.0.2.77", NOW - 60 + index, None, "open"))
    length = {"quit": 5, "timeout": 300, "nomail": 25, "lost": 1}
    return [
        (source, start, None if how == "open" else start + length[how], how)
        for source, start, _end, how in found
    ]


def lines(table) -> list[tuple[float, str]]:
    out = []
    for number, (source, start, end, how) in enumerate(table):
        port = 20000 + number
        pid = 30000 + number
        peer = f"[{source}]:{port} I=[198.51.100.1]:25"
        out.append(
            (
                start,
                f"{stamp(start)} [{DAEMON}] SMTP connection from {peer} "
                f"(TCP/IP connection count = 1)",
            )
        )
        if end is None:
            continue
        host = f"host{number}.example.net ([{source}])" if ":" not in source else "(ehlo6)"
        took = span(end - start)
        text = {
            "quit": f"SMTP connection from {host} [{source}]:{port} I=[198.51.100.1]:25 "
            f"D={took} closed by QUIT",
            "timeout": f"SMTP command timeout on connection from {host} [{source}]:{port} "
            f"I=[198.51.100.1]:25 D={took}",
            "nomail": f"no MAIL in SMTP connection from {host} [{source}]:{port} "
            f"I=[198.51.100.1]:25 D={took} C=EHLO,QUIT",
            "lost": f"SMTP connection from [{source}]:{port} I=[198.51.100.1]:25 D={took} lost",
        }[how]
        out.append((end, f"{stamp(end)} [{pid}] {text}"))
        if how == "quit":
            message = f"1v{number:04d}-00000000{number:03d}-abcd"
            out.append(
                (
                    end - 2,
                    f"{stamp(end - 2)} [{pid}] {message} <= a@example.org "
                    f"H={host} [{source}]:{port} P=esmtp S=1800",
                )
            )
            out.append(
                (
                    end - 1,
                    f"{stamp(end - 1)} [{pid + 1}] {message} => u@campus.example "
                    "R=campus T=remote_smtp H=mx1.campus.example [10.0.0.5] "
                    'C="250 OK" DT=1s',
                )
            )
    out.append(
        (
            START + 900,
            f"{stamp(START + 900)} [{DAEMON}] Connection from "
            "[192.0.2.99]:4000 I=[198.51.100.1]:25 refused: too many connections",
        )
    )
    out.append(
        (
            START + 901,
            f"{stamp(START + 901)} [31999] 1v9999-000000000999-abcd == "
            "u@campus.example R=campus T=remote_smtp defer (-46) "
            "H=mx2.campus.example [10.0.0.6]: SMTP error from remote mail "
            "server after RCPT TO:<u@campus.example>: 421 4.3.2 busy",
        )
    )
    return sorted(out, key=lambda item: item[0])


def answer(table) -> dict:
    per: dict[str, list] = {}
    deltas: dict[float, int] = {}
    for source, start, end, _how in table:
        length = (end if end is not None else NOW) - start
        entry = per.setdefault(source, [0, 0.0, 0, []])
        entry[0] += 1
        entry[1] = max(entry[1], length)
        entry[2] += end is None
        entry[3].append(length)
        deltas[start] = deltas.get(start, 0) + 1
        if end is not None:
            deltas[end] = deltas.get(end, 0) - 1
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
    current = sum(1 for _s, _start, end, _how in table if end is None)
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
    (target / "mainlog").write_text("".join(text + "\n" for _when, text in lines(table)))
    (target / "risk.csv").write_text("".join(f"{ip},{risk}\n" for ip, risk in RISKS.items()))
    (target / "answer.json").write_text(json.dumps(answer(table), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
