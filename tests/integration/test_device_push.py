"""device_blocklist against stateful fake IOS, ASA and Junos devices on loopback (fakenos):
check mode, push, a rejected line and a read-back that differs followed by the restore,
rollback to an earlier list, and a masked session log."""

from __future__ import annotations

import copy
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("netmiko")
pytest.importorskip("fakenos")

from ansible_collections.campusnet.smtpguard.plugins.module_utils._devices import (  # noqa: E402
    DeviceError,
)
from ansible_collections.campusnet.smtpguard.plugins.modules.device_blocklist import (  # noqa: E402
    run,
)
from support.fakedevices import PASSWORD, FakeDevice  # noqa: E402
from support.templates import render  # noqa: E402

PLATFORMS = ["ios", "asa", "junos"]
BEFORE = ["192.0.2.7", "198.51.100.0/24", "2001:db8::25"]
AFTER = ["192.0.2.7", "203.0.113.9", "2001:db8::25", "2001:db8:1::/48"]

# How each fake prints the members of BEFORE, in the order it was configured.
HELD_BEFORE = {
    "ios": ["host 192.0.2.7", "198.51.100.0 255.255.255.0", "host 2001:db8::25"],
    "asa": [
        "network-object host 192.0.2.7",
        "network-object 198.51.100.0 255.255.255.0",
        "network-object host 2001:db8::25",
    ],
    "junos": ["192.0.2.7/32", "198.51.100.0/24", "2001:db8::25/128"],
}
HELD_AFTER = {
    "ios": ["host 192.0.2.7", "host 203.0.113.9", "host 2001:db8::25", "2001:db8:1::/48"],
    "asa": [
        "network-object host 192.0.2.7",
        "network-object host 2001:db8::25",
        "network-object host 203.0.113.9",
        "network-object 2001:db8:1::/48",
    ],
    "junos": ["192.0.2.7/32", "203.0.113.9/32", "2001:db8::25/128", "2001:db8:1::/48"],
}


@pytest.fixture(params=PLATFORMS)
def device(request: pytest.FixtureRequest) -> Iterator[FakeDevice]:
    with FakeDevice(request.param) as fake:
        yield fake


def params(device: FakeDevice, entries: list[str], **overrides: Any) -> dict[str, Any]:
    values = {
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
    values.update(overrides)
    return values


def held(device: FakeDevice) -> list[str]:
    return device.members("SMTPGUARD") + (
        device.members("SMTPGUARD-V6") if device.platform == "ios" else []
    )


def state(device: FakeDevice) -> Any:
    return copy.deepcopy((device.groups, device.committed, device.commits))


def test_push_then_push_again_changes_nothing(device: FakeDevice) -> None:
    first = run(params(device, BEFORE), check=False)
    again = run(params(device, BEFORE), check=False)

    assert first["changed"] and first["added"] == ["192.0.2.7", "198.51.100.0/24", "2001:db8::25"]
    assert sorted(held(device)) == sorted(HELD_BEFORE[device.platform])
    assert (again["changed"], again["commands"], again["added"], again["removed"]) == (
        False,
        [],
        [],
        [],
    )


def test_check_mode_returns_the_exact_diff_and_leaves_the_device_alone(device: FakeDevice) -> None:
    run(params(device, BEFORE), check=False)
    untouched = state(device)
    log_start = len(device.log)

    checked = run(params(device, AFTER), check=True)

    assert checked["changed"] is True
    assert checked["added"] == ["203.0.113.9", "2001:db8:1::/48"]
    assert checked["removed"] == ["198.51.100.0/24"]
    assert checked["count"] == {"before": 3, "after": 4}
    assert (
        "198.51.100.0" in checked["diff"]["before"]
        and "198.51.100.0" not in checked["diff"]["after"]
    )
    assert state(device) == untouched
    sent = device.log[log_start:]
    if device.platform == "junos":
        assert "commit check" in sent and "rollback 0" in sent
        assert not [line for line in sent if line.startswith("commit") and line != "commit check"]
        assert checked["messages"] == ["commit check succeeded"]
    else:
        assert not [
            x for x in sent if not x.startswith("show") and ("object-group" in x or "host" in x)
        ]


def test_real_push_sends_only_the_delta_in_chunks(device: FakeDevice) -> None:
    run(params(device, BEFORE), check=False)
    log_start = len(device.log)

    pushed = run(params(device, AFTER, chunk_size=2), check=False)

    assert pushed["chunks"] == 2
    assert sorted(held(device)) == sorted(HELD_AFTER[device.platform])
    sent = " ".join(device.log[log_start:])
    assert "192.0.2.7" not in sent.replace("show", "")  # an unchanged member is never sent
    if device.platform == "junos":
        assert "commit confirmed 5" in device.log[log_start:]
        assert device.log[log_start:].count("commit") == 1  # the confirmation


REJECTED = {
    "ios": "% Invalid input detected at '^' marker.",
    "asa": "ERROR: % Invalid input detected at '^' marker.",
    "junos": "error: configuration check-out failed",
}


def test_a_rejected_line_restores_the_device_and_fails_with_its_message(device: FakeDevice) -> None:
    run(params(device, BEFORE), check=False)
    before = state(device)
    device.refuse.add("2001:db8:1::/48")

    with pytest.raises(DeviceError) as failed:
        run(params(device, AFTER, chunk_size=1), check=False)

    assert REJECTED[device.platform] in str(failed.value)
    assert "2001:db8:1::" in str(failed.value)
    assert sorted(held(device)) == sorted(HELD_BEFORE[device.platform])
    if device.platform == "junos":
        assert state(device) == before  # nothing committed
        assert "nothing was committed" in str(failed.value)
    else:
        assert "restored what it held before" in str(failed.value)


def test_a_read_back_that_differs_restores_the_device(device: FakeDevice) -> None:
    run(params(device, BEFORE), check=False)
    device.forget.add("203.0.113.9")

    with pytest.raises(DeviceError, match=r"read back a different list: missing 203\.0\.113\.9/32"):
        run(params(device, AFTER), check=False)

    assert sorted(held(device)) == sorted(HELD_BEFORE[device.platform])
    if device.platform == "junos":
        sent = device.log
        assert (
            sent.index("rollback 1") < len(sent) - 1
            and sent[sent.index("rollback 1") + 1] == "commit"
        )


def test_rollback_pushes_an_earlier_list_back(device: FakeDevice) -> None:
    run(params(device, BEFORE), check=False)
    run(params(device, AFTER), check=False)

    back = run(params(device, BEFORE), check=False)

    assert back["added"] == ["198.51.100.0/24"]
    assert back["removed"] == ["203.0.113.9", "2001:db8:1::/48"]
    assert sorted(held(device)) == sorted(HELD_BEFORE[device.platform])


def test_an_empty_list_empties_the_group(device: FakeDevice) -> None:
    run(params(device, BEFORE), check=False)

    emptied = run(params(device, []), check=False)

    assert emptied["removed"] == ["192.0.2.7", "198.51.100.0/24", "2001:db8::25"]
    assert held(device) == []


def test_session_log_is_private_and_masks_the_password(tmp_path: Path) -> None:
    log = tmp_path / "session.log"
    with FakeDevice("ios") as device:
        run(params(device, BEFORE, session_log=str(log)), check=False)

    text = log.read_text()
    assert "host 192.0.2.7" in text
    assert PASSWORD not in text
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


# fakenos's connection thread raises when the login fails; that is the server's business.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_wrong_password_names_the_device_and_the_fix() -> None:
    with FakeDevice("ios") as device:
        with pytest.raises(DeviceError, match=r"cannot log in to 127\.0\.0\.1:\d+ .*credentials"):
            run(params(device, BEFORE, password="wrong", timeout=5), check=False)
        assert device.config_sessions == 0


def test_the_ssh_config_file_decides_where_the_device_is(tmp_path: Path) -> None:
    """The inventory name reaches the device through ssh_config_file, as through a bastion."""
    with FakeDevice("ios") as device:
        config = tmp_path / "ssh_config"
        config.write_text(
            f"Host border1.mgmt.campus.example\n  HostName 127.0.0.1\n  Port {device.port}\n"
        )
        settings = params(
            device,
            BEFORE,
            host="border1.mgmt.campus.example",
            port=22,
            ssh_config_file=str(config),
        )

        pushed = run(settings, check=False)

        assert pushed["added"] == ["192.0.2.7", "198.51.100.0/24", "2001:db8::25"]
        assert sorted(held(device)) == sorted(HELD_BEFORE["ios"])


def test_a_large_list_goes_in_chunks_and_reads_back_whole() -> None:
    entries = [f"10.1.{n // 250}.{n % 250 + 1}" for n in range(150)]
    with FakeDevice("ios") as device:
        pushed = run(params(device, entries, chunk_size=50), check=False)

        assert pushed["chunks"] == 3
        assert len(held(device)) == 150
        assert run(params(device, entries), check=True)["changed"] is False


def test_a_session_that_fails_half_way_leaves_the_device_as_it_was(
    device: FakeDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    from netmiko.base_connection import BaseConnection
    from netmiko.exceptions import ReadTimeout

    run(params(device, BEFORE), check=False)
    before = sorted(held(device))
    original = BaseConnection.send_config_set
    calls = {"count": 0}

    def flaky(self, *args: Any, **kwargs: Any) -> str:
        calls["count"] += 1
        if calls["count"] == 2:
            raise ReadTimeout("Pattern not detected in output")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BaseConnection, "send_config_set", flaky)

    with pytest.raises(DeviceError, match=r"failed during chunk \d+: ReadTimeout"):
        run(params(device, AFTER, chunk_size=1), check=False)

    assert sorted(held(device)) == before
    if device.platform == "junos":
        last = len(device.log) - 1 - device.log[::-1].index("configure private")
        assert "commit" not in device.log[last:]
