"""device_blocklist through a real OpenSSH bastion on 127.0.0.1 with ProxyJump in an ssh_config.

The bastion is sshd with its own host key and authorized_keys (tests/support/bastion.py); the
devices are the stateful fakes of tests/support/fakedevices.py. The bastion's own log shows
which forwardings it made, so each test can tell that the push really went through it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("netmiko")
pytest.importorskip("fakenos")

from ansible_collections.campusnet.smtpguard.plugins.module_utils._bastion import (  # noqa: E402
    resolve,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._devices import (  # noqa: E402
    DeviceError,
)
from ansible_collections.campusnet.smtpguard.plugins.modules.device_blocklist import (  # noqa: E402
    run,
)
from support import bastion as sshd  # noqa: E402
from support.fakedevices import FakeDevice  # noqa: E402
from support.templates import render  # noqa: E402

pytestmark = pytest.mark.skipif(sshd.missing() is not None, reason=sshd.missing() or "")

ENTRIES = ["192.0.2.7", "198.51.100.0/24", "2001:db8::25"]
DEVICE = "border1.mgmt.campus.example"


@pytest.fixture
def bastion(tmp_path: Path) -> Iterator[sshd.Bastion]:
    with sshd.Bastion(tmp_path / "bastion") as server:
        yield server


def ssh_config(bastion: sshd.Bastion, device: FakeDevice, path: Path, jump: str) -> Path:
    entry = f"Host {DEVICE}\n  HostName 127.0.0.1\n  Port {device.port}\n  ProxyJump {jump}\n"
    return bastion.ssh_config(path, extra=entry)


def params(device: FakeDevice, config: Path, entries: list[str], **overrides: Any) -> dict:
    values = {
        **device.params,
        "host": DEVICE,
        "port": 22,
        "platform": device.platform,
        "config": render(f"{device.platform}.j2", entries),
        "secret": None,
        "key_file": None,
        "passphrase": None,
        "ssh_config_file": str(config),
        "host_key_checking": False,
        "known_hosts": None,
        "timeout": 20,
        "read_timeout": 60,
        "chunk_size": None,
        "confirm_minutes": 5,
        "session_log": None,
    }
    values.update(overrides)
    return values


def hops_running(config: Path) -> list[int]:
    """PIDs of processes whose command line names this ssh_config (the hops)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(config) in cmdline:
            found.append(int(proc.name))
    return found


@pytest.mark.parametrize("platform", ["ios", "asa", "junos"])
def test_push_goes_through_the_bastion_and_leaves_no_hop_behind(
    bastion: sshd.Bastion, tmp_path: Path, platform: str
) -> None:
    with FakeDevice(platform) as device:
        config = ssh_config(bastion, device, tmp_path / "ssh_config", "bastion")

        checked = run(params(device, config, ENTRIES), check=True)
        untouched = (dict(device.groups), list(device.committed))
        pushed = run(params(device, config, ENTRIES), check=False)
        again = run(params(device, config, ENTRIES), check=True)

        assert checked["added"] == ["192.0.2.7", "198.51.100.0/24", "2001:db8::25"]
        assert untouched == ({}, [])
        assert pushed["changed"] and not again["changed"]
        assert len(device.members("SMTPGUARD") + device.members("SMTPGUARD-V6")) == 3
        assert bastion.forwarded_to(device.port) == 3
        assert hops_running(config) == []


def test_two_jumps_go_through_both_hops(bastion: sshd.Bastion, tmp_path: Path) -> None:
    """`ProxyJump a,b`: netmiko alone refuses more than one hop; here b is reached through a."""
    with FakeDevice("ios") as device:
        inner = (
            "Host inner\n  HostName 127.0.0.1\n"
            f"  Port {bastion.port}\n  User {bastion.user}\n  IdentityFile {bastion.client_key}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {bastion.known_hosts}\n  BatchMode yes\n"
        )
        path = tmp_path / "ssh_config"
        config = ssh_config(bastion, device, path, "bastion,inner")
        path.write_text(path.read_text() + inner)

        pushed = run(params(device, config, ENTRIES), check=False)

        assert pushed["added"] == ["192.0.2.7", "198.51.100.0/24", "2001:db8::25"]
        assert bastion.forwarded_to(bastion.port) == 1  # the outer hop opened the inner one
        assert bastion.forwarded_to(device.port) == 1
        assert hops_running(config) == []


@pytest.mark.parametrize("form", ["{user}@127.0.0.1:{port}", "ssh://{user}@127.0.0.1:{port}"])
def test_a_jump_with_user_and_port_goes_to_that_port(
    bastion: sshd.Bastion, tmp_path: Path, form: str
) -> None:
    """No `Host` entry names the bastion's port: only the ProxyJump value carries it."""
    with FakeDevice("ios") as device:
        path = tmp_path / "ssh_config"
        jump = form.format(user=bastion.user, port=bastion.port)
        config = ssh_config(bastion, device, path, jump)
        path.write_text(
            path.read_text()
            + f"Host 127.0.0.1\n  IdentityFile {bastion.client_key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {bastion.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n  BatchMode yes\n"
        )

        pushed = run(params(device, config, ENTRIES), check=False)

        assert pushed["added"] == ["192.0.2.7", "198.51.100.0/24", "2001:db8::25"]
        assert bastion.forwarded_to(device.port) == 1
        assert hops_running(config) == []


def test_a_bastion_with_another_host_key_fails_at_once_with_sshs_words(
    bastion: sshd.Bastion, tmp_path: Path
) -> None:
    with FakeDevice("ios") as device:
        config = ssh_config(bastion, device, tmp_path / "ssh_config", "bastion")
        other_key = sshd.keygen(tmp_path / "another_host_ed25519")
        bastion.known_hosts.write_text(f"[127.0.0.1]:{bastion.port} {other_key}\n")
        started = time.monotonic()

        with pytest.raises(DeviceError) as failed:
            run(params(device, config, ENTRIES), check=False)

        message = str(failed.value)
        assert "through the ProxyJump bastion" in message
        assert "Host key verification failed" in message
        assert "UserKnownHostsFile" in message
        assert time.monotonic() - started < 15  # not the 20 s banner timeout
        assert device.log == [] and bastion.forwarded_to(device.port) == 0
        assert hops_running(config) == []


def test_a_bastion_that_is_down_is_named_with_the_refusal(
    bastion: sshd.Bastion, tmp_path: Path
) -> None:
    with FakeDevice("ios") as device:
        config = ssh_config(bastion, device, tmp_path / "ssh_config", "bastion")
        bastion.stop()

        with pytest.raises(
            DeviceError, match=r"through the ProxyJump bastion: .*Connection refused"
        ):
            run(params(device, config, ENTRIES), check=False)

        assert device.log == []
        assert hops_running(config) == []


# fakenos's connection thread raises when the login fails; that is the server's business.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_wrong_device_password_says_the_bastion_let_it_through(
    bastion: sshd.Bastion, tmp_path: Path
) -> None:
    with FakeDevice("ios") as device:
        config = ssh_config(bastion, device, tmp_path / "ssh_config", "bastion")

        with pytest.raises(DeviceError, match=r"the bastion let the connection through"):
            run(params(device, config, ENTRIES, password="wrong", timeout=5), check=False)

        assert bastion.forwarded_to(device.port) == 1
        assert device.config_sessions == 0
        assert hops_running(config) == []


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("  HostName 10.0.0.5\n", ("10.0.0.5", 22, ())),
        ("  HostName 10.0.0.5\n  Port 2222\n", ("10.0.0.5", 2222, ())),
        (
            "  HostName 2001:db8::5\n  ProxyJump bastion\n",
            ("2001:db8::5", 22, ("-W", "[2001:db8::5]:22", "bastion")),
        ),
        (
            "  HostName 10.0.0.5\n  ProxyJump jump1,jump2\n",
            ("10.0.0.5", 22, ("-J", "jump1", "-W", "10.0.0.5:22", "jump2")),
        ),
        ("  HostName 10.0.0.5\n  ProxyJump none\n", ("10.0.0.5", 22, ())),
        (
            "  ProxyCommand nc -X connect -x proxy:3128 %h %p\n",
            (DEVICE, 22, ("nc", "-X", "connect", "-x", "proxy:3128", DEVICE, "22")),
        ),
    ],
)
def test_the_route_follows_the_ssh_config_entry(
    tmp_path: Path, entry: str, expected: tuple[str, int, tuple[str, ...]]
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(f"Host {DEVICE}\n{entry}")

    route = resolve(DEVICE, port=22, ssh_config_file=str(config), timeout=7)

    hostname, port, tail = expected
    assert (route.hostname, route.port) == (hostname, port)
    if not tail:
        assert route.command == ()
    elif tail[0] == "nc":
        assert route.command == tail
    else:
        assert route.command[:8] == (
            "ssh",
            "-F",
            str(config),
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=7",
            tail[0],
        )
        assert route.command[7:] == tail


ANSIBLE_PLAYBOOK = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "ansible-playbook"


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="needs .venv (make setup)")
def test_the_role_pushes_through_the_bastion_with_its_ssh_config(
    bastion: sshd.Bastion, tmp_path: Path
) -> None:
    import json
    import os
    import subprocess

    from support.fakedevices import PASSWORD, USERNAME

    with FakeDevice("junos") as device:
        config = ssh_config(bastion, device, tmp_path / "ssh_config", "bastion")
        playbook = tmp_path / "push.yml"
        playbook.write_text(
            "- name: Push\n  hosts: all\n  gather_facts: false\n  roles:\n"
            "    - role: campusnet.smtpguard.push_blocklist\n"
            f"      vars: {{push_blocklist_entries: {json.dumps(ENTRIES)}}}\n"
        )
        variables = {
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "push_blocklist_platform": "junos",
            "push_blocklist_device_username": USERNAME,
            "push_blocklist_device_password": PASSWORD,
            "push_blocklist_device_ssh_config_file": str(config),
            "push_blocklist_device_host_key_checking": False,
        }
        (tmp_path / "vars.json").write_text(json.dumps(variables))
        done = subprocess.run(
            [
                str(ANSIBLE_PLAYBOOK),
                "-i",
                f"{DEVICE},",
                "-e",
                f"@{tmp_path / 'vars.json'}",
                str(playbook),
                "-v",
            ],
            cwd=ANSIBLE_PLAYBOOK.parents[2],
            env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

        assert done.returncode == 0, done.stdout + done.stderr
        assert device.members("SMTPGUARD") == [
            "192.0.2.7/32",
            "198.51.100.0/24",
            "2001:db8::25/128",
        ]
        assert bastion.forwarded_to(device.port) == 1
        assert PASSWORD not in done.stdout + done.stderr
        assert hops_running(config) == []
