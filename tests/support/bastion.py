"""A real OpenSSH server on 127.0.0.1 playing the bastion, for tests of the push through it.

It runs as whoever runs the tests, with its own host key, its own authorized_keys and its own
configuration in a temporary directory, on a free high port; only TCP forwarding is allowed
(what `ProxyJump` and `ssh -W` use). `Bastion` is a context manager: it starts sshd, waits
until it accepts connections and stops it again by its PID. `ssh_config()` writes a client
configuration with the bastion's key, user and known host, ready for a `ProxyJump` to it.

As root, sshd needs its privilege separation directory (`/run/sshd` on Debian); started as
another user it needs none and can only log that same user in.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")


def missing() -> str | None:
    """Why a bastion cannot be started here, or None."""
    for tool in (SSHD, "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian package openssh-server / openssh-client)"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "smtpguard-test", "-f", str(path)],
        check=True,
    )
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class Bastion:
    """sshd on 127.0.0.1:`port`, logging at DEBUG1 into `log_file` (forwarded targets too)."""

    directory: Path
    port: int = 0
    user: str = field(default_factory=getpass.getuser)
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_key(self) -> Path:
        return self.directory / "client_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def log_file(self) -> Path:
        return self.directory / "sshd.log"

    def __enter__(self) -> Bastion:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        host_public = keygen(self.directory / "host_ed25519")
        client_public = keygen(self.client_key)
        (self.directory / "authorized_keys").write_text(client_public + "\n")
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_public}\n")
        config = self.directory / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1:{self.port}\n"
            f"HostKey {self.directory / 'host_ed25519'}\n"
            f"AuthorizedKeysFile {self.directory / 'authorized_keys'}\n"
            f"PidFile none\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\n"
            "AllowTcpForwarding yes\n"
            "X11Forwarding no\n"
            "PermitTTY no\n"
            "LogLevel DEBUG1\n"
        )
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        subprocess.run([SSHD, "-t", "-f", str(config)], check=True)
        self.process = subprocess.Popen(
            [SSHD, "-D", "-f", str(config), "-E", str(self.log_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_listening()

    def _wait_listening(self, limit: float = 10.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log_file.read_text()[-2000:]}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError(f"sshd did not listen on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def ssh_config(self, path: Path, *, alias: str = "bastion", extra: str = "") -> Path:
        """A client configuration: `alias` is this bastion; `extra` adds device entries."""
        path.write_text(
            f"Host {alias}\n"
            "  HostName 127.0.0.1\n"
            f"  Port {self.port}\n"
            f"  User {self.user}\n"
            f"  IdentityFile {self.client_key}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n"
            f"{extra}"
        )
        return path

    def forwarded_to(self, port: int) -> int:
        """How many forwardings to 127.0.0.1:`port` the bastion logged."""
        text = self.log_file.read_text() if self.log_file.exists() else ""
        return text.count(f"target 127.0.0.1 port {port}")
