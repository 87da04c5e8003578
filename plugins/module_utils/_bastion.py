"""The way from the controller to a CLI device: its ssh_config entry and the bastion hops.

netmiko can read `ssh_config_file` by itself, but it turns a `ProxyJump` into `ssh -W` for one
hop only and, when the bastion refuses or is down, waits out the banner timeout and reports
"Error reading SSH protocol banner", naming neither the bastion nor what ssh said. So the push
resolves the device's entry here and hands netmiko a ready socket instead:

    ProxyCommand <cmd>   that command (paramiko's SSHConfig has expanded its %h and %p)
    ProxyJump a[,b...]   ssh -F <config> -o BatchMode=yes [-J a,...] -W <hostname>:<port> <last>
    neither              none: netmiko opens a TCP connection to HostName and Port itself

A hop runs OpenSSH's own client with the same `-F`, so the bastion's user, key, known hosts
and options come from the file operators already use for Ansible (`ansible_ssh_common_args`).
Its stderr is kept: when it exits, the login fails at once with ssh's own words.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from select import select
from typing import Any

import paramiko
from paramiko.ssh_exception import ProxyCommandFailure

from ansible_collections.campusnet.smtpguard.plugins.module_utils._devices import DeviceError


@dataclass(frozen=True)
class Route:
    """Where a device is and what stands between the controller and it."""

    host: str
    hostname: str
    port: int
    command: tuple[str, ...] = ()
    via: str = ""

    def open(self) -> Hop | None:
        """Start the hop (None for a direct connection); the caller closes it."""
        return Hop(self.command, via=self.via) if self.command else None


def resolve(host: str, *, port: int, ssh_config_file: str | None, timeout: int = 30) -> Route:
    """The route to `host` as `ssh_config_file` describes it (a direct one without a file).

    As with netmiko, an explicit `port` other than 22 wins over the file's `Port`.
    """
    if not ssh_config_file:
        return Route(host=host, hostname=host, port=port)
    path = os.path.abspath(os.path.expanduser(ssh_config_file))
    try:
        entry = paramiko.SSHConfig.from_path(path).lookup(host)
    except OSError as exc:
        raise DeviceError(f"cannot read ssh_config_file {path}: {exc.strerror}") from None
    except Exception as exc:  # paramiko's parse errors have no common base class
        raise DeviceError(f"ssh_config_file {path} cannot be parsed: {exc}") from None

    hostname = str(entry.get("hostname", host))
    if port == 22 and entry.get("port"):
        port = int(entry["port"])

    proxy_command = entry.get("proxycommand", "")
    if proxy_command and proxy_command.lower() != "none":
        return Route(host, hostname, port, tuple(shlex.split(proxy_command)), "ProxyCommand")

    jump = str(entry.get("proxyjump", ""))
    if not jump or jump.lower() == "none":
        return Route(host=host, hostname=hostname, port=port)
    hops = [hop.strip() for hop in jump.split(",") if hop.strip()]
    command = ["ssh", "-F", path, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={timeout}"]
    if len(hops) > 1:
        command += ["-J", ",".join(hops[:-1])]  # OpenSSH reads user@host:port here itself
    command += ["-W", f"{_bracketed(hostname)}:{port}", *_destination(hops[-1])]
    return Route(host, hostname, port, tuple(command), f"ProxyJump {','.join(hops)}")


def _bracketed(hostname: str) -> str:
    return f"[{hostname}]" if ":" in hostname else hostname


def _destination(hop: str) -> list[str]:
    """The last hop as ssh's destination arguments.

    A ProxyJump hop is `[user@]host[:port]` or `ssh://[user@]host[:port]` (an IPv6 host in
    brackets when a port follows), but ssh's destination argument takes a port only in the
    URI form, so the port goes to `-p` and the rest stays `[user@]host`.
    """
    text = hop[len("ssh://") :] if hop.lower().startswith("ssh://") else hop
    user, at, address = text.rpartition("@")
    port = ""
    if address.startswith("["):
        inside, bracket, rest = address[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise DeviceError(f"ProxyJump hop {hop!r} is not [user@]host[:port]")
        address, port = inside, rest[1:]
    elif address.count(":") == 1:
        address, port = address.split(":")
    if not address or (at and not user) or (port and not _is_port(port)):
        raise DeviceError(
            f"ProxyJump hop {hop!r} is not [user@]host[:port] with a port from 1 to 65535"
        )
    target = f"{user}@{address}" if at else address
    return ["-p", str(int(port)), target] if port else [target]


def _is_port(text: str) -> bool:
    return text.isdigit() and 0 < int(text) < 65536


class Hop(paramiko.ProxyCommand):
    """The proxy process as paramiko's socket: stderr kept, the end noticed, stopped by PID."""

    def __init__(self, command: tuple[str, ...], *, via: str) -> None:
        self.cmd = list(command)
        self.via = via
        self.timeout: float | None = None
        self._errors = tempfile.TemporaryFile()
        self._stopped = False
        self._said: str | None = None
        try:
            self.process = subprocess.Popen(
                self.cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._errors,
                bufsize=0,
                start_new_session=True,
            )
        except OSError as exc:
            self._errors.close()
            raise DeviceError(f"cannot start {self.cmd[0]} for the {via}: {exc.strerror}") from None

    def recv(self, size: int) -> bytes:
        """Up to `size` bytes; raises once the hop has ended, instead of waiting for a banner."""
        assert self.process.stdout is not None
        try:
            ready, _, _ = select([self.process.stdout], [], [], self.timeout)
            data = os.read(self.process.stdout.fileno(), size) if ready else None
        except (OSError, ValueError):
            if self._stopped:  # closed under the transport's reader: the session is over
                raise EOFError() from None
            raise
        if data is None:
            raise TimeoutError()
        if not data and self._stopped:
            raise EOFError()
        if not data:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            raise ProxyCommandFailure(shlex.join(self.cmd), self.said() or "the hop ended")
        return data

    def said(self) -> str:
        """The last words the hop wrote to stderr once it has ended (empty while it runs)."""
        if self._said is None and self.process.poll() is not None:
            self._errors.seek(0)
            lines = self._errors.read().decode("utf-8", "replace").splitlines()
            self._said = " ".join(line.strip() for line in lines[-2:] if line.strip())[-300:]
        return self._said or ""

    def close(self) -> None:
        """Stop the hop and what it started (a `-J` hop runs a second ssh) by the process group
        it leads, reap it, and wait until the group is gone; what it said stays readable."""
        if self._stopped:
            return
        self._stopped = True
        group = self.process.pid  # start_new_session: the hop leads its own process group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            self.process.wait()
        _wait_group_gone(group)
        self.said()
        for stream in (self.process.stdin, self.process.stdout, self._errors):
            if stream is not None:
                stream.close()

    @property
    def closed(self) -> bool:
        return self._stopped

    def settimeout(self, timeout: Any) -> None:
        self.timeout = timeout


def _wait_group_gone(group: int, *, limit: float = 5.0) -> None:
    """Until no live process of `group` is left (a grandchild exits after its parent), then
    SIGKILL what remains. An exited grandchild waits for PID 1 to reap it; that is not ours."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not _group_alive(group):
            return
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


def _group_alive(group: int) -> bool:
    """Whether a process of `group` still runs (zombies do not count); Linux's /proc, else
    any member at all."""
    try:
        names = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for name in names:
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(group) and fields[0] != "Z":
            return True
    return False


def login_failure(route: Route, hop: Hop | None, cause: str) -> str:
    """One message for a login that failed: the bastion's own words when the hop ended."""
    where = f"{route.host}:{route.port}"
    if route.hostname != route.host:
        where = f"{route.host} ({route.hostname}:{route.port})"
    if hop is not None:
        said = hop.said()
        if said:
            return (
                f"cannot reach {where} through the {hop.via}: {said}; check the bastion's "
                "entry in ssh_config_file (HostName, User, IdentityFile, UserKnownHostsFile) "
                "and that it is up and allows TCP forwarding"
            )
        return (
            f"cannot log in to {where} through the {hop.via} ({cause}); the bastion let the "
            "connection through, so check the device's address, port and credentials"
        )
    return (
        f"cannot log in to {where} ({cause}); check the address, the credentials and, through "
        "a bastion, ssh_config_file"
    )
