#!/usr/bin/env python3
"""Make the demo's sample gateway log: a real Postfix writing its own log under a real SMTP flood.

Needs root: it creates a network namespace, mounts inside a private mount namespace and starts
daemons. Run it from anywhere:

    python3 tools/sample/make_sample.py                     # about five minutes, writes the sample
    python3 tools/sample/make_sample.py --quick --output /tmp/try     # mechanics only, ~1.5 min

Inside a namespace `sgsample-<pid>` holding only documentation addresses it starts dnsmasq with
two DNSBL zones, Postfix as the campus gateway gw1.campus.example (postscreen in front of smtpd,
`maillog_file` in UTC), a campus mail server and a non-mail server answering 421 (both served by
this script). A bounded asyncio driver then runs the five attack kinds of MISSION.md next to
legitimate mail, has Postfix rotate its log half way (`postfix logrotate`) and captures the log
while some sessions are still open. The expected analysis is computed twice, from the driver's
own record of its sessions and from the log read by a small independent reader; the sample is
written only when both agree with each other and with the plan:

    <output>/sample/mail.log.<date>.gz, mail.log   the rotated family exactly as Postfix wrote it
    <output>/sample/answer.yml                     the expected analysis of that family
    <output>/sample/README.md                      how the sample was made, with its numbers
    <output>/dns.zone                              PTR and DNSBL records for the demo's DNS server

Every daemon is stopped by its PID and the namespace is removed, whatever happens. Traffic goes
only to addresses inside the namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gzip
import ipaddress
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

LOG = logging.getLogger("make_sample")

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE.parent.parent / "demo"

GATEWAY_IPV4 = "198.51.100.25"
GATEWAY_IPV6 = "2001:db8::25"
CAMPUS_SERVER = "198.51.100.26"
NOMAIL_SERVER = "198.51.100.27"
DNS_SERVER = "198.51.100.53"
INFRASTRUCTURE = (GATEWAY_IPV4, GATEWAY_IPV6, CAMPUS_SERVER, NOMAIL_SERVER, DNS_SERVER)

PARTNER_NETWORK = ipaddress.ip_network("198.51.100.128/25")
DOMESTIC_SUFFIXES = (".jp",)
DNSBL_ZONES = {"dnsbl.example": 3, "dnsbl2.example": 2}
DNSBL_REPLY = "127.0.0.2"
DNSBL_THRESHOLD = 3  # the analysis maps risk = min(100, 95 * rank / DNSBL_THRESHOLD)
CAPACITY = 150  # default_process_limit in main.cf.in: the most smtpd sessions the gateway holds
# postscreen scores a client with the DNSBL answers that came within its greet wait; a source's
# first session waits that long. DNS here answers in milliseconds, but a loaded machine starts
# dnsblog slowly: 1 s lost the rank of single-session sources under load, 3 s leaves margin.
GREET_WAIT = 3

# Where Postfix sees its temporary folders (bound there in the inner process's mount namespace).
MOUNTS = {
    "etc": "/etc/postfix",
    "spool": "/var/spool/postfix",
    "lib": "/var/lib/postfix",
    "log": "/var/log",
}
QUIET_SECONDS = 6.0  # no session starts or ends this long before the capture
REPLY_TIMEOUT = 60.0
PR_SET_CHILD_SUBREAPER = 36
POSTFIX_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TZ": "UTC", "LANG": "C"}


class SampleError(Exception):
    """Something that keeps the sample from being made; the message says what to do."""


# --- The plan: who sends what ------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    name: str
    min_duration: float
    min_sessions: int
    min_risk: float


RULES = (Rule("cond1", 20, 40, 95), Rule("cond2", 200, 1, 95), Rule("cond3", 0, 300, 0))


@dataclass(frozen=True)
class Pattern:
    """`count` sessions of one shape, their starts spread evenly from `start` to `stop` seconds.

    Shapes: `mail` delivers one message at once; `hold` spreads one message over `hold` seconds
    by sending a header line every `trickle` seconds; `open` does the same and never finishes, so
    its session is still open when the log is captured.
    """

    shape: str
    count: int
    start: float
    stop: float
    hold: float = 0.0
    trickle: float = 5.0
    domain: str = "campus.example"
    relay_probe_every: int = 0  # every n-th session first asks to relay outside campus


@dataclass(frozen=True)
class Source:
    address: str
    kind: str
    note: str
    expect: str  # "block cond1", "spare domestic", "spare allowlist" or "none"
    patterns: tuple[Pattern, ...]
    helo: str
    rank: int = 0  # DNSBL rank: 3 = dnsbl.example, 2 = dnsbl2.example, 5 = both
    ptr: str | None = None
    ptr_target: str | None = None  # where the PTR name resolves to; None: no A/AAAA record

    @property
    def domain(self) -> str:
        """The mail domain the source claims; an address literal HELO gets a made-up one."""
        return "bulk-mail.example" if self.helo.startswith("[") else self.helo

    @property
    def sender(self) -> str:
        return f"{'news' if self.kind == 'legitimate' else 'info'}@{self.domain}"


def build_plan(*, time_scale: float, count_scale: float) -> list[Source]:
    """The sources of the sample; times in seconds after the driver starts."""

    def t(seconds: float) -> float:
        return seconds * time_scale

    def n(count: int) -> int:
        return max(1, round(count * count_scale))

    def mail(count: int, start: float, stop: float, domain: str = "campus.example") -> Pattern:
        return Pattern("mail", n(count), t(start), t(stop), domain=domain)

    def slow(hold: float | None, start: float) -> Pattern:
        shape, seconds = ("open", 0.0) if hold is None else ("hold", t(hold))
        return Pattern(shape, 1, t(start), t(start), hold=seconds, trickle=t(20))

    def ddos(count: int, relay_probe_every: int = 0) -> tuple[Pattern, ...]:
        body = Pattern("hold", n(count), t(20), t(222), hold=t(26), trickle=t(5),
                       relay_probe_every=relay_probe_every)  # fmt: skip
        last_wave = Pattern("open", n(4), t(245), t(247), trickle=t(5))
        return (body, last_wave)

    def hold(count: int, seconds: float, stop: float = 222) -> Pattern:
        return Pattern("hold", n(count), t(20), t(stop), hold=t(seconds), trickle=t(5))

    ddos_note = "DDoS: 40 sessions of ~26 s, then 4 held open"
    # Source(address, kind, note, expect, patterns, helo, rank=, ptr=, ptr_target=)
    # fmt: off
    return [
        Source("192.0.2.10", "legitimate", "steady mail", "none", (mail(27, 2, 262),),
               "mail.sender-one.example", ptr="mail.sender-one.example",
               ptr_target="192.0.2.10"),
        Source("192.0.2.11", "legitimate", "steady mail", "none", (mail(24, 4, 260),),
               "smtp.sender-two.example", ptr="smtp.sender-two.example",
               ptr_target="192.0.2.11"),
        Source("192.0.2.12", "legitimate", "steady mail", "none", (mail(20, 6, 258),),
               "mx.sender-three.example"),
        Source("192.0.2.13", "legitimate", "steady mail", "none", (mail(30, 3, 264),),
               "out.sender-four.example", ptr="out.sender-four.example",
               ptr_target="192.0.2.13"),
        Source("203.0.113.10", "SMTP DoS", "320 short mail sessions", "block cond3",
               (mail(320, 25, 200),), "bulk10.example.net"),
        Source("203.0.113.11", "SMTP DoS", "320 short mail sessions", "block cond3",
               (mail(320, 30, 205),), "bulk11.example.net", rank=3,
               ptr="bulk11.example.net", ptr_target="203.0.113.11"),
        Source("203.0.113.12", "near miss", "299 short mail sessions, one below cond3", "none",
               (mail(299, 35, 210),), "bulk12.example.net"),
        Source("203.0.113.20", "slow post", "one session held 235 s", "block cond2",
               (slow(235, 5),), "slow20.example.net", rank=3),
        Source("203.0.113.21", "slow post", "one session still open at capture",
               "block cond2", (slow(None, 6),), "slow21.example.net", rank=3),
        Source("203.0.113.22", "near miss", "one session held 180 s, below cond2", "none",
               (slow(180, 7),), "slow22.example.net", rank=3),
        Source("203.0.113.30", "421 storm", "310 mails to nomail.campus.example",
               "block cond3", (mail(310, 40, 215, domain="nomail.campus.example"),),
               "storm30.example.net"),
        Source("203.0.113.9", "SMTP DDoS", ddos_note + "; forward-confirmed .jp name",
               "spare domestic", ddos(40), "mail.example.ac.jp", rank=3,
               ptr="mail.example.ac.jp", ptr_target="203.0.113.9"),
        Source("203.0.113.40", "SMTP DDoS", ddos_note, "block cond1", ddos(40),
               "host-40.dynamic.example.net", rank=3, ptr="host-40.dynamic.example.net",
               ptr_target="203.0.113.40"),
        Source("203.0.113.41", "SMTP DDoS", ddos_note, "block cond1", ddos(40),
               "ppp41.pool.example.com", rank=3, ptr="ppp41.pool.example.com"),
        Source("203.0.113.42", "SMTP DDoS", ddos_note + "; HELO [192.0.2.10], relay probes",
               "block cond1", ddos(40, relay_probe_every=4), "[192.0.2.10]", rank=3),
        Source("203.0.113.43", "SMTP DDoS", ddos_note + "; HELO claims a .jp name",
               "block cond1", ddos(40, relay_probe_every=5), "mail.example.ac.jp", rank=3),
        Source("203.0.113.44", "SMTP DDoS", ddos_note, "block cond1", ddos(40),
               "bot44.example.org", rank=3),
        Source("203.0.113.45", "SMTP DDoS", ddos_note + "; .jp PTR without an A record",
               "block cond1", ddos(40), "dsl45.pool.example.ne.jp", rank=3,
               ptr="dsl45.pool.example.ne.jp"),
        Source("203.0.113.46", "SMTP DDoS", ddos_note + "; listed in both zones",
               "block cond1", ddos(40), "bot46.example.org", rank=5),
        Source("203.0.113.47", "SMTP DDoS", ddos_note + "; .jp PTR resolving elsewhere",
               "block cond1", ddos(40), "mx1.unconfirmed.ne.jp", rank=3,
               ptr="mx1.unconfirmed.ne.jp", ptr_target="203.0.113.200"),
        Source("2001:db8:bad::40", "SMTP DDoS", ddos_note + "; IPv6", "block cond1",
               ddos(40), "flood6.example.org", rank=3, ptr="flood6.example.org",
               ptr_target="2001:db8:bad::40"),
        Source("198.51.100.140", "SMTP DDoS", ddos_note + "; inside the partner network",
               "spare allowlist", ddos(40), "smtp.partner-univ.example", rank=3,
               ptr="smtp.partner-univ.example", ptr_target="198.51.100.140"),
        Source("203.0.113.50", "near miss", "39 sessions of ~26 s, one below cond1", "none",
               (hold(39, 26),), "bot50.example.org", rank=3),
        Source("203.0.113.51", "near miss", "45 sessions of ~14 s, too short for cond1",
               "none", (hold(45, 14, stop=230),), "bot51.example.org", rank=3),
        Source("203.0.113.52", "near miss",
               "45 sessions of ~26 s and one of 235 s, but DNSBL rank 2 (risk 63%)", "none",
               (hold(45, 26), slow(235, 9)), "bot52.example.org", rank=2),
    ]
    # fmt: on


def risk_of(rank: int) -> float:
    return min(100.0, 95.0 * rank / DNSBL_THRESHOLD)


def dnsbl_zones_of(rank: int) -> list[str]:
    """The DNSBL zones that list a source, chosen so that their weights add up to `rank`."""
    zones = {0: [], 2: ["dnsbl2.example"], 3: ["dnsbl.example"], 5: list(DNSBL_ZONES)}
    if rank not in zones:
        raise ValueError(f"no zone combination gives DNSBL rank {rank}")
    return zones[rank]


def reverse_name(address: str) -> str:
    """`203.0.113.9` -> `9.113.0.203.in-addr.arpa`; IPv6 in nibble form under ip6.arpa."""
    return ipaddress.ip_address(address).reverse_pointer


def dnsbl_query_name(address: str, zone: str) -> str:
    return reverse_name(address).rsplit(".", 2)[0] + "." + zone


# --- Namespace (outer process, host side) ------------------------------------------------------


def run(command: Sequence[str], *, env: dict[str, str] | None = None) -> str:
    """Run a command, returning its stdout; a failure raises SampleError with its stderr."""
    done = subprocess.run(list(command), capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SampleError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    if done.stderr.strip():
        LOG.info("%s: %s", command[0], done.stderr.strip())
    return done.stdout


def configure_namespace(namespace: str, addresses: Sequence[str]) -> None:
    """Bring `lo` up and give one interface every address of the sample."""
    run(["ip", "-n", namespace, "link", "set", "lo", "up"])
    try:
        run(["ip", "-n", namespace, "link", "add", "sg0", "type", "dummy"])
    except SampleError:
        # No dummy module on this kernel: one end of a veth pair serves the same purpose.
        run(["ip", "-n", namespace, "link", "add", "sg0", "type", "veth", "peer", "name", "sg1"])
        run(["ip", "-n", namespace, "link", "set", "sg1", "up"])
    run(["ip", "-n", namespace, "link", "set", "sg0", "up"])
    for address in addresses:
        if ":" in address:
            run(["ip", "-n", namespace, "addr", "add", f"{address}/128", "dev", "sg0", "nodad"])
        else:
            run(["ip", "-n", namespace, "addr", "add", f"{address}/32", "dev", "sg0"])


def alive(pid: int) -> bool:
    """Whether the process runs; a zombie child of ours is reaped and counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def stop_pid(pid: int, *, expect: str, grace: float = 10.0) -> None:
    """Stop one process by PID (SIGTERM, then SIGKILL), if it is still the program we started."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except (OSError, UnicodeDecodeError):
        return
    if expect not in command or not alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.2)
    LOG.warning("%s (pid %d) ignored SIGTERM; killing it", expect, pid)
    os.kill(pid, signal.SIGKILL)


def children() -> list[int]:
    """PIDs whose parent is this process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid():
            found.append(int(stat.parent.name))
    return found


def reap_children(grace: float = 10.0) -> None:
    """Wait for Postfix's daemons, orphaned to us when master exits; stop stragglers by PID."""
    deadline = time.monotonic() + grace
    while remaining := [pid for pid in children() if alive(pid)]:
        if time.monotonic() > deadline:
            LOG.warning("stopping %d leftover Postfix processes: %s", len(remaining), remaining)
            for pid in remaining:
                os.kill(pid, signal.SIGKILL)
            deadline = math.inf
        time.sleep(0.2)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def run_inner(command: Sequence[str]) -> int:
    """Run the inner process; when interrupted, let it stop its daemons before we go on."""
    inner = subprocess.Popen(list(command))
    try:
        return inner.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            inner.send_signal(signal.SIGTERM)
        try:
            inner.wait(30)
        except subprocess.TimeoutExpired:
            LOG.warning("the inner process (pid %d) did not stop; killing it", inner.pid)
            inner.kill()
            inner.wait()
        raise


def outer_main(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise SampleError("make_sample.py needs root (network namespaces, mounts, daemons)")
    for program in ("ip", "postfix", "dnsmasq", "gzip"):
        if shutil.which(program, path=POSTFIX_ENV["PATH"]) is None:
            raise SampleError(f"{program} is missing: apt-get install iproute2 postfix dnsmasq")

    namespace = f"sgsample-{os.getpid()}"
    netns_dir = Path("/etc/netns") / namespace
    created_netns_root = not netns_dir.parent.exists()
    created: list[str] = []  # what to remove at the end: only what this run made
    workdir = Path(tempfile.mkdtemp(prefix="sgsample-"))
    workdir.chmod(0o755)  # Postfix daemons running as `postfix` reach data_directory through it
    plan = build_plan(time_scale=args.time_scale, count_scale=args.count_scale)
    try:
        run(["ip", "netns", "add", namespace])
        created.append("namespace")
        configure_namespace(namespace, [*INFRASTRUCTURE, *(source.address for source in plan)])
        netns_dir.mkdir(parents=True)
        created.append("netns_dir")
        (netns_dir / "resolv.conf").write_text(f"nameserver {DNS_SERVER}\n")
        inner = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--inner",
            str(workdir),
            "--output",
            str(args.output),
            "--time-scale",
            str(args.time_scale),
            "--count-scale",
            str(args.count_scale),
        ]
        if args.quick:
            inner.append("--quick")
        return run_inner(["ip", "netns", "exec", namespace, *inner])
    finally:
        for pid_file, program in (
            (workdir / "spool/pid/master.pid", "master"),
            (workdir / "run/dnsmasq.pid", "dnsmasq"),
        ):
            pid = read_pid(pid_file)
            if pid is not None:
                stop_pid(pid, expect=program)
        if "namespace" in created:
            subprocess.run(["ip", "netns", "del", namespace], check=False, capture_output=True)
        if "netns_dir" in created:
            shutil.rmtree(netns_dir, ignore_errors=True)
        if created_netns_root:
            with contextlib.suppress(OSError):
                netns_dir.parent.rmdir()
        shutil.rmtree(workdir, ignore_errors=True)


# --- Daemons (inner process, inside the namespace) ---------------------------------------------


def render(template: Path, values: dict[str, str]) -> str:
    text = template.read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    leftover = re.search(r"@[A-Z_]+@", text)
    if leftover:
        raise SampleError(f"{template.name}: no value for {leftover.group()}")
    return text


class Workdir:
    """The temporary tree of one run: Postfix's config, queue, data and log, dnsmasq's files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.etc = root / "etc"  # config_directory, seen by Postfix as /etc/postfix
        self.spool = root / "spool"  # queue_directory
        self.lib = root / "lib"  # data_directory
        self.log = root / "log"  # maillog_file's folder
        self.run = root / "run"  # dnsmasq's config and pid file
        self.capture = root / "capture"  # the log family as captured


def prepare_gateway(work: Workdir, plan: Sequence[Source]) -> None:
    """Write Postfix's and dnsmasq's configuration into the work directory."""
    shutil.copytree("/etc/postfix", work.etc, symlinks=True)  # postfix-files, dynamicmaps.cf
    for folder in (work.spool, work.lib, work.log, work.run, work.capture):
        folder.mkdir(mode=0o755)
    shutil.chown(work.lib, "postfix", "postfix")
    work.lib.chmod(0o700)

    values = {
        "GATEWAY_IPV4": GATEWAY_IPV4,
        "GATEWAY_IPV6": GATEWAY_IPV6,
        "CAMPUS_SERVER": CAMPUS_SERVER,
        "NOMAIL_SERVER": NOMAIL_SERVER,
        "GREET_WAIT": str(GREET_WAIT),
    }
    (work.etc / "main.cf").write_text(render(HERE / "main.cf.in", values))
    (work.etc / "master.cf").write_text(render(HERE / "master.cf.in", {}))

    records = [
        f"host-record={dnsbl_query_name(source.address, zone)},{DNSBL_REPLY}"
        for source in plan
        for zone in dnsbl_zones_of(source.rank)
    ]
    dnsmasq = render(
        HERE / "dnsmasq.conf.in",
        {
            "DNS_SERVER": DNS_SERVER,
            "PID_FILE": str(work.run / "dnsmasq.pid"),
            "RECORDS": "\n".join(records),
        },
    )
    (work.run / "dnsmasq.conf").write_text(dnsmasq)


def bind_folders(work: Workdir) -> None:
    """Show the temporary folders at Postfix's standard paths, in our own mount namespace only.

    Postfix logs its configuration directory (start, reload) and postscreen its cache file;
    this keeps temporary paths out of the shipped log. `ip netns exec` gave this process a mount
    namespace of its own (a slave of the host's), so the host's folders stay untouched.
    """
    if os.readlink("/proc/self/ns/mnt") == os.readlink(f"/proc/{os.getppid()}/ns/mnt"):
        raise SampleError("refusing to mount over /etc/postfix outside a private mount namespace")
    for folder, target in MOUNTS.items():
        run(["mount", "--bind", str(work.root / folder), target])


def unbind_folders() -> None:
    for target in reversed(MOUNTS.values()):
        subprocess.run(["umount", target], check=False)


def start_dnsmasq(work: Workdir) -> subprocess.Popen[bytes]:
    conf = work.run / "dnsmasq.conf"
    return subprocess.Popen(["dnsmasq", "--keep-in-foreground", f"--conf-file={conf}"])


def check_dns(plan: Sequence[Source]) -> None:
    """Resolve the DNSBL names the way Postfix will (libc, /etc/resolv.conf of the namespace)."""
    listed = next(source for source in plan if source.rank == 3)
    name = dnsbl_query_name(listed.address, "dnsbl.example")
    deadline = time.monotonic() + 10
    while True:
        try:
            replies = {info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET)}
            break
        except socket.gaierror as exc:
            if time.monotonic() > deadline:
                raise SampleError(f"DNSBL server does not answer {name}: {exc}") from None
            time.sleep(0.3)
    if replies != {DNSBL_REPLY}:
        raise SampleError(f"DNSBL answered {replies} for {name}, expected {DNSBL_REPLY}")


def postfix(*arguments: str) -> str:
    return run(["postfix", *arguments], env=POSTFIX_ENV)


def start_postfix(work: Workdir) -> None:
    postfix("start")
    deadline = time.monotonic() + 15
    while b"daemon started" not in read_bytes(work.log / "mail.log"):
        if time.monotonic() > deadline:
            raise SampleError(f"Postfix did not log its start; see {work.log / 'mail.log'}")
        time.sleep(0.2)


def stop_postfix(work: Workdir) -> None:
    pid = read_pid(work.spool / "pid" / "master.pid")
    try:
        postfix("stop")
    except SampleError as exc:
        LOG.warning("%s", exc)
    if pid is not None:
        stop_pid(pid, expect="master", grace=15)


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


# --- The campus side: a mail server and a server that is none ----------------------------------


@dataclass
class CampusSide:
    deliveries: Counter[str] = field(default_factory=Counter)  # envelope sender -> messages
    refused: int = 0  # connections the non-mail server answered with 421

    async def mail_server(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Accept mail for campus.example; count each message by its envelope sender."""
        sender, recipients = "", 0
        writer.write(b"220 mx.campus.example ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    reply = b"250-mx.campus.example\r\n250 8BITMIME"
                elif verb == b"HELO":
                    reply = b"250 mx.campus.example"
                elif verb == b"MAIL":
                    sender, recipients = line[10:].strip(b"<> \r\n").decode(), 0
                    reply = b"250 2.1.0 Ok"
                elif verb == b"RCPT":
                    accepted = line.rstrip(b"> \r\n").lower().endswith(b"@campus.example")
                    recipients += accepted
                    reply = b"250 2.1.5 Ok" if accepted else b"550 5.1.1 No such user"
                elif verb == b"DATA":
                    writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    while (body := await reader.readline()) not in (b".\r\n", b""):
                        pass
                    if not body:
                        break
                    self.deliveries[sender] += recipients
                    reply = b"250 2.0.0 Ok: queued"
                elif verb in (b"RSET", b"NOOP"):
                    reply = b"250 2.0.0 Ok"
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    break
                else:
                    reply = b"502 5.5.2 Error: command not recognized"
                writer.write(reply + b"\r\n")
                await writer.drain()
        finally:
            writer.close()

    async def non_mail_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A campus host that is no mail server: every connection gets 421 and is closed."""
        self.refused += 1
        writer.write(b"421 4.3.2 nomail.campus.example: no SMTP service on this host\r\n")
        await writer.drain()
        writer.close()


# --- The traffic driver ------------------------------------------------------------------------


class SmtpError(Exception):
    pass


class SmtpClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def expect(self, *codes: int) -> int:
        while True:
            line = await asyncio.wait_for(self.reader.readline(), REPLY_TIMEOUT)
            if not line.endswith(b"\n") or not line[:3].isdigit():
                raise SmtpError(f"unexpected reply {line!r}")
            if line[3:4] != b"-":
                break
        code = int(line[:3])
        if code not in codes:
            raise SmtpError(f"expected {codes}, got {line.decode(errors='replace').strip()}")
        return code

    async def send(self, text: str) -> None:
        self.writer.write(text.encode() + b"\r\n")
        await self.writer.drain()

    async def command(self, text: str, *codes: int) -> int:
        await self.send(text)
        return await self.expect(*codes)


@dataclass
class SessionRecord:
    """One TCP session as the driver saw it; times are wall-clock seconds."""

    source: str
    shape: str
    started: float
    handed_off: float | None = None  # smtpd's 220 arrived: Postfix logged "connect from"
    ended: float | None = None
    error: str | None = None


class Driver:
    """Runs the plan against the gateway: every session bounded in number and in time."""

    def __init__(self, plan: Sequence[Source]) -> None:
        self.plan = plan
        self.records: list[SessionRecord] = []
        self.last_event = time.time()
        self.sent: Counter[str] = Counter()  # source -> messages accepted by the gateway

    async def session(self, source: Source, pattern: Pattern, serial: int) -> None:
        record = SessionRecord(source.address, pattern.shape, time.time())
        self.records.append(record)
        gateway = GATEWAY_IPV6 if ":" in source.address else GATEWAY_IPV4
        writer: asyncio.StreamWriter | None = None
        try:
            reader, connected = await asyncio.wait_for(
                asyncio.open_connection(gateway, 25, local_addr=(source.address, 0)), 30
            )
            writer = connected
            client = SmtpClient(reader, connected)
            await client.expect(220)
            record.handed_off = self.last_event = time.time()
            await self.transaction(client, source, pattern, serial)
        except (TimeoutError, OSError, SmtpError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            LOG.warning("session from %s (%s) failed: %s", source.address, pattern.shape, exc)
        except asyncio.CancelledError:
            if writer is not None:
                writer.transport.abort()
            raise
        if writer is not None:
            writer.close()
            record.ended = self.last_event = time.time()

    async def transaction(
        self, client: SmtpClient, source: Source, pattern: Pattern, serial: int
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if pattern.shape == "open" else loop.time() + pattern.hold
        await client.command(f"EHLO {source.helo}", 250)
        if pattern.relay_probe_every and serial % pattern.relay_probe_every == 0:
            await client.command(f"MAIL FROM:<{source.sender}>", 250)
            await client.command(f"RCPT TO:<user{serial}@elsewhere.example>", 454, 554)
            await client.command("RSET", 250)
        await client.command(f"MAIL FROM:<{source.sender}>", 250)
        await client.command(f"RCPT TO:<user{serial % 50}@{pattern.domain}>", 250)
        await client.command("DATA", 354)
        for header in (
            f"From: <{source.sender}>",
            f"To: <user{serial % 50}@{pattern.domain}>",
            f"Subject: sample message {serial}",
            f"Message-ID: <sample.{serial}.{pattern.shape}@{source.domain}>",
        ):
            await client.send(header)
        pad = 0
        while deadline is None or loop.time() < deadline:
            remaining = pattern.trickle if deadline is None else deadline - loop.time()
            await asyncio.sleep(max(0.0, min(pattern.trickle, remaining)))
            pad += 1
            await client.send(f"X-Sample-Pad-{pad}: still sending")
        await client.send("")
        await client.send("This is sample traffic for the smtpguard demo.")
        await client.command(".", 250)
        self.sent[source.address] += 1
        await client.command("QUIT", 221)

    async def run_pattern(self, source: Source, pattern: Pattern, origin: float) -> None:
        """Start the pattern's sessions on schedule, no more at once than its rate needs."""
        loop = asyncio.get_running_loop()
        span = max(pattern.stop - pattern.start, 1.0)
        expected_length = {"mail": 2.0, "hold": pattern.hold + 2.0}.get(pattern.shape)
        if expected_length is None:
            limit = pattern.count
        else:
            limit = max(2, math.ceil(pattern.count / span * expected_length * 1.5))
        slots = asyncio.Semaphore(limit)

        async def one(serial: int) -> None:
            step = (pattern.stop - pattern.start) / max(1, pattern.count - 1)
            await asyncio.sleep(max(0.0, origin + pattern.start + step * serial - loop.time()))
            async with slots:
                await self.session(source, pattern, serial)

        await asyncio.gather(*(one(serial) for serial in range(pattern.count)))


@dataclass
class Capture:
    """What the driver knew at the moment it copied the log."""

    at: float
    files: list[Path]
    records: list[SessionRecord]
    sent: Counter[str]
    deliveries: Counter[str]
    refused: int
    started: float


async def drive(
    plan: Sequence[Source], work: Workdir, *, rotate_at: float, capture_at: float
) -> Capture:
    """Start the campus side, run the plan, rotate half way, capture with sessions still open."""
    campus = CampusSide()
    servers = [
        await asyncio.start_server(campus.mail_server, CAMPUS_SERVER, 25),
        await asyncio.start_server(campus.non_mail_server, NOMAIL_SERVER, 25),
    ]
    driver = Driver(plan)
    loop = asyncio.get_running_loop()
    origin, started = loop.time(), time.time()
    finite: list[asyncio.Task[None]] = []
    held_open: list[asyncio.Task[None]] = []
    for source in plan:
        for pattern in source.patterns:
            task = asyncio.create_task(driver.run_pattern(source, pattern, origin))
            (held_open if pattern.shape == "open" else finite).append(task)
    try:
        await asyncio.sleep(rotate_at)
        LOG.info("rotating the log: postfix logrotate")
        await asyncio.to_thread(postfix, "logrotate")

        await asyncio.gather(*finite)
        await asyncio.sleep(max(0.0, origin + capture_at - loop.time()))
        while (quiet := time.time() - driver.last_event) < QUIET_SECONDS:
            await asyncio.sleep(QUIET_SECONDS - quiet)
        quiet_since = driver.last_event
        unready = [r for r in driver.records if r.shape == "open" and r.handed_off is None]
        if unready:
            raise SampleError(f"{len(unready)} held sessions never reached smtpd")

        LOG.info("capturing: flushing the queue so the newest lines are 421 deferrals")
        await asyncio.to_thread(run, ["postqueue", "-f"], env=POSTFIX_ENV)
        await asyncio.sleep(3)
        files = await asyncio.to_thread(copy_log_family, work)
        captured = time.time()
        if driver.last_event != quiet_since:
            raise SampleError("a session started or ended while the log was captured")
        snapshot = [SessionRecord(**vars(record)) for record in driver.records]
        return Capture(
            at=captured,
            files=files,
            records=snapshot,
            sent=Counter(driver.sent),
            deliveries=Counter(campus.deliveries),
            refused=campus.refused,
            started=started,
        )
    finally:
        for task in [*finite, *held_open]:
            task.cancel()
        await asyncio.gather(*finite, *held_open, return_exceptions=True)
        for server in servers:
            server.close()


def copy_log_family(work: Workdir) -> list[Path]:
    """Copy mail.log and its rotated .gz once Postfix has stopped writing for a second."""
    current = work.log / "mail.log"  # /var/log/mail.log as Postfix sees it
    deadline = time.monotonic() + 20
    size = -1
    while (new_size := current.stat().st_size) != size or not current.read_bytes().endswith(b"\n"):
        if time.monotonic() > deadline:
            raise SampleError("Postfix kept writing its log; cannot take a clean capture")
        size = new_size
        time.sleep(1.0)
    copies = []
    for path in sorted(work.log.glob("mail.log*")):
        copies.append(work.capture / path.name)
        shutil.copyfile(path, copies[-1])
    rotated = [path for path in copies if path.name.endswith(".gz")]
    if len(rotated) != 1:
        raise SampleError(f"expected one rotated file, found {[p.name for p in copies]}")
    return copies


# --- An independent reader of the captured log -------------------------------------------------

LOG_LINE = re.compile(
    rb"^(?P<stamp>[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d) \S+ "
    rb"(?P<program>[^\s\[]+)\[(?P<pid>\d+)\]: (?P<text>.*)$"
)
SMTPD_CONNECT = re.compile(rb"^connect from [^\s\[]*\[([^\]]+)\]$")
SMTPD_DISCONNECT = re.compile(rb"^disconnect from [^\s\[]*\[([^\]]+)\]")
DNSBL_RANK = re.compile(rb"^DNSBL rank (\d+) for \[([^\]]+)\]:\d+$")


@dataclass
class LogSession:
    source: str
    start: float
    end: float | None = None
    file_index: int = 0


@dataclass
class LogFacts:
    sessions: list[LogSession]
    ranks: dict[str, int]
    now: float
    lines: list[int]
    counts: Counter[str]
    first: list[float]
    last: list[float]


def family_order(files: Sequence[Path]) -> list[Path]:
    """Oldest first: rotated files by their date suffix, then the current mail.log."""
    return sorted(files, key=lambda path: (path.name == "mail.log", path.name))


def read_lines(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        yield from handle


def timestamp(stamp: bytes, *, captured: datetime) -> float:
    """Seconds since the epoch of a year-less UTC stamp; a December line read in January is
    last year's."""
    parsed = datetime.strptime(f"{captured.year} {stamp.decode()}", "%Y %b %d %H:%M:%S")
    if parsed.replace(tzinfo=UTC) > captured + timedelta(days=1):
        parsed = parsed.replace(year=captured.year - 1)
    return parsed.replace(tzinfo=UTC).timestamp()


def read_log(files: Sequence[Path], *, captured: datetime) -> LogFacts:
    """Pair smtpd connect/disconnect by process id; note postscreen DNSBL ranks; count shapes."""
    stamps: dict[bytes, float] = {}
    open_by_pid: dict[bytes, LogSession] = {}
    sessions: list[LogSession] = []
    ranks: dict[str, int] = {}
    counts: Counter[str] = Counter()
    lines: list[int] = []
    first: list[float] = []
    last: list[float] = []
    for index, path in enumerate(family_order(files)):
        lines.append(0)
        for raw in read_lines(path):
            lines[-1] += 1
            match = LOG_LINE.match(raw.rstrip(b"\n"))
            if match is None:
                counts["unparsed"] += 1
                continue
            stamp = match["stamp"]
            if stamp not in stamps:
                stamps[stamp] = timestamp(stamp, captured=captured)
            moment = stamps[stamp]
            if len(first) <= index:
                first.append(moment)
                last.append(moment)
            last[index] = moment
            program, text = match["program"], match["text"]
            counts[program.decode()] += 1
            if b" 421 " in text or b": 421 " in text:
                counts["lines with 421"] += 1
                counts["421 deferrals"] += b"status=deferred" in text
            if program == b"postfix/smtpd":
                pid = match["pid"]
                if connect := SMTPD_CONNECT.match(text):
                    if pid in open_by_pid:
                        counts["connect without disconnect"] += 1
                    address = str(ipaddress.ip_address(connect.group(1).decode()))
                    open_by_pid[pid] = LogSession(address, moment, file_index=index)
                    sessions.append(open_by_pid[pid])
                elif SMTPD_DISCONNECT.match(text):
                    session = open_by_pid.pop(pid, None)
                    if session is None:
                        counts["disconnect without connect"] += 1
                    else:
                        session.end = moment
                        counts["sessions across the rotation"] += session.file_index != index
            elif program == b"postfix/postscreen":
                if rank := DNSBL_RANK.match(text):
                    address = str(ipaddress.ip_address(rank.group(2).decode()))
                    ranks[address] = max(ranks.get(address, 0), int(rank.group(1)))
                    counts["DNSBL rank lines"] += 1
                for shape in (b"CONNECT from", b"PASS NEW", b"PASS OLD"):
                    counts[f"postscreen {shape.decode()}"] += text.startswith(shape)
    counts["sessions open across the rotation"] = sum(
        1 for session in open_by_pid.values() if session.file_index != len(lines) - 1
    )
    return LogFacts(sessions, ranks, last[-1], lines, counts, first, last)


# --- The expected analysis ---------------------------------------------------------------------


@dataclass
class SourceFacts:
    """A source as the analysis should see it at `now`."""

    address: str
    durations: list[float]  # each session's length, or its age at now when still open
    open_sessions: int
    rank: int

    @property
    def risk(self) -> float:
        return risk_of(self.rank)

    def qualifying(self, rule: Rule) -> int:
        return sum(1 for duration in self.durations if duration >= rule.min_duration)

    def matches(self) -> list[str]:
        return [
            rule.name
            for rule in RULES
            if self.qualifying(rule) >= rule.min_sessions and self.risk >= rule.min_risk
        ]

    def shortfall(self) -> str:
        """What each rule lacks, e.g. `cond1: 39/40 sessions >= 20 s`."""
        reasons = []
        for rule in RULES:
            misses = []
            if (have := self.qualifying(rule)) < rule.min_sessions:
                misses.append(f"{have}/{rule.min_sessions} sessions >= {rule.min_duration:g} s")
            if self.risk < rule.min_risk:
                misses.append(f"risk {self.risk:.1f}% < {rule.min_risk:g}%")
            reasons.append(f"{rule.name}: {', '.join(misses)}")
        return "; ".join(reasons)


def facts_from_driver(capture: Capture, plan: Sequence[Source]) -> dict[str, SourceFacts]:
    facts = {source.address: SourceFacts(source.address, [], 0, source.rank) for source in plan}
    for record in capture.records:
        if record.handed_off is None:
            continue
        source = facts[record.source]
        if record.ended is None:
            source.open_sessions += 1
            source.durations.append(capture.at - record.handed_off)
        else:
            source.durations.append(record.ended - record.handed_off)
    return facts


def facts_from_log(log: LogFacts) -> dict[str, SourceFacts]:
    facts: dict[str, SourceFacts] = {}
    for session in log.sessions:
        source = facts.setdefault(
            session.source, SourceFacts(session.source, [], 0, log.ranks.get(session.source, 0))
        )
        if session.end is None:
            source.open_sessions += 1
            source.durations.append(log.now - session.start)
        else:
            source.durations.append(session.end - session.start)
    return facts


def decide(source: Source, facts: SourceFacts) -> str:
    """`block <rule>`, `spare domestic`, `spare allowlist` or `none`, as the demo must decide."""
    rules = facts.matches()
    if not rules:
        return "none"
    if ipaddress.ip_address(source.address) in PARTNER_NETWORK:
        return "spare allowlist"
    name = source.ptr if source.ptr_target == source.address else None
    if name is not None and name.endswith(DOMESTIC_SUFFIXES):
        return "spare domestic"  # a forward-confirmed domestic name
    return f"block {rules[0]}"


def cross_check(
    plan: Sequence[Source],
    by_driver: dict[str, SourceFacts],
    by_log: dict[str, SourceFacts],
    *,
    quick: bool,
) -> list[str]:
    """Differences between the two readings and the plan; empty when the sample is good."""
    problems = []
    unknown = set(by_log) - set(by_driver)
    if unknown:
        problems.append(f"log has sessions from sources outside the plan: {sorted(unknown)}")
    for source in plan:
        driver = by_driver[source.address]
        log = by_log.get(source.address, SourceFacts(source.address, [], 0, 0))
        pairs = {
            "sessions": (len(driver.durations), len(log.durations)),
            "open sessions": (driver.open_sessions, log.open_sessions),
            "DNSBL rank": (driver.rank, log.rank),
            "rules": (driver.matches(), log.matches()),
        }
        for what, (seen, logged) in pairs.items():
            if seen != logged:
                problems.append(f"{source.address}: {what} driver {seen}, log {logged}")
        decision = decide(source, log)
        if not quick and decision != source.expect:
            problems.append(f"{source.address}: decided {decision!r}, plan says {source.expect!r}")
    return problems


# --- Output ------------------------------------------------------------------------------------


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def flow(mapping: Mapping[str, object]) -> str:
    """A YAML flow mapping; strings are JSON-quoted, which YAML reads the same."""
    items = (
        f"{key}: {flow(value) if isinstance(value, Mapping) else json.dumps(value)}"
        for key, value in mapping.items()
    )
    return "{" + ", ".join(items) + "}"


def block(key: str, entries: Sequence[Mapping[str, object]]) -> list[str]:
    if not entries:
        return [f"{key}: []"]
    return [f"{key}:", *(f"  - {flow(entry)}" for entry in entries)]


def peak(log: LogFacts) -> tuple[int, float]:
    """Most sessions open at once, one-second steps; a session ends at its disconnect second."""
    changes: Counter[float] = Counter()
    for session in log.sessions:
        changes[session.start] += 1
        if session.end is not None:
            changes[session.end] -= 1
    best, best_at, current = 0, log.now, 0
    for moment in sorted(changes):
        current += changes[moment]
        if current > best:
            best, best_at = current, moment
    return best, best_at


def answer_yaml(
    plan: Sequence[Source], facts: dict[str, SourceFacts], log: LogFacts, capture: Capture
) -> str:
    open_now = sum(source.open_sessions for source in facts.values())
    most, most_at = peak(log)
    year = datetime.fromtimestamp(log.now, UTC).year
    out = [
        "# Expected analysis of this sample, written by tools/sample/make_sample.py.",
        "# Sessions are smtpd connect .. disconnect pairs; an open one counts with its age.",
        "# flood_analyze starts a session that postscreen passed on at postscreen's CONNECT,",
        "# so its longest_session may exceed these by up to the greet wait; the sets agree.",
        f"capacity: {CAPACITY}",
        "timezone: UTC",
        f"year: {year}",
        f"now: {json.dumps(iso(log.now))}",
        "occupancy:",
        f"  current_sessions: {open_now}",
        f"  current: {round(100 * open_now / CAPACITY, 1)}",
        "  # peak: one-second steps, a session no longer counts in its disconnect second",
        f"  peak_sessions: {most}",
        f"  peak: {round(100 * most / CAPACITY, 1)}",
        f"  peak_at: {json.dumps(iso(most_at))}",
        "triggered: true" if 100 * open_now / CAPACITY > 20 else "triggered: false",
        "alert: true" if 100 * open_now / CAPACITY > 40 else "alert: false",
        f"# risk = min(100, 95 * rank / {DNSBL_THRESHOLD}); rank: a source's highest postscreen"
        " `DNSBL rank` line",
        f"dnsbl_threshold: {DNSBL_THRESHOLD}",
        "rules:",
    ]
    out += [f"  - {flow(vars(rule))}" for rule in RULES]
    out += [
        "spare:",
        f"  domestic_suffixes: {json.dumps(list(DOMESTIC_SUFFIXES))}",
        f"  allowlist: {json.dumps([str(PARTNER_NETWORK)])}",
    ]

    decisions = {source.address: decide(source, facts[source.address]) for source in plan}
    blocked, spared, passed = [], [], []
    for source in plan:
        fact, decision = facts[source.address], decisions[source.address]
        if decision.startswith("block"):
            blocked.append({"ip": source.address, "rule": decision.split()[1]})
        elif decision.startswith("spare"):
            spared.append(
                {
                    "ip": source.address,
                    "reason": decision.split()[1],
                    "rule": fact.matches()[0],
                    "name": source.ptr,
                }
            )
        else:
            passed.append({"ip": source.address, "kind": source.kind, "why": fact.shortfall()})
    out += block("block", blocked) + block("spared", spared) + block("not_candidates", passed)
    out += block(
        "sources",
        [
            {
                "ip": source.address,
                "kind": source.kind,
                "sessions": len(fact.durations),
                "open_sessions": fact.open_sessions,
                "longest_session": int(max(fact.durations)),
                "qualifying": {rule.name: fact.qualifying(rule) for rule in RULES},
                "dnsbl_rank": fact.rank,
                "risk": round(fact.risk, 1),
                "rules": fact.matches(),
            }
            for source in plan
            for fact in [facts[source.address]]
        ],
    )
    out += [
        "log:",
        f"  files: {json.dumps([path.name for path in family_order(capture.files)])}",
        f"  lines: {json.dumps(log.lines)}",
    ]
    return "\n".join(out) + "\n"


def dns_zone(plan: Sequence[Source]) -> str:
    """PTR records (with their forward records) and the DNSBL zones, one record a line."""
    out = [
        "# DNS data for the smtpguard demo, written by tools/sample/make_sample.py.",
        "# One record a line: NAME TYPE VALUE [TTL]. Names are absolute; PTR values end in '.'.",
        "",
        "# PTR names of the sample's sources; sources without a line have no PTR.",
    ]
    for source in plan:
        if source.ptr is None:
            continue
        out.append(
            f"# {source.address}: {source.kind}, "
            + (
                "forward-confirmed"
                if source.ptr_target == source.address
                else "no forward record"
                if source.ptr_target is None
                else f"name resolves to {source.ptr_target}, not back"
            )
        )
        out.append(f"{reverse_name(source.address)} PTR {source.ptr}. 3600")
        if source.ptr_target is not None:
            kind = "AAAA" if ":" in source.ptr_target else "A"
            out.append(f"{source.ptr} {kind} {source.ptr_target} 3600")
    out += [
        "",
        "# The gateway and the campus servers.",
        f"gw1.campus.example A {GATEWAY_IPV4}",
        f"gw1.campus.example AAAA {GATEWAY_IPV6}",
        f"{reverse_name(GATEWAY_IPV4)} PTR gw1.campus.example.",
        f"mx.campus.example A {CAMPUS_SERVER}",
        f"nomail.campus.example A {NOMAIL_SERVER}",
        "",
        "# DNSBL zones as the gateway's postscreen used them "
        f"({', '.join(f'{zone}*{weight}' for zone, weight in DNSBL_ZONES.items())}).",
        "# rank 3: dnsbl.example; rank 2: dnsbl2.example; rank 5: both.",
    ]
    for source in plan:
        for zone in dnsbl_zones_of(source.rank):
            out.append(f"{dnsbl_query_name(source.address, zone)} A {DNSBL_REPLY} 300")
    return "\n".join(out) + "\n"


def readme(
    plan: Sequence[Source], facts: dict[str, SourceFacts], log: LogFacts, capture: Capture
) -> str:
    rows = []
    for source in plan:
        fact = facts[source.address]
        rows.append(
            f"| `{source.address}` | {source.kind} | {source.note} | "
            f"{len(fact.durations)} | {int(max(fact.durations))} | {fact.open_sessions} |"
            f" {source.rank} | {decide(source, fact)} |"
        )
    open_now = sum(source.open_sessions for source in facts.values())
    legit = [source for source in plan if source.kind == "legitimate"]
    listed_sessions = sum(len(fact.durations) for fact in facts.values() if fact.rank)
    names = [path.name for path in family_order(capture.files)]
    values = {
        "DATE": iso(capture.started)[:10],
        "RUN_SECONDS": str(round(capture.at - capture.started)),
        "ROTATED": names[0],
        "ROTATED_MINUTES": f"{(log.last[0] - log.first[0]) / 60:.1f}",
        "LINES": str(sum(log.lines)),
        "LINES_ROTATED": str(log.lines[0]),
        "LINES_CURRENT": str(log.lines[-1]),
        "SESSIONS": str(len(log.sessions)),
        "ACROSS": str(
            log.counts["sessions across the rotation"]
            + log.counts["sessions open across the rotation"]
        ),
        "RANK_LINES": str(log.counts["DNSBL rank lines"]),
        "LISTED_SESSIONS": str(listed_sessions),
        "UNRANKED": str(listed_sessions - log.counts["DNSBL rank lines"]),
        "LINES_421": str(log.counts["lines with 421"]),
        "DEFERRALS": str(log.counts["421 deferrals"]),
        "REFUSED": str(capture.refused),
        "DELIVERED": str(sum(capture.deliveries.values())),
        "LEGIT_SENT": str(sum(capture.sent[source.address] for source in legit)),
        "LEGIT_DELIVERED": str(sum(capture.deliveries[source.sender] for source in legit)),
        "NOW": iso(log.now),
        "OPEN": str(open_now),
        "CAPACITY": str(CAPACITY),
        "PERCENT": f"{100 * open_now / CAPACITY:.1f}",
        "QUIET": f"{QUIET_SECONDS:g}",
        "GREET_WAIT": str(GREET_WAIT),
        "SOURCES_TABLE": "\n".join(rows),
    }
    return render(HERE / "README.md.in", values)


def write_outputs(output: Path, capture: Capture, texts: dict[str, str]) -> None:
    sample = output / "sample"
    sample.mkdir(parents=True, exist_ok=True)
    for old in sample.glob("mail.log*"):
        old.unlink()
    for path in capture.files:
        shutil.copyfile(path, sample / path.name)
        (sample / path.name).chmod(0o644)
    for name, text in texts.items():
        (output / name).write_text(text)
        (output / name).chmod(0o644)


# --- Inner process: everything inside the namespace --------------------------------------------


def inner_main(args: argparse.Namespace) -> int:
    work = Workdir(Path(args.inner))
    plan = build_plan(time_scale=args.time_scale, count_scale=args.count_scale)
    os.environ.update(POSTFIX_ENV)
    time.tzset()
    # Postfix's master daemonises and its children outlive it briefly; as a subreaper this
    # process inherits them and can reap them (PID 1 here does not).
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    prepare_gateway(work, plan)
    bind_folders(work)
    dnsmasq = start_dnsmasq(work)
    try:
        check_dns(plan)
        start_postfix(work)
        LOG.info("gateway up; driving traffic for about %.0f s", 290 * args.time_scale)
        capture = asyncio.run(
            drive(plan, work, rotate_at=150 * args.time_scale, capture_at=285 * args.time_scale)
        )
    finally:
        stop_postfix(work)
        dnsmasq.terminate()
        try:
            dnsmasq.wait(10)
        except subprocess.TimeoutExpired:
            dnsmasq.kill()
            dnsmasq.wait()
        reap_children()
        unbind_folders()

    log = read_log(capture.files, captured=datetime.fromtimestamp(capture.at, UTC))
    by_driver = facts_from_driver(capture, plan)
    by_log = facts_from_log(log)
    failed = [record for record in capture.records if record.error]
    problems = cross_check(plan, by_driver, by_log, quick=args.quick)
    if failed and not args.quick:
        problems.append(
            f"{len(failed)} sessions failed, e.g. {failed[0].source}: {failed[0].error}"
        )
    for source in plan:
        if (
            source.kind == "legitimate"
            and capture.deliveries[source.sender] != capture.sent[source.address]
        ):
            problems.append(
                f"{source.address}: sent {capture.sent[source.address]} messages, "
                f"the campus server got {capture.deliveries[source.sender]}"
            )
    report(log, capture, by_log)
    if problems:
        raise SampleError(
            "the sample does not hold together; nothing written:\n  " + "\n  ".join(problems)
        )

    texts = {
        "sample/answer.yml": answer_yaml(plan, by_log, log, capture),
        "sample/README.md": readme(plan, by_log, log, capture),
        "dns.zone": dns_zone(plan),
    }
    write_outputs(Path(args.output), capture, texts)
    LOG.info("wrote the sample to %s", Path(args.output) / "sample")
    return 0


def report(log: LogFacts, capture: Capture, facts: dict[str, SourceFacts]) -> None:
    open_now = sum(source.open_sessions for source in facts.values())
    LOG.info("log: %s lines in %s", log.lines, [path.name for path in family_order(capture.files)])
    LOG.info("log shapes: %s", dict(sorted(log.counts.items())))
    LOG.info(
        "now %s, %d sessions open (%.1f%% of %d); run %.0f s",
        iso(log.now),
        open_now,
        100 * open_now / CAPACITY,
        CAPACITY,
        capture.at - capture.started,
    )
    LOG.info(
        "campus server: %d messages; non-mail server refused %d connections",
        sum(capture.deliveries.values()),
        capture.refused,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="folder that receives sample/ and dns.zone (default: the demo's)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a quarter of the time and sessions: checks the mechanics only",
    )
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    parser.add_argument("--time-scale", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--count-scale", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    scale = 0.25 if args.quick else 1.0
    args.time_scale = scale if args.time_scale is None else args.time_scale
    args.count_scale = scale if args.count_scale is None else args.count_scale
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    # SIGTERM unwinds like Ctrl-C, through the `finally` blocks that stop every daemon by PID
    # and remove the namespace and the temporary folders; the inner process gets it too.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        return inner_main(args) if args.inner else outer_main(args)
    except SampleError as exc:
        LOG.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        if not args.inner:  # the outer process reports, once the inner one has cleaned up
            LOG.error("interrupted; every daemon stopped, the namespace removed, nothing written")
        return 130


def interrupted(signum: int, frame: object) -> None:
    """The first Ctrl-C or SIGTERM unwinds; later ones must not cut the clean-up short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


if __name__ == "__main__":
    sys.exit(main())
