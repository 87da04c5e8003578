"""A check run on Cisco IOS and ASA reads the device with show commands only: it never enters
configuration mode, not even for netmiko's own login settings (the ASA's `terminal width` is a
configuration-mode command)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("netmiko")
pytest.importorskip("fakenos")

from ansible_collections.campusnet.smtpguard.plugins.modules.device_blocklist import (  # noqa: E402
    run,
)
from support.fakedevices import FakeDevice  # noqa: E402
from support.templates import render  # noqa: E402

HELD = ["192.0.2.7", "198.51.100.0/24"]
WANTED = ["192.0.2.7", "203.0.113.9", "2001:db8::25"]
PRELOAD = {
    "ios": ["object-group network SMTPGUARD", "host 192.0.2.7", "198.51.100.0 255.255.255.0"],
    "asa": [
        "object-group network SMTPGUARD",
        "network-object host 192.0.2.7",
        "network-object 198.51.100.0 255.255.255.0",
    ],
}
# What a login and a read may send: netmiko's exec-mode settings and show commands.
READ_ONLY = {"", "login", "show curpriv", "terminal pager 0", "terminal length 0", "exit"}


def params(device: FakeDevice, entries: list[str]) -> dict[str, Any]:
    return {
        **device.params,
        "platform": device.platform,
        "config": render(f"{device.platform}.j2", entries),
        "secret": None,
        "key_file": None,
        "passphrase": None,
        "ssh_config_file": None,
        "host_key_checking": False,
        "known_hosts": None,
        "timeout": 30,
        "read_timeout": 60,
        "chunk_size": None,
        "confirm_minutes": 5,
        "session_log": None,
    }


@pytest.mark.parametrize("platform", ["ios", "asa"])
def test_check_mode_never_enters_configuration_mode(platform: str) -> None:
    with FakeDevice(platform) as device:
        device.preload(PRELOAD[platform])
        device.log.clear()
        sessions = device.config_sessions

        checked = run(params(device, WANTED), check=True)

        assert checked["changed"] is True
        assert checked["added"] == ["203.0.113.9", "2001:db8::25"]
        assert checked["removed"] == ["198.51.100.0/24"]
        assert device.config_sessions == sessions
        sent = [line for line in device.log if line not in READ_ONLY]
        assert sent and all(line.startswith(("show ", "terminal width")) for line in sent), sent
        assert "configure terminal" not in device.log
        if platform == "asa":
            assert "terminal width 511" not in device.log


def test_an_asa_push_after_a_check_still_takes_the_list() -> None:
    """The check run's login differs from the push's; both must read the device right."""
    with FakeDevice("asa") as device:
        device.preload(PRELOAD["asa"])

        run(params(device, WANTED), check=True)
        pushed = run(params(device, WANTED), check=False)
        again = run(params(device, WANTED), check=True)

        assert pushed["changed"] and again["changed"] is False
        assert sorted(device.members("SMTPGUARD")) == [
            "network-object host 192.0.2.7",
            "network-object host 2001:db8::25",
            "network-object host 203.0.113.9",
        ]
