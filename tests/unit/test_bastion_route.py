"""The route to a device from its ssh_config entry: a ProxyJump hop's user and port are kept."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("paramiko")

from ansible_collections.campusnet.smtpguard.plugins.module_utils._bastion import (  # noqa: E402
    resolve,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._devices import (  # noqa: E402
    DeviceError,
)

DEVICE = "border1.mgmt.campus.example"


def route_tail(tmp_path: Path, jump: str) -> tuple[str, ...]:
    """What follows `-o ConnectTimeout=7` in the hop's command."""
    config = tmp_path / "ssh_config"
    config.write_text(f"Host {DEVICE}\n  HostName 10.0.0.5\n  ProxyJump {jump}\n")

    route = resolve(DEVICE, port=22, ssh_config_file=str(config), timeout=7)

    assert route.command[:7] == (
        "ssh", "-F", str(config), "-o", "BatchMode=yes", "-o", "ConnectTimeout=7"
    )  # fmt: skip
    assert (route.hostname, route.port) == ("10.0.0.5", 22)
    return route.command[7:]


W = ("-W", "10.0.0.5:22")


@pytest.mark.parametrize(
    ("jump", "tail"),
    [
        ("bastion", (*W, "bastion")),
        ("admin@bastion", (*W, "admin@bastion")),
        ("admin@bastion.example:2222", (*W, "-p", "2222", "admin@bastion.example")),
        ("bastion.example:2222", (*W, "-p", "2222", "bastion.example")),
        ("ssh://admin@bastion.example:2222", (*W, "-p", "2222", "admin@bastion.example")),
        ("ssh://bastion.example", (*W, "bastion.example")),
        ("admin@[2001:db8::9]:2222", (*W, "-p", "2222", "admin@2001:db8::9")),
        ("[2001:db8::9]", (*W, "2001:db8::9")),
        ("2001:db8::9", (*W, "2001:db8::9")),
        ("jump1:2201,admin@jump2:2202", ("-J", "jump1:2201", *W, "-p", "2202", "admin@jump2")),
    ],
)
def test_the_last_hop_keeps_its_user_and_port(
    tmp_path: Path, jump: str, tail: tuple[str, ...]
) -> None:
    assert route_tail(tmp_path, jump) == tail


@pytest.mark.parametrize(
    "jump", ["bastion:0", "bastion:65536", "bastion:ssh", "@bastion", "[2001:db8::9", "[::1]x"]
)
def test_a_hop_that_is_no_user_host_and_port_is_refused_naming_it(
    tmp_path: Path, jump: str
) -> None:
    with pytest.raises(DeviceError, match=r"ProxyJump hop .* is not \[user@\]host\[:port\]"):
        route_tail(tmp_path, jump)
