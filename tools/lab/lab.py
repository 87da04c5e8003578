#!/usr/bin/env python3
"""Build and tear down the smtpguard lab: a campus mail path in network namespaces.

Needs root. Commands:

    python3 tools/lab/lab.py up        # build the lab, print its address plan (about 8 s)
    python3 tools/lab/lab.py down      # stop every daemon by PID, delete the namespaces
    python3 tools/lab/lab.py status    # what runs, by PID
    python3 tools/lab/lab.py reset     # stop the attack, empty the block list, new window
    python3 tools/lab/lab.py attack    # run the five attack kinds + legitimate mail (bounded)
    python3 tools/lab/lab.py probe     # per source: does it still get a 220? mail at campus?
                                       # (exit 1 if a sender is wrongly cut off; with
                                       # --expect-defended also if an attacker is served)
    python3 tools/lab/lab.py stop NAME # stop one daemon that `status` names, by PID
    python3 tools/lab/lab.py restart NAME
                                       # start a stopped sshd (sshd-bastion ...) again

Each command takes its own options only (`lab.py <command> --help`) and refuses others.

The lab directory (default /run/smtpguard-lab, or $SMTPGUARD_LAB_DIR) holds every file of
the run: keys, known_hosts, ssh_config, daemon configurations, logs and lab.json, the record
of what was created (namespaces, PIDs, links) that `down` works from. Namespaces are named
`<prefix>-internet`, `-ips`, `-gateway`, `-campus`, `-bastion` (prefix `sgl1` unless --prefix).

    controller (this host) ──10.231.N.0/30── bastion (sshd, DNS) ──mgmt── gateway, ips (sshd)
    internet (senders) ──100.64.N.0/30── ips (router, nftables) ──198.51.100.24/29── gateway
                       ──fd00:64::/64──────────────────────────────2001:db8::/64──
    gateway (Postfix + postscreen) ──10.233.N.0/29── campus (Postfix .2, a 421 host .3)

The internet side and the gateway speak IPv4 and IPv6 (senders in 2001:db8::/32); the
management side is IPv4 only. Traffic stays inside the namespaces; the only address on this
host is the controller's end of its link to the bastion. Ctrl-C or SIGTERM during `up` removes
what was built; `up` on a running lab only reports it.

Attacks do not add up: the lab's analysis window (ANALYSIS_WINDOW) would count the sessions of
every attack in it, and each attack is built to stay below the rules only on its own. So
`attack` refuses to start while an earlier attack runs or its traffic is still inside the
window, and `reset` starts a new window: it stops a running attack, empties the block list,
waits until the gateway holds no session, empties its queue and moves the gateway's and the
campus server's logs (and the controller's copies and the attack records) aside into
`earlier/<time>/`. `reset --keep-window` only empties the block list (the lab scenarios,
which share one attack).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger("smtpguard.lab")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SAMPLE = ROOT / "tools" / "sample"
sys.path.insert(0, str(SAMPLE))

from make_sample import GATEWAY_IPV6, GREET_WAIT, alive  # noqa: E402  (shared with the sample)

DEFAULT_DIR = Path(os.environ.get("SMTPGUARD_LAB_DIR", "/run/smtpguard-lab"))
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TZ": "UTC", "LANG": "C"}
HOSTS = ("internet", "ips", "gateway", "campus", "bastion")

GATEWAY = "198.51.100.25"  # the gateway's public addresses (the sample driver's targets)
IPS_DMZ = "198.51.100.30"
IPS_DMZ_V6 = "2001:db8::30"
# IPv6 lives only inside the namespaces, so one plan serves every lab.
INTERNET_UPLINK_V6 = "fd00:64::1"
IPS_OUTSIDE_V6 = "fd00:64::2"
CAPACITY = 200  # default_process_limit: the most smtpd sessions the gateway holds
# The lab inventory's analyze_window (inventory/lab/host_vars/gw1.lab.yml), in seconds.
ANALYSIS_WINDOW = 30 * 60
# The near misses stay below the rules for this long at most (tools/lab/traffic.py).
MAX_ATTACK = 280
MATCH_AFTER = 45  # seconds of attack after which every flood matches its rule
# How long after an attack's end the gateway may still hold its sessions (smtpd_timeout 20 s
# for a client whose packets the IPS drops), with room to spare.
SESSION_TAIL = 60
DNSBL_REPLY = "127.0.0.2"


class LabError(Exception):
    """A step of the lab failed; the message names it and what to do."""


class UsageError(LabError):
    """The command line names something the lab does not have (exit 2, like argparse)."""


@dataclass(frozen=True)
class Plan:
    """Every name and address of one lab; `number` keeps two labs' host links apart."""

    prefix: str
    number: int
    directory: Path

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    @property
    def controller(self) -> str:
        return f"10.231.{self.number}.1"

    @property
    def bastion(self) -> str:
        return f"10.231.{self.number}.2"

    @property
    def bastion_mgmt(self) -> str:
        return f"10.232.{self.number}.1"

    @property
    def gateway_mgmt(self) -> str:
        return f"10.232.{self.number}.2"

    @property
    def bastion_mgmt_ips(self) -> str:
        return f"10.232.{self.number}.5"

    @property
    def ips_mgmt(self) -> str:
        return f"10.232.{self.number}.6"

    @property
    def internet_uplink(self) -> str:
        return f"100.64.{self.number}.1"

    @property
    def ips_outside(self) -> str:
        return f"100.64.{self.number}.2"

    @property
    def gateway_inside(self) -> str:
        return f"10.233.{self.number}.1"

    @property
    def campus_mx(self) -> str:
        return f"10.233.{self.number}.2"

    @property
    def campus_nomail(self) -> str:
        """A host of the campus link (a /29: .3 is neither its network nor its broadcast)."""
        return f"10.233.{self.number}.3"

    @property
    def record(self) -> Path:
        return self.directory / "lab.json"

    def facts(self) -> dict[str, object]:
        """What the inventory, the tests and the traffic tools read from lab.json."""
        return {
            "prefix": self.prefix,
            "number": self.number,
            "namespaces": {host: self.ns(host) for host in HOSTS},
            "controller": self.controller,
            "bastion": self.bastion,
            "dns": self.bastion,
            "gateway": GATEWAY,
            "gateway_v6": GATEWAY_IPV6,
            "gateway_mgmt": self.gateway_mgmt,
            "ips_mgmt": self.ips_mgmt,
            "ips_outside": self.ips_outside,
            "ips_outside_v6": IPS_OUTSIDE_V6,
            "campus_mx": self.campus_mx,
            "campus_nomail": self.campus_nomail,
            "capacity": CAPACITY,
            "ssh_config": str(self.directory / "ssh_config"),
            "gateway_log": str(self.directory / "gateway" / "log" / "mail.log"),
            "campus_log": str(self.directory / "campus" / "log" / "mail.log"),
        }


# --- Recording what was made, so that `down` undoes exactly that ----------------------------


class Record:
    """lab.json: rewritten after every step, read by `down` even after a failed `up`."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.data: dict = {
            "facts": plan.facts(),
            "namespaces": [],
            "pids": {},
            "links": [],
            "netns_dirs": [],
            "complete": False,
            # The analysis window the lab's traffic counts in: from `up` or the last `reset`.
            "window": {"start": time.time(), "attacks": []},
        }

    @classmethod
    def load(cls, directory: Path) -> Record | None:
        try:
            data = json.loads((directory / "lab.json").read_text())
        except (OSError, ValueError):
            return None
        facts = data["facts"]
        record = cls(Plan(facts["prefix"], facts["number"], directory))
        record.data = {"window": {"start": 0.0, "attacks": []}, **data}
        return record

    def add(self, kind: str, value: object, key: str | None = None) -> None:
        if key is None:
            self.data[kind].append(value)
        else:
            self.data[kind][key] = value
        self.save()

    def save(self) -> None:
        self.plan.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.plan.record.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.data, indent=2) + "\n")
        temporary.replace(self.plan.record)


def run(command: Sequence[str], *, check: bool = True, input: str | None = None) -> str:
    done = subprocess.run(
        list(command), capture_output=True, text=True, env=ENV, input=input, check=False
    )
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def in_ns(namespace: str, *command: str, check: bool = True, input: str | None = None) -> str:
    return run(["ip", "netns", "exec", namespace, *command], check=check, input=input)


def start(
    record: Record, name: str, namespace: str, command: Sequence[str], *, config: str | None = None
) -> int:
    """Start a daemon in the foreground inside a namespace; its PID goes into the record, with
    the configuration file that tells it from another daemon of the same program, if given."""
    log = record.plan.directory / "logs" / f"{name}.log"
    log.parent.mkdir(exist_ok=True)
    with log.open("ab") as output:
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *command],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=ENV,
            start_new_session=True,
        )
    entry = {"pid": process.pid, "program": Path(command[0]).name}
    record.add("pids", {**entry, "config": config} if config else entry, key=name)
    return process.pid


def wait_until(what: str, test, *, timeout: float = 15.0, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        if time.monotonic() > deadline:
            hint = f"; see {log}" if log else ""
            raise LabError(f"{what} did not happen within {timeout:.0f} s{hint}")
        time.sleep(0.1)


# --- Stopping by PID -------------------------------------------------------------------------


def arguments_of(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.rstrip(b"\0").decode(errors="replace").split("\0")


def program_of(pid: int) -> str:
    """The name of the executable a process runs ("" when gone)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).name.removesuffix(" (deleted)")
    except OSError:
        return ""


def runs(pid: int, program: str, *, config: str | None = None) -> bool:
    """Whether `pid` still is the process we started: alive, running `program`, and started
    with `config` if given. sshd and Postfix retitle themselves (`sshd: /usr/sbin/sshd -D -e -f
    <config> [listener] ...`), so the executable names the program, or else argv[0] does (the
    attack's `python` runs python3.x); a retitled sshd keeps its original command line."""
    if not alive(pid):
        return False
    arguments = arguments_of(pid)
    names = {program_of(pid), Path(arguments[0]).name if arguments else ""}
    return program in names and (config is None or config in " ".join(arguments))


def entry_runs(entry: dict) -> bool:
    """Whether the daemon a record entry names still runs as recorded."""
    return runs(entry["pid"], entry["program"], config=entry.get("config"))


def stop_pid(pid: int, program: str, *, config: str | None = None, grace: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL, one process, if it is still the program we started."""
    if not runs(pid, program, config=config):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pid):
        if time.monotonic() > deadline:
            LOG.warning("%s (pid %d) ignored SIGTERM; killing it", program, pid)
            os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.1)
    return True


# --- Building ----------------------------------------------------------------------------------


Side = tuple[str | None, str, str | tuple[str, ...]]


def add_address(namespace: str | None, interface: str, address: str) -> None:
    """IPv6 addresses skip duplicate address detection: usable at once, not after ~2 s."""
    prefix = [] if namespace is None else ["-n", namespace]
    nodad = ["nodad"] if ":" in address else []
    run(["ip", *prefix, "addr", "add", address, "dev", interface, *nodad])


def link(record: Record, left: Side, right: Side) -> None:
    """A veth pair: (namespace or None for this host, interface, address(es)/prefix) a side."""
    (left_ns, left_if, _), (right_ns, right_if, _) = left, right
    run(["ip", "link", "add", left_if, "type", "veth", "peer", "name", right_if, "netns", right_ns])
    if left_ns is None:
        record.add("links", left_if)
    else:
        run(["ip", "link", "set", left_if, "netns", left_ns])
    for namespace, interface, addresses in (left, right):
        for address in (addresses,) if isinstance(addresses, str) else addresses:
            add_address(namespace, interface, address)
        prefix = [] if namespace is None else ["-n", namespace]
        run(["ip", *prefix, "link", "set", interface, "up"])


IPV6_CONF = ("net.ipv6.conf.all", "net.ipv6.conf.default")
# The gateway's link to the campus: room for the campus server and the 421 host (a /30 would
# make the 421 host's .3 its broadcast address, unreachable for the gateway).
CAMPUS_LINK = 29


def build_network(record: Record, senders: Sequence[str]) -> None:
    plan = record.plan
    for host in HOSTS:
        run(["ip", "netns", "add", plan.ns(host)])
        record.add("namespaces", plan.ns(host))
        run(["ip", "-n", plan.ns(host), "link", "set", "lo", "up"])
        # Link-local addresses of the interfaces moved in later skip DAD as well.
        in_ns(plan.ns(host), "sysctl", "-qw", *(f"{k}.accept_dad=0" for k in IPV6_CONF))

    link(
        record,
        (None, f"{plan.prefix}-ctl", f"{plan.controller}/30"),
        (plan.ns("bastion"), "ctl0", f"{plan.bastion}/30"),
    )
    link(
        record,
        (plan.ns("bastion"), "mgmt-gw", f"{plan.bastion_mgmt}/30"),
        (plan.ns("gateway"), "mgmt0", f"{plan.gateway_mgmt}/30"),
    )
    link(
        record,
        (plan.ns("bastion"), "mgmt-ips", f"{plan.bastion_mgmt_ips}/30"),
        (plan.ns("ips"), "mgmt0", f"{plan.ips_mgmt}/30"),
    )
    link(
        record,
        (plan.ns("internet"), "up0", (f"{plan.internet_uplink}/30", f"{INTERNET_UPLINK_V6}/64")),
        (plan.ns("ips"), "out0", (f"{plan.ips_outside}/30", f"{IPS_OUTSIDE_V6}/64")),
    )
    link(
        record,
        (plan.ns("ips"), "dmz0", (f"{IPS_DMZ}/29", f"{IPS_DMZ_V6}/64")),
        (plan.ns("gateway"), "dmz0", (f"{GATEWAY}/29", f"{GATEWAY_IPV6}/64")),
    )
    link(
        record,
        (plan.ns("gateway"), "campus0", f"{plan.gateway_inside}/{CAMPUS_LINK}"),
        (
            plan.ns("campus"),
            "gw0",
            (f"{plan.campus_mx}/{CAMPUS_LINK}", f"{plan.campus_nomail}/{CAMPUS_LINK}"),
        ),
    )

    # The senders: every address on the internet side's uplink, routed to the IPS.
    for address in senders:
        add_address(plan.ns("internet"), "up0", f"{address}/{128 if ':' in address else 32}")
    for host, via in (
        ("internet", plan.ips_outside),
        ("internet", IPS_OUTSIDE_V6),
        ("gateway", IPS_DMZ),
        ("gateway", IPS_DMZ_V6),
        ("campus", plan.gateway_inside),
        ("ips", plan.internet_uplink),
        ("ips", INTERNET_UPLINK_V6),
    ):
        run(["ip", "-n", plan.ns(host), "route", "add", "default", "via", via])
    in_ns(
        plan.ns("ips"),
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
        *(f"{conf}.forwarding=1" for conf in IPV6_CONF),
    )


def write_keys(plan: Plan) -> None:
    """A client key for this run; authorized on the bastion, the gateway and the IPS."""
    keys = plan.directory / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            f"smtpguard-lab-{plan.prefix}",
            "-f",
            str(keys / "id_ed25519"),
        ]
    )
    shutil.copyfile(keys / "id_ed25519.pub", keys / "authorized_keys")


SSHD_CONFIG = """\
# sshd of the lab's {name}, written by tools/lab/lab.py.
ListenAddress {listen}
HostKey {directory}/ssh_host_ed25519_key
PidFile {directory}/sshd.pid
AuthorizedKeysFile {keys}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding {forwarding}
X11Forwarding no
PrintMotd no
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def start_sshd(record: Record, name: str, *, listen: str, forwarding: bool) -> str:
    plan = record.plan
    directory = plan.directory / "ssh" / name
    directory.mkdir(parents=True, exist_ok=True)
    run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            str(directory / "ssh_host_ed25519_key"),
        ]
    )
    config = directory / "sshd_config"
    config.write_text(
        SSHD_CONFIG.format(
            name=name,
            listen=listen,
            directory=directory,
            keys=plan.directory / "keys",
            forwarding="yes" if forwarding else "no",
        )
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    start_sshd_daemon(record, f"sshd-{name}", config=str(config))
    return (directory / "ssh_host_ed25519_key.pub").read_text().split(" ")[:2]


def start_sshd_daemon(record: Record, name: str, *, config: str) -> int:
    host = name.removeprefix("sshd-")
    command = ["/usr/sbin/sshd", "-D", "-e", "-f", config]
    return start(record, name, record.plan.ns(host), command, config=config)


def ssh_listeners(namespace: str) -> list[int]:
    """PIDs of the processes listening on TCP port 22 in a namespace."""
    output = in_ns(namespace, "ss", "-Htlnp", "( sport = :22 )", check=False)
    return [int(pid) for pid in re.findall(r"pid=(\d+)", output)]


def write_ssh_client(plan: Plan, host_keys: dict[str, tuple[str, list[str]]]) -> None:
    """ssh_config and known_hosts: the gateway and the IPS only through the bastion."""
    ssh = plan.directory / "ssh"
    known = [f"{alias},{address} {' '.join(key)}" for alias, (address, key) in host_keys.items()]
    (ssh / "known_hosts").write_text("\n".join(known) + "\n")
    keys = plan.directory / "keys"
    hops = {
        "bastion": (plan.bastion, None),
        "gw1": (plan.gateway_mgmt, "bastion"),
        "ips1": (plan.ips_mgmt, "bastion"),
    }
    out = [f"# ssh client settings of the lab {plan.prefix}, written by tools/lab/lab.py.", ""]
    for alias, (address, jump) in hops.items():
        out += [f"Host {alias} {address}", f"  HostName {address}"]
        if jump:
            out.append(f"  ProxyJump {jump}")
        out.append("")
    out += [
        "Host *",
        "  User root",
        f"  IdentityFile {keys / 'id_ed25519'}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {ssh / 'known_hosts'}",
        "  GlobalKnownHostsFile /dev/null",
        "  StrictHostKeyChecking yes",
        "  BatchMode yes",
        "  ControlMaster no",
        "  ControlPath none",
        "  ConnectTimeout 5",
        "  KexAlgorithms curve25519-sha256",  # the post-quantum default costs ~0.2 s a hop
        "  ServerAliveInterval 5",
        "  ServerAliveCountMax 2",
    ]
    (plan.directory / "ssh_config").write_text("\n".join(out) + "\n")


def zone_records(plan: Plan) -> list[str]:
    """dnsmasq lines: PTR (confirmed, unconfirmed, none) and the DNSBL zones."""
    from tools.lab import traffic

    lines = []
    for source in traffic.lab_sources():
        if source.ptr and source.ptr_target == source.address:
            lines.append(f"host-record={source.ptr},{source.address}")
        elif source.ptr:
            lines.append(f"ptr-record={traffic.reverse_name(source.address)},{source.ptr}")
            if source.ptr_target:
                lines.append(f"address=/{source.ptr}/{source.ptr_target}")
        for zone in traffic.dnsbl_zones_of(source.rank):
            lines.append(
                f"host-record={traffic.dnsbl_query_name(source.address, zone)},{DNSBL_REPLY}"
            )
    lines.append(f"host-record=gw1.campus.example,{GATEWAY},{GATEWAY_IPV6}")
    lines.append(f"host-record=mx.campus.example,{plan.campus_mx}")
    return lines


def start_dns(record: Record) -> None:
    plan = record.plan
    directory = plan.directory / "dns"
    directory.mkdir(exist_ok=True)
    config = directory / "dnsmasq.conf"
    config.write_text(
        "\n".join(
            [
                "# The lab's DNS: PTR, forward and DNSBL records; nothing is forwarded.",
                "port=53",
                f"listen-address={plan.bastion},{plan.bastion_mgmt}",
                "bind-interfaces",
                "no-resolv",
                "no-hosts",
                "no-poll",
                *(f"local=/{suffix}/" for suffix in ("example", "jp", "com", "net", "org", "arpa")),
                *zone_records(plan),
            ]
        )
        + "\n"
    )
    start(
        record,
        "dns",
        plan.ns("bastion"),
        [
            "/usr/sbin/dnsmasq",
            "--keep-in-foreground",
            "--log-facility=-",
            f"--conf-file={config}",
            f"--pid-file={directory / 'dnsmasq.pid'}",
        ],
    )

    netns = Path("/etc/netns") / plan.ns("gateway")
    netns.mkdir(parents=True, exist_ok=True)
    record.add("netns_dirs", str(netns))
    (netns / "resolv.conf").write_text(f"nameserver {plan.bastion_mgmt}\n")


MAIN_CF = """\
# main.cf of the lab's {role}, written by tools/lab/lab.py; nothing runs chrooted.
compatibility_level = 3.6
queue_directory = {directory}/spool
data_directory = {directory}/lib
maillog_file = {directory}/log/mail.log
maillog_file_prefixes = {directory}/log
maillog_file_compressor = gzip
myhostname = {hostname}
mydomain = campus.example
inet_interfaces = {listen}
inet_protocols = ipv4, ipv6
mynetworks = 127.0.0.0/8, [::1]/128
smtpd_peername_lookup = no
smtpd_banner = $myhostname ESMTP
in_flow_delay = 0s
biff = no
alias_maps =
alias_database =
"""

GATEWAY_CF = """\
# The gateway: relays campus.example to the campus server, scores sources against the DNSBL.
mydestination =
local_recipient_maps =
relay_domains = campus.example, nomail.campus.example
relay_recipient_maps =
transport_maps = inline:{{campus.example=smtp:[{mx}]:25, nomail.campus.example=smtp:[{nomail}]:25}}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
default_process_limit = {capacity}
# A stalled client (its packets dropped by the IPS) frees its session after this long.
smtpd_timeout = 20s
postscreen_greet_wait = {greet_wait}s
postscreen_greet_action = ignore
postscreen_dnsbl_sites = dnsbl.example*3, dnsbl2.example*2
postscreen_dnsbl_threshold = 2
postscreen_dnsbl_action = ignore
postscreen_cache_map = btree:$data_directory/postscreen_cache
queue_run_delay = 30s
minimal_backoff_time = 30s
maximal_backoff_time = 60s
"""

CAMPUS_CF = """\
# The campus server: accepts campus.example and discards it (counted in its log).
mydestination = campus.example
local_recipient_maps =
local_transport = discard:campus
default_process_limit = 200
"""


def start_postfix(record: Record, role: str, *, listen: str, hostname: str, extra: str) -> None:
    plan = record.plan
    directory = plan.directory / role
    etc = directory / "etc"
    shutil.copytree("/etc/postfix", etc, symlinks=True, dirs_exist_ok=True)
    for folder in ("spool", "lib", "log"):
        (directory / folder).mkdir(mode=0o755, exist_ok=True)
    shutil.chown(directory / "lib", "postfix", "postfix")
    (directory / "lib").chmod(0o700)
    directory.chmod(0o755)
    plan.directory.chmod(0o755)
    main = MAIN_CF.format(role=role, directory=directory, hostname=hostname, listen=listen)
    (etc / "main.cf").write_text(main + extra)
    master = (SAMPLE / "master.cf.in").read_text()
    if role != "gateway":
        master = master.replace(
            "smtp      inet  n       -       n       -       1       postscreen",
            "smtp      inet  n       -       n       -       -       smtpd",
        )
    (etc / "master.cf").write_text(
        master.replace("rendered by make_sample.py", "written by tools/lab/lab.py")
    )

    in_ns(plan.ns(role), "postfix", "-c", str(etc), "start")
    pid_file = directory / "spool" / "pid" / "master.pid"
    wait_until(f"Postfix on the {role} writing {pid_file}", pid_file.exists, log=directory / "log")
    pid = int(pid_file.read_text().split()[0])
    record.add("pids", {"pid": pid, "program": "master"}, key=f"postfix-{role}")
    log = directory / "log" / "mail.log"
    wait_until(
        f"Postfix on the {role} logging its start",
        lambda: log.exists() and b"daemon started" in log.read_bytes(),
        log=log,
    )


IPS_NFT = """\
# The IPS: a named set of blocked sources, dropped on TCP 25 in the forward path.
# smtpguard's push (push_blocklist, platform nftables) replaces the set's contents.
table inet smtpguard {
	set blocked_v4 {
		type ipv4_addr
		flags interval
		auto-merge
	}
	set blocked_v6 {
		type ipv6_addr
		flags interval
		auto-merge
	}
	chain smtp_drop {
		type filter hook forward priority 0; policy accept;
		ip saddr @blocked_v4 tcp dport 25 counter drop
		ip6 saddr @blocked_v6 tcp dport 25 counter drop
	}
}
"""


def start_ips(record: Record) -> None:
    plan = record.plan
    directory = plan.directory / "ips"
    directory.mkdir(exist_ok=True)
    rules = directory / "base.nft"
    rules.write_text(IPS_NFT)
    in_ns(plan.ns("ips"), "nft", "-f", str(rules))


def start_nomail(record: Record) -> None:
    """A campus host that is no mail server: 421 to every connection (the 421 storm)."""
    plan = record.plan
    start(
        record,
        "nomail",
        plan.ns("campus"),
        [sys.executable, str(HERE / "traffic.py"), "nomail", "--listen", plan.campus_nomail],
    )


def up(plan: Plan) -> tuple[Record, bool]:
    """Build the lab; a healthy lab in the directory is kept. Returns it, and whether it ran."""
    from tools.lab import traffic

    if plan.record.exists():
        existing = Record.load(plan.directory)
        if existing is not None and healthy(existing):
            LOG.info("a lab runs in %s already; nothing to build", plan.directory)
            return existing, True
        raise LabError(
            f"{plan.record} records a lab that is half built or has stopped daemons; "
            f"run `lab.py down --dir {plan.directory}` first"
        )
    started = time.monotonic()
    plan.directory.mkdir(parents=True, exist_ok=True)
    record = Record(plan)
    record.save()
    try:
        build_network(record, traffic.sender_addresses())
        write_keys(plan)
        host_keys = {
            "bastion": (
                plan.bastion,
                start_sshd(record, "bastion", listen=plan.bastion, forwarding=True),
            ),
            "gw1": (
                plan.gateway_mgmt,
                start_sshd(record, "gateway", listen=plan.gateway_mgmt, forwarding=False),
            ),
            "ips1": (
                plan.ips_mgmt,
                start_sshd(record, "ips", listen=plan.ips_mgmt, forwarding=False),
            ),
        }
        write_ssh_client(plan, host_keys)
        start_dns(record)
        start_ips(record)
        start_postfix(
            record, "campus", listen=plan.campus_mx, hostname="mx.campus.example", extra=CAMPUS_CF
        )
        start_postfix(
            record,
            "gateway",
            listen=f"{GATEWAY}, [{GATEWAY_IPV6}]",
            hostname="gw1.campus.example",
            extra=GATEWAY_CF.format(
                mx=plan.campus_mx,
                nomail=plan.campus_nomail,
                capacity=CAPACITY,
                greet_wait=GREET_WAIT,
            ),
        )
        start_nomail(record)
        (plan.directory / "controller").mkdir(exist_ok=True)
        wait_for_ssh(plan)
    except BaseException:
        LOG.error("building the lab failed; tearing down what was made")
        down(plan.directory)
        raise
    record.data["complete"] = True
    record.data["build_seconds"] = round(time.monotonic() - started, 1)
    record.data["window"] = {"start": time.time(), "attacks": []}
    record.save()
    return record, False


def healthy(record: Record) -> bool:
    """Complete, and every daemon it started still runs (a finished attack does not count)."""
    daemons = {name: entry for name, entry in record.data["pids"].items() if name != "attack"}
    return record.data["complete"] and all(entry_runs(entry) for entry in daemons.values())


def wait_for_ssh(plan: Plan) -> None:
    """The gateway and the IPS answer through the bastion."""
    for alias in ("gw1", "ips1"):
        deadline = time.monotonic() + 15
        while True:
            done = subprocess.run(
                ["ssh", "-F", str(plan.directory / "ssh_config"), alias, "true"],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise LabError(f"ssh to {alias} through the bastion fails: {done.stderr.strip()}")
            time.sleep(0.3)


# --- Tearing down ------------------------------------------------------------------------------


def down(directory: Path) -> bool:
    """Stop every recorded daemon by PID, delete the recorded namespaces and links."""
    record = Record.load(directory)
    if record is None:
        return False
    # SSH connections the controller keeps open through the bastion (SMTPGUARD_LAB_SSH_PERSIST).
    for socket in sorted((directory / "ssh").glob("mux-*")):
        run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "lab"], check=False)
    for name, entry in reversed(list(record.data["pids"].items())):
        if stop_pid(entry["pid"], entry["program"], config=entry.get("config"), grace=15):
            LOG.info("stopped %s (pid %d)", name, entry["pid"])
    # Postfix's daemons outlive a master that is killed; any process left in our namespaces
    # is ours (the namespaces were created by this lab), so stop those by PID too.
    for namespace in record.data["namespaces"]:
        pids = run(["ip", "netns", "pids", namespace], check=False).split()
        for pid in map(int, pids):
            stop_pid(pid, program_of(pid) or "?", grace=5)
    for name in record.data["links"]:
        run(["ip", "link", "del", name], check=False)
    for namespace in record.data["namespaces"]:
        run(["ip", "netns", "del", namespace], check=False)
    for netns_dir in record.data["netns_dirs"]:
        shutil.rmtree(netns_dir, ignore_errors=True)
    shutil.rmtree(directory, ignore_errors=True)
    return True


def status(directory: Path) -> dict:
    record = Record.load(directory)
    if record is None:
        return {"running": False}
    return {
        "running": True,
        "complete": record.data["complete"],
        "daemons": {
            name: {**entry, "alive": entry_runs(entry)}
            for name, entry in record.data["pids"].items()
        },
        **record.data["facts"],
    }


def stop_daemon(directory: Path, name: str | None) -> int:
    """Stop one recorded daemon by PID (the fault tests: the bastion down)."""
    record = complete_record(directory)
    names = list(record.data["pids"])
    if name not in names:
        raise UsageError(
            f"{'name the daemon to stop' if name is None else f'no daemon {name!r} recorded'}; "
            f"{record.plan.record} records {', '.join(names)}"
        )
    entry = record.data["pids"][name]
    if not stop_pid(entry["pid"], entry["program"], config=entry.get("config")):
        LOG.info("%s (pid %d) was not running", name, entry["pid"])
    return entry["pid"]


def restart_daemon(directory: Path, name: str | None) -> int:
    """Start a stopped sshd of the lab again with its own configuration; a running one stays.

    An sshd that serves but is not the recorded PID (a record of an earlier lab.py that started
    a second one) is recorded again instead of started twice."""
    record = complete_record(directory)
    sshds = [known for known in record.data["pids"] if known.startswith("sshd-")]
    if name not in sshds:
        raise UsageError(
            f"{'name the sshd to restart' if name is None else f'no sshd {name!r} recorded'}; "
            f"{record.plan.record} records {', '.join(sshds)}"
        )
    entry = record.data["pids"][name]
    host = name.removeprefix("sshd-")
    namespace = record.plan.ns(host)
    config = entry.get("config") or str(directory / "ssh" / host / "sshd_config")
    if runs(entry["pid"], "sshd", config=config):
        LOG.info("%s runs already (pid %d); nothing to restart", name, entry["pid"])
        return entry["pid"]

    serving = [pid for pid in ssh_listeners(namespace) if runs(pid, "sshd", config=config)]
    if serving:
        LOG.info(
            "%s runs as pid %d, not as the recorded %d; recorded it", name, serving[0], entry["pid"]
        )
        record.add("pids", {"pid": serving[0], "program": "sshd", "config": config}, key=name)
        return serving[0]

    pid = start_sshd_daemon(record, name, config=config)
    wait_for_listener(record, name, pid)
    return pid


def wait_for_listener(record: Record, name: str, pid: int) -> None:
    """Until a restarted sshd listens; a clear error if it exits (its address taken, say)."""
    namespace = record.plan.ns(name.removeprefix("sshd-"))
    log = record.plan.directory / "logs" / f"{name}.log"

    def listening() -> bool:
        if not alive(pid):
            others = ssh_listeners(namespace)
            held = f"; port 22 in {namespace} is held by pid {others[0]}" if others else ""
            raise LabError(f"{name} (pid {pid}) exited at start{held}; see {log}")
        return pid in ssh_listeners(namespace)

    wait_until(f"{name} (pid {pid}) listening on port 22", listening, log=log)


def complete_record(directory: Path) -> Record:
    record = Record.load(directory)
    if record is None or not record.data["complete"]:
        raise LabError(f"no complete lab in {directory}; run `lab.py up` first")
    return record


def clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(epoch))


# --- The analysis window: attacks that would add up ------------------------------------------


def running_attack(record: Record) -> dict | None:
    """The recorded attack (background or foreground) while its process runs."""
    entry = record.data["pids"].get("attack")
    if entry and entry_runs(entry):
        return entry
    return None


def may_attack(record: Record) -> None:
    """Refuse an attack that would add up with another one in the lab's analysis window."""
    running = running_attack(record)
    if running:
        raise LabError(
            f"an attack runs already (pid {running['pid']}); it stops by itself, "
            "`lab.py reset` stops it and starts a new analysis window"
        )
    attacks = record.data["window"]["attacks"]
    if not attacks:
        return
    ended = max(attack["started"] + attack["duration"] for attack in attacks)
    free = ended + SESSION_TAIL + ANALYSIS_WINDOW
    if time.time() < free:
        raise LabError(
            f"the traffic of an earlier attack (until {clock(ended)}) is still inside the lab's "
            f"{ANALYSIS_WINDOW // 60}-minute analysis window, where attacks add up: legitimate "
            "senders and near misses would cross the rules. Run `lab.py reset` first (it starts "
            f"a new window), or wait until {clock(free)}"
        )


def note_attack(record: Record, *, duration: float, legit_only: bool, result: Path) -> None:
    window = record.data["window"]
    window["attacks"].append(
        {
            "started": time.time(),
            "duration": duration,
            "legit_only": legit_only,
            "result": str(result),
        }
    )
    record.save()


def attack_command(record: Record, *, duration: float, legit_only: bool) -> tuple[list, Path]:
    """traffic.py's attack, and the file its record (also while it runs) goes to."""
    results = record.plan.directory / "attacks"
    results.mkdir(exist_ok=True)
    result = results / f"{len(record.data['window']['attacks']) + 1}.json"
    command = [
        sys.executable,
        str(HERE / "traffic.py"),
        "attack",
        "--duration",
        str(duration),
        "--result",
        str(result),
        *(["--legit-only"] if legit_only else []),
    ]
    return command, result


def attack_in_background(directory: Path, *, duration: float, legit_only: bool = False) -> str:
    """Start the attack detached, recorded like a daemon; it ends by itself after `duration`."""
    record = complete_record(directory)
    may_attack(record)
    command, result = attack_command(record, duration=duration, legit_only=legit_only)
    pid = start(record, "attack", record.plan.ns("internet"), command)
    note_attack(record, duration=duration, legit_only=legit_only, result=result)
    if duration < MATCH_AFTER:
        timing = f"the floods need about {MATCH_AFTER} s to match their rules, more than this run"
    else:
        timing = (
            f"every flood matches its rule after about 40 s; run the cycle after {MATCH_AFTER} s"
        )
    return f"attack running as pid {pid} for {duration:g} s; its record goes to {result}; {timing}"


def attack_in_foreground(directory: Path, *, duration: float, legit_only: bool = False) -> int:
    """The attack in this terminal, recorded like the background one (refused alike)."""
    record = complete_record(directory)
    may_attack(record)
    command, result = attack_command(record, duration=duration, legit_only=legit_only)
    process = subprocess.Popen(["ip", "netns", "exec", record.plan.ns("internet"), *command])
    record.add("pids", {"pid": process.pid, "program": Path(command[0]).name}, key="attack")
    note_attack(record, duration=duration, legit_only=legit_only, result=result)
    try:
        return process.wait(timeout=duration + 120)
    except subprocess.TimeoutExpired:
        stop_process(process)
        raise LabError(f"the attack did not end within {duration + 120:g} s; stopped it") from None
    except BaseException:
        stop_process(process)
        raise


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_attack(record: Record) -> int | None:
    running = running_attack(record)
    if running is None:
        return None
    stop_pid(running["pid"], running["program"])
    return running["pid"]


def window_attacks(record: Record) -> tuple[list[str], str]:
    """The records of the attacks in this analysis window, and since when, in words."""
    window = record.data["window"]
    since = f"since {window.get('opened_by', 'up')} at {clock(window['start'])}"
    if running_attack(record):
        since += ", an attack still running: the counts move"
    return [attack["result"] for attack in window["attacks"]], since


# --- Back to the start -------------------------------------------------------------------------


def reset(directory: Path, *, keep_window: bool = False) -> str:
    """Back to an empty block list: the IPS as built (its table, no pushed file), no state.

    Unless `keep_window`, also a new analysis window (see the module's docstring): the running
    attack stops and nothing of the traffic before stays where the cycle or the probe reads.
    The lab scenarios share one lab and one attack (`make lab`); each starts from
    `reset --keep-window`, and the controller's fetched logs stay for the next cycle.
    """
    record = complete_record(directory)
    stopped = None if keep_window else stop_attack(record)

    # Declaring the table first makes `delete` succeed even after a push removed it.
    rules = "table inet smtpguard {}\ndelete table inet smtpguard\n" + IPS_NFT
    in_ns(record.plan.ns("ips"), "nft", "-f", "/dev/stdin", input=rules)
    for pushed in (directory / "ips").iterdir():
        if pushed.name != "base.nft":
            pushed.unlink()
    shutil.rmtree(directory / "controller" / "state", ignore_errors=True)
    if keep_window:
        return "block list emptied on the IPS and in the state; the analysis window goes on"

    earlier = new_window(record)
    said = f"attack stopped (pid {stopped}); " if stopped else ""
    return (
        f"{said}block list emptied on the IPS and in the state; a new analysis window from "
        f"{clock(record.data['window']['start'])}: the traffic before it, its logs and the "
        f"controller's copies are in {earlier}"
    )


def new_window(record: Record) -> Path:
    """Move every trace of the traffic so far aside, so that no later analysis counts it."""
    directory = record.plan.directory
    left = wait_for_quiet_gateway(record)
    if left:
        LOG.warning("%d SMTP sessions still open on the gateway; they end in the new window", left)
    gateway_etc = str(directory / "gateway" / "etc")
    # Mail of the earlier traffic still queued (the 421 storm's, retried) would log on.
    in_ns(record.plan.ns("gateway"), "postsuper", "-c", gateway_etc, "-d", "ALL")

    started = time.time()
    earlier = directory / "earlier" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    earlier.mkdir(parents=True)
    for role in ("gateway", "campus"):
        in_ns(record.plan.ns(role), "postfix", "-c", str(directory / role / "etc"), "logrotate")
        (earlier / role).mkdir()
        for rotated in (directory / role / "log").glob("mail.log.*"):
            shutil.move(rotated, earlier / role / rotated.name)
        # A first line (a Postfix one, for format detection): the log the cycle fetches
        # exists again before any traffic.
        in_ns(
            record.plan.ns(role),
            "postlog",
            "-c",
            str(directory / role / "etc"),
            "-t",
            "postfix/lab",
            "-p",
            "info",
            f"a new analysis window starts; the logs before it are in {earlier / role}",
        )
    for name, target in (
        ("controller/logs", "controller-logs"),
        ("check_time", "check_time"),
        ("attacks", "attacks"),
    ):
        if (directory / name).exists():
            shutil.move(directory / name, earlier / target)

    record.data["window"] = {"start": started, "attacks": [], "opened_by": "reset"}
    record.save()
    return earlier


def wait_for_quiet_gateway(record: Record, *, timeout: float = 30.0) -> int:
    """Until the gateway holds no SMTP connection (twice in a row); how many are left after
    `timeout`. A client gone without a word frees its session after smtpd_timeout (20 s)."""
    states = ("established", "close-wait", "syn-recv")
    filters = [word for state in states for word in ("state", state)]

    def open_now() -> int:
        output = in_ns(
            record.plan.ns("gateway"), "ss", "-Htn", *filters, "( sport = :25 )", check=False
        )
        return len(output.splitlines())

    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 2:
        left = open_now()
        if left and time.monotonic() > deadline:
            return left
        quiet = 0 if left else quiet + 1
        time.sleep(0.5)
    return 0


# --- The command line --------------------------------------------------------------------------


def lab_number(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = -1
    if not 0 <= number <= 255:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a whole number from 0 to 255, the third octet of the lab's "
            "addresses (10.231.N.1 ...); each lab running at the same time needs its own"
        )
    return number


def lab_prefix(text: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9]{0,10}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give 1 to 11 lower-case letters and digits, starting with a letter "
            "(the namespaces are <prefix>-internet ..., the link on this host <prefix>-ctl)"
        )
    return text


def attack_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give the attack's length in seconds, a number above 0; the floods need "
            f"about {MATCH_AFTER} s to match their rules"
        )
    if seconds > MAX_ATTACK:
        raise argparse.ArgumentTypeError(
            f"{text!r}: at most {MAX_ATTACK} s; the lab's near misses stay below the rules "
            "only that long"
        )
    return seconds


COMMANDS = {
    "up": "build the lab, print its address plan",
    "down": "stop every daemon by PID, delete the namespaces",
    "status": "what runs, by PID",
    "stop": "stop one recorded daemon by PID",
    "restart": "start a stopped sshd of the lab again",
    "reset": "stop the attack, empty the block list, start a new analysis window",
    "attack": "run the five attack kinds and legitimate mail (bounded)",
    "probe": "per source: does it still get a 220, did its mail reach the campus server",
}


def parser() -> argparse.ArgumentParser:
    """One subcommand a command: each takes its own options only, and refuses the others."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the lab directory")
    sub = {}
    for name, text in COMMANDS.items():
        sub[name] = commands.add_parser(name, parents=[common], help=text, description=text)
        sub[name].set_defaults(command_parser=sub[name])

    add_up_options(sub["up"])
    for name in ("stop", "restart"):
        sub[name].add_argument("name", nargs="?", help="a daemon named in `lab.py status`")
    add_attack_options(sub["attack"])
    sub["probe"].add_argument("--table", action="store_true", help="one line a source")
    sub["probe"].add_argument(
        "--expect-defended",
        action="store_true",
        help="after the cycle, an attacker the cycle should block but still served is wrong "
        "too (a legitimate sender cut off is wrong always); exit 1 on anything wrong",
    )
    sub["reset"].add_argument(
        "--keep-window",
        action="store_true",
        help="only empty the block list; the attack and the analysis window go on",
    )
    return parser


def add_up_options(up: argparse.ArgumentParser) -> None:
    up.add_argument(
        "--prefix",
        type=lab_prefix,
        default=os.environ.get("SMTPGUARD_LAB_PREFIX", "sgl1"),
        help="namespace prefix, unique per lab ($SMTPGUARD_LAB_PREFIX)",
    )
    up.add_argument(
        "--number",
        type=lab_number,
        default=os.environ.get("SMTPGUARD_LAB_NUMBER", "1"),
        help="third octet of the lab's links, 0 to 255, unique per lab ($SMTPGUARD_LAB_NUMBER)",
    )


def add_attack_options(attack: argparse.ArgumentParser) -> None:
    attack.add_argument(
        "--duration",
        type=attack_seconds,
        default=120.0,
        help=f"seconds, above 0 and at most {MAX_ATTACK} "
        f"(the floods match their rules after about {MATCH_AFTER} s)",
    )
    attack.add_argument("--legit-only", action="store_true", help="legitimate mail only")
    attack.add_argument(
        "--background",
        action="store_true",
        help="return at once; `down` stops it by PID if still running",
    )


INTERRUPTED = {
    "up": "interrupted; the half-built lab was removed",
    "down": "interrupted; run `lab.py down` again to remove the rest",
    "attack": "interrupted; the attack's traffic stopped, the lab still runs",
    "reset": "interrupted; run `lab.py reset` again",
}


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parser().parse_known_args(argv)
    if extra:
        # The command's own usage, which lists what it takes: `down --duration 5` is refused.
        args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if os.geteuid() != 0:
        LOG.error("the lab needs root (network namespaces, daemons)")
        return 1
    # SIGTERM unwinds like Ctrl-C: a half-built lab is removed, a foreground attack stopped.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        return run_command(args)
    except UsageError as exc:
        args.command_parser.error(str(exc))  # exits 2
    except LabError as exc:
        LOG.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        LOG.error(
            "%s",
            INTERRUPTED.get(
                args.command,
                "interrupted; `lab.py status` shows what runs, `lab.py down` removes it",
            ),
        )
        return 130


def run_command(args: argparse.Namespace) -> int:
    if args.command == "up":
        record, running = up(Plan(args.prefix, args.number, args.dir))
        facts = {**record.data["facts"], "build_seconds": record.data["build_seconds"]}
        say(json.dumps({**facts, "already_running": running}, indent=2))
    elif args.command == "down":
        say("lab removed" if down(args.dir) else f"no lab recorded in {args.dir}")
    elif args.command == "status":
        say(json.dumps(status(args.dir), indent=2))
    elif args.command == "stop":
        say(str(stop_daemon(args.dir, args.name)))
    elif args.command == "restart":
        say(str(restart_daemon(args.dir, args.name)))
    elif args.command == "reset":
        say(reset(args.dir, keep_window=args.keep_window))
    elif args.command == "attack" and args.background:
        say(attack_in_background(args.dir, duration=args.duration, legit_only=args.legit_only))
    elif args.command == "attack":
        return attack_in_foreground(args.dir, duration=args.duration, legit_only=args.legit_only)
    else:
        return probe(args.dir, table=args.table, expect_defended=args.expect_defended)
    return 0


def say(text: str) -> None:
    """The command's answer on stdout; a reader that stopped early (`status | head`) is fine."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python flushes stdout again on exit: /dev/null takes what is left, without an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def probe(directory: Path, *, table: bool, expect_defended: bool) -> int:
    """traffic.py's probe in the internet namespace; 1 when a source is not as it should be."""
    record = complete_record(directory)
    attacks, since = window_attacks(record)
    command = [
        sys.executable,
        str(HERE / "traffic.py"),
        "probe",
        "--campus-log",
        record.data["facts"]["campus_log"],
        "--since",
        since,
        *(f"--attack-record={path}" for path in attacks),
        *(["--table"] if table else []),
        *(["--expect-defended"] if expect_defended else []),
    ]
    # Its answer passes through here: a reader that stops early (`probe --table | head`) is
    # no error.
    done = subprocess.run(
        ["ip", "netns", "exec", record.plan.ns("internet"), *command],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
        timeout=120,
    )
    if done.stdout:
        say(done.stdout.removesuffix("\n"))
    return done.returncode


def interrupted(signum: int, frame: object) -> None:
    """The first Ctrl-C or SIGTERM unwinds; later ones must not cut the tear-down short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
