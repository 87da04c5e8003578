"""Stateful fake IOS, ASA and Junos devices on loopback ports, served by fakenos.

fakenos's stock shell replays canned output and has no configuration mode; the shells here
replace its CMDShell (per FakeNOS instance) and keep a running configuration in a
`FakeDevice` that outlives every SSH session, so a push, a check run and a rollback see the
same device. Malformed commands get the platform's own error text:

    IOS    % Invalid input detected at '^' marker.
    ASA    ERROR: % Invalid input detected at '^' marker.
    Junos  syntax error. / unknown command. / error: configuration check-out failed

A test makes a device refuse an address (`refuse`, the platform's error at once for IOS and
ASA, at `commit check` for Junos) or accept it without storing it (`forget`, a read-back
that differs). `log` records every line the device received.

Use `FakeDevice(...)` as a context manager; it stops the fakenos server it started.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import fakenos.plugins.servers.ssh_server_paramiko as fakenos_ssh
import paramiko
from fakenos import FakeNOS
from fakenos.plugins.shell.cmd_shell import CMDShell

USERNAME = "netops"
PASSWORD = "fake-Secret-4711"
FAKENOS_PLATFORM = {"ios": "cisco_ios", "asa": "cisco_asa", "junos": "juniper_junos"}
NAME = r"[A-Za-z][A-Za-z0-9_.-]{0,63}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_listening(port: int, *, limit: float = 5.0) -> None:
    """fakenos calls listen() in its own thread after start() returns; wait until it did."""
    wanted = f":{port:04X}"
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with open("/proc/net/tcp", encoding="ascii") as table:
            rows = [line.split() for line in table]
            if any(row[1].endswith(wanted) and row[3] == "0A" for row in rows[1:]):
                return
        time.sleep(0.01)
    raise RuntimeError(f"the fake device on port {port} did not start listening")


class Rejected(Exception):
    """A command the fake platform refuses; the message is the device's text."""


@dataclass
class FakeDevice:
    """One device's configuration, shared by all its sessions."""

    platform: str
    hostname: str = "edge1"
    port: int = 0
    refuse: set[str] = field(default_factory=set)
    forget: set[str] = field(default_factory=set)
    log: list[str] = field(default_factory=list)
    # IOS / ASA: group header -> {network: member text as the device prints it}
    groups: dict[str, dict[Any, str]] = field(default_factory=dict)
    # Junos: committed set lines, and every earlier commit (newest last)
    committed: list[str] = field(default_factory=list)
    history: list[list[str]] = field(default_factory=list)
    config_sessions: int = 0
    commits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._net: FakeNOS | None = None

    # Lifecycle

    def __enter__(self) -> FakeDevice:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.port = self.port or free_port()
        inventory = {
            "hosts": {
                self.hostname: {
                    "username": USERNAME,
                    "password": PASSWORD,
                    "port": self.port,
                    "platform": FAKENOS_PLATFORM[self.platform],
                }
            }
        }
        net = FakeNOS(inventory=inventory)
        net.shell_plugins["CMDShell"] = _shell_class(self)
        net.start()
        self._net = net
        _wait_listening(self.port)

    def stop(self) -> None:
        if self._net is not None:
            self._net.stop()
            self._net = None

    @property
    def params(self) -> dict[str, Any]:
        """Connection parameters for device_blocklist / netmiko."""
        return {"host": "127.0.0.1", "port": self.port, "username": USERNAME, "password": PASSWORD}

    # What tests look at

    def members(self, group: str) -> list[str]:
        """IOS/ASA: the member texts of one group; Junos: the prefixes of one prefix list."""
        with self.lock:
            if self.platform == "junos":
                head = f"set policy-options prefix-list {group} "
                return [line[len(head) :] for line in self.committed if line.startswith(head)]
            kinds = ("network", "v6-network")
            found = [self.groups.get(f"object-group {kind} {group}", {}) for kind in kinds]
            return [text for members in found for text in members.values()]

    def preload(self, lines: list[str]) -> None:
        """Configure lines as an operator would have, outside any test session."""
        session = _session_for(self)
        for line in ["configure terminal" if self.platform != "junos" else "configure", *lines]:
            session.handle(line)
        if self.platform == "junos":
            session.handle("commit")
        session.handle("end" if self.platform != "junos" else "exit configuration-mode")


# fakenos's tap from the SSH channel to the shell sleeps 10 ms after every byte, which makes a
# chunk of a few hundred commands take minutes. This one does the same without the sleep: it
# still waits for the shell's reply after each line, which is what keeps the two in step.


def _channel_to_shell_tap(channel_stdio: Any, shell_stdin: Any, replied: Any, run_srv: Any) -> None:
    buffer = bytearray()
    while run_srv.is_set():
        byte = channel_stdio.read(1)
        if not byte:
            break
        replied.wait(10)
        if not channel_stdio.channel.active:
            break
        try:
            if byte in (b"\r", b"\n"):
                channel_stdio.write(b"\r\n")
                shell_stdin.write(bytes(buffer + byte).decode("utf-8"))
                buffer.clear()
                replied.clear()
            else:
                channel_stdio.write(byte)
                if byte != b"\x00":
                    buffer += byte
        except (OSError, EOFError):
            break


class _ServerTransport(paramiko.Transport):
    """fakenos waits in accept() without a timeout; after a failed login that wait never ends
    and its non-daemon thread keeps the test process from exiting. This accept gives up once
    the transport is closed (FakeNOS.stop closes every transport it knows)."""

    def accept(self, timeout: float | None = None) -> paramiko.Channel | None:
        deadline = time.monotonic() + (timeout or 120.0)
        while self.active and time.monotonic() < deadline:
            channel = super().accept(0.2)
            if channel is not None:
                return channel
        return None


class _ParamikoForFakenos:
    """paramiko as fakenos's SSH server sees it, with the accept above."""

    Transport = _ServerTransport

    def __getattr__(self, name: str) -> Any:
        return getattr(paramiko, name)


fakenos_ssh.channel_to_shell_tap = _channel_to_shell_tap
fakenos_ssh.paramiko = _ParamikoForFakenos()  # type: ignore[assignment]


# Platform grammars


def _v4(text: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise Rejected("invalid") from None


def _host(text: str) -> Any:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise Rejected("invalid") from None


def _masked(address: str, mask: str) -> ipaddress.IPv4Network:
    _v4(address)
    _v4(mask)
    try:
        return ipaddress.IPv4Network(f"{address}/{mask}", strict=False)
    except ValueError:
        raise Rejected("invalid") from None


def _v6net(text: str) -> ipaddress.IPv6Network:
    try:
        return ipaddress.IPv6Network(text, strict=False)
    except ValueError:
        raise Rejected("invalid") from None


def _printed(network: Any, *, host: str, masked: str) -> str:
    """How IOS and ASA print a member: `host A`, `A M` or `A/len`."""
    if network.prefixlen == network.max_prefixlen:
        return f"{host}host {network.network_address}"
    if network.version == 4:
        return f"{masked}{network.network_address} {network.netmask}"
    return f"{masked}{network}"


class Session:
    """One SSH session: its mode and (Junos) candidate configuration."""

    def __init__(self, device: FakeDevice) -> None:
        self.device = device
        self.mode = "exec"
        self.group: str | None = None
        self.candidate: list[str] = []
        self.stop = False

    @property
    def prompt(self) -> str:
        name = self.device.hostname
        if self.device.platform == "junos":
            return (
                f"{USERNAME}@{name}> "
                if self.mode == "exec"
                else f"\r\n[edit]\r\n{USERNAME}@{name}# "
            )
        if self.mode == "exec":
            return f"{name}#"
        if self.mode == "config":
            return f"{name}(config)#"
        return (
            f"{name}(config-network-group)#"
            if self.device.platform == "ios"
            else (f"{name}(config-network-object-group)#")
        )

    def handle(self, line: str) -> str:
        command = line.strip()
        self.device.log.append(command)
        if not command:
            return ""
        try:
            with self.device.lock:
                return HANDLERS[self.device.platform](self, command)
        except JunosCommitError as exc:
            return str(exc)
        except Rejected as exc:
            return self.error(command, str(exc))

    def error(self, command: str, detail: str) -> str:
        caret = " " * (len(self.prompt.splitlines()[-1]) if self.prompt else 0) + "^"
        platform = self.device.platform
        if platform == "ios":
            return f"{caret}\n% Invalid input detected at '^' marker.\n"
        if platform == "asa":
            return f"{caret}\nERROR: % Invalid input detected at '^' marker.\n"
        if detail == "unknown":
            return f"{caret}\nunknown command.\n"
        return f"{caret}\nsyntax error.\n"


def _cisco(session: Session, command: str) -> str:
    device = session.device
    words = command.split()
    if session.mode == "exec":
        if command in ("terminal length 0", "terminal width 511", "terminal pager 0"):
            return ""
        if command == "show curpriv" and device.platform == "asa":
            return "Username : netops\nCurrent privilege level : 15\nCurrent Mode/s : P_PRIV\n"
        if command in (
            "show running-config | section object-group",
            "show running-config object-group",
            "show running-config",
        ):
            return _cisco_running(device)
        if command in ("configure terminal", "conf t"):
            session.mode = "config"
            device.config_sessions += 1
            return "Enter configuration commands, one per line.  End with CNTL/Z.\n"
        if command == "exit":
            session.stop = True
            return ""
        raise Rejected("invalid")

    if command == "end":
        session.mode, session.group = "exec", None
        return ""
    if command == "exit":
        session.mode, session.group = ("config", None) if session.group else ("exec", None)
        return ""
    if command == "terminal width 511" and device.platform == "asa":
        return ""

    group_kinds = ("network", "v6-network") if device.platform == "ios" else ("network",)
    if len(words) == 3 and words[0] == "object-group" and words[1] in group_kinds:
        if not re.fullmatch(NAME, words[2]):
            raise Rejected("invalid")
        session.group = command
        session.mode = "group"
        device.groups.setdefault(command, {})
        return ""
    if len(words) == 4 and words[:2] == ["no", "object-group"] and words[2] in group_kinds:
        device.groups.pop(" ".join(words[1:]), None)
        return ""

    if session.mode == "group" and session.group:
        return _cisco_member(session, words)
    raise Rejected("invalid")


def _cisco_member(session: Session, words: list[str]) -> str:
    device = session.device
    remove = words[:1] == ["no"]
    words = words[1:] if remove else words
    assert session.group is not None
    v6 = "v6-network" in session.group

    if device.platform == "asa":
        if words[:1] != ["network-object"]:
            raise Rejected("invalid")
        words = words[1:]
    if len(words) == 2 and words[0] == "host":
        network = _host(words[1])
        if device.platform == "ios" and (network.version == 6) != v6:
            raise Rejected("invalid")
    elif len(words) == 2 and not v6 and "." in words[0]:
        network = _masked(words[0], words[1])
    elif len(words) == 1 and "/" in words[0] and (v6 or device.platform == "asa"):
        network = _v6net(words[0])
    else:
        raise Rejected("invalid")

    members = device.groups[session.group]
    address = (
        str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)
    )
    if remove:
        members.pop(network, None)
        return ""
    if address in device.refuse:
        raise Rejected("refused")
    if address not in device.forget:
        prefix = "network-object " if device.platform == "asa" else ""
        members[network] = _printed(network, host=prefix, masked=prefix)
    return ""


def _cisco_running(device: FakeDevice) -> str:
    lines = []
    for header, members in device.groups.items():
        lines.append(header)
        lines.extend(f" {text}" for text in members.values())
    return "".join(f"{line}\n" for line in lines)


_JUNOS_LIST = re.compile(rf"^policy-options prefix-list ({NAME})(?: (\S+))?$")


def _junos(session: Session, command: str) -> str:
    device = session.device
    if session.mode == "exec":
        replies = {
            "set cli screen-width 511": "Screen width set to 511\n",
            "set cli complete-on-space off": "Disabling complete-on-space\n",
            "set cli screen-length 0": "Screen length set to 0\n",
        }
        if command in replies:
            return replies[command]
        if command == "show configuration policy-options | display set":
            return "".join(f"{line}\n" for line in device.committed)
        if command in ("configure", "configure private", "configure exclusive"):
            session.mode = "config"
            session.candidate = list(device.committed)
            device.config_sessions += 1
            return "Entering configuration mode\n"
        if command == "exit":
            session.stop = True
            return ""
        raise Rejected("unknown")

    if command in ("exit configuration-mode", "exit", "quit"):
        session.mode, session.candidate = "exec", []
        return "Exiting configuration mode\n"
    if command.startswith(("set ", "delete ")):
        return _junos_edit(session, command)
    if command == "commit check":
        _junos_check(session)
        return "configuration check succeeds\n"
    match = re.fullmatch(r"commit(?: confirmed (\d+))?", command)
    if match:
        _junos_check(session)
        device.history.append(list(device.committed))
        device.committed = _junos_sorted(session.candidate)
        session.candidate = list(device.committed)
        device.commits += 1
        if match[1]:
            return (
                f"commit confirmed will be automatically rolled back in {match[1]} minutes "
                f"unless confirmed\ncommit complete\n"
            )
        return "commit complete\n"
    match = re.fullmatch(r"rollback (\d+)", command)
    if match:
        number = int(match[1])
        if number == 0:
            session.candidate = list(device.committed)
        elif number <= len(device.history):
            session.candidate = list(device.history[-number])
        else:
            raise Rejected("syntax")
        return "load complete\n"
    raise Rejected("unknown")


def _junos_edit(session: Session, command: str) -> str:
    verb, _, rest = command.partition(" ")
    match = _JUNOS_LIST.fullmatch(rest)
    if match is None:
        raise Rejected("syntax")
    name, prefix = match[1], match[2]
    if prefix is not None:
        try:
            network = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            raise Rejected("syntax") from None
        if "/" not in prefix:
            raise Rejected("syntax")
        line = f"set policy-options prefix-list {name} {network}"
    else:
        line = f"set policy-options prefix-list {name}"

    if verb == "set":
        if prefix is not None and _bare(network) in session.device.forget:
            return ""
        if line not in session.candidate:
            session.candidate.append(line)
        return ""
    if prefix is None:
        head = f"set policy-options prefix-list {name}"
        session.candidate = [
            kept for kept in session.candidate if kept != head and not kept.startswith(head + " ")
        ]
        return ""
    if line not in session.candidate:
        return "warning: statement not found\n"
    session.candidate.remove(line)
    return ""


def _bare(network: Any) -> str:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _junos_check(session: Session) -> None:
    for line in session.candidate:
        words = line.split()
        if len(words) == 5:
            prefix = ipaddress.ip_network(words[4])
            if _bare(prefix) in session.device.refuse:
                raise JunosCommitError(words[3], words[4])


class JunosCommitError(Rejected):
    def __init__(self, name: str, prefix: str) -> None:
        super().__init__(
            f"[edit policy-options prefix-list {name}]\n  '{prefix}'\n"
            f"    Prefix refused by the device's policy\n"
            f"error: configuration check-out failed\n"
        )


def _junos_sorted(lines: list[str]) -> list[str]:
    def key(line: str) -> tuple[Any, ...]:
        words = line.split()
        if len(words) < 5:
            return (words[3], 0, 0, 0)
        network = ipaddress.ip_network(words[4])
        return (words[3], network.version, int(network.network_address), network.prefixlen)

    unique = list(dict.fromkeys(lines))
    named = {line.split()[3] for line in unique if len(line.split()) == 5}
    # Junos shows an empty prefix list only while it has no member.
    shown = [line for line in unique if len(line.split()) == 5 or line.split()[3] not in named]
    return sorted(shown, key=key)


HANDLERS = {"ios": _cisco, "asa": _cisco, "junos": _junos}


def _session_for(device: FakeDevice) -> Session:
    return Session(device)


def _shell_class(device: FakeDevice) -> type[CMDShell]:
    """A CMDShell replacement bound to one device."""

    class StatefulShell(CMDShell):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.session = Session(device)

        def start(self) -> None:
            newline = self.newline
            self.stdout.write(self.session.prompt.replace("\r\n", "\n").replace("\n", newline))
            while True:
                line = self.stdin.readline()
                if line is None or not self.is_running.is_set():
                    break
                output = self.session.handle(line.rstrip("\r\n"))
                if self.session.stop:
                    break
                text = output + self.session.prompt.replace("\r\n", "\n")
                self.stdout.write(text.replace("\n", newline))

    return StatefulShell


@contextmanager
def fake_device(platform: str, **kwargs: Any) -> Iterator[FakeDevice]:
    """A started FakeDevice that is stopped again whatever happens."""
    device = FakeDevice(platform, **kwargs)
    device.start()
    try:
        yield device
    finally:
        device.stop()
