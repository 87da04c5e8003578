"""push_blocklist, rollback.yml and unblock.yml run by ansible-playbook against a fake IOS
device on loopback, a plaintext feed and a Postfix cidr table in a temporary directory."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("netmiko")
pytest.importorskip("fakenos")

from ansible_collections.campusnet.smtpguard.plugins.module_utils._state import (  # noqa: E402
    BlockListState,
)
from support.fakedevices import PASSWORD, USERNAME, FakeDevice  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"
RECAP = re.compile(
    r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)

pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="needs .venv (make setup)")


def candidate(ip: str, sessions: int) -> dict[str, Any]:
    return {
        "ip": ip,
        "rule": "cond3",
        "rules": ["cond3"],
        "reason": "test",
        "sessions": sessions,
        "qualifying_sessions": sessions,
        "risk": 99,
    }


FIRST = [candidate("192.0.2.7", 400), candidate("198.51.100.25", 350)]
SECOND = [*FIRST, candidate("203.0.113.9", 900), candidate("2001:db8::25", 320)]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An inventory with a fake IOS device and a feed, and a state with snapshots 1 and 2."""
    state_dir = tmp_path / "state"
    state = BlockListState(str(state_dir))
    for candidates in (FIRST, SECOND):
        plan = state.plan(candidates=candidates, ttl="7d", max_new=100, never_block=[], now=NOW)
        state.commit(plan.result(state_file=state.store.state_file)["plan"], write=True)

    with FakeDevice("ios") as device:
        inventory = {
            "all": {
                "vars": {
                    "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                    "smtpguard_state_dir": str(state_dir),
                    "smtpguard_allowlist_file": str(tmp_path / "allowlist.yml"),
                },
                "children": {
                    "controller": {"hosts": {"localhost": {"ansible_connection": "local"}}},
                    "enforcers": {
                        "hosts": {
                            "ios1": {
                                "ansible_connection": "local",
                                "push_blocklist_platform": "ios",
                                "push_blocklist_device_host": "127.0.0.1",
                                "push_blocklist_device_port": device.port,
                                "push_blocklist_device_username": USERNAME,
                                "push_blocklist_device_password": PASSWORD,
                                "push_blocklist_device_host_key_checking": False,
                            },
                            "feed1": {
                                "ansible_connection": "local",
                                "push_blocklist_platform": "plaintext",
                                "push_blocklist_dest": str(tmp_path / "feed.txt"),
                            },
                        }
                    },
                },
            }
        }
        hosts = tmp_path / "hosts.yml"
        hosts.write_text(yaml.safe_dump(inventory))
        yield {"inventory": hosts, "device": device, "tmp": tmp_path, "state": state_dir}


def play(
    site: dict[str, Any], playbook: str, *args: str
) -> tuple[int, str, dict[str, tuple[int, ...]]]:
    command = [str(ANSIBLE_PLAYBOOK), "-i", str(site["inventory"]), playbook, *args]
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    recap = {m[1]: tuple(int(x) for x in m.groups()[1:]) for m in RECAP.finditer(done.stdout)}
    return done.returncode, done.stdout + done.stderr, recap


def held(device: FakeDevice) -> set[str]:
    return set(device.members("SMTPGUARD") + device.members("SMTPGUARD-V6"))


def show(site: dict[str, Any]) -> dict[str, Any]:
    return json.loads((site["state"] / "state.json").read_text())


def test_rollback_to_one_device_pushes_the_snapshot_and_leaves_the_state(
    site: dict[str, Any],
) -> None:
    before = show(site)

    checked = play(
        site, "playbooks/rollback.yml", "--check", "--diff", "-e", "rollback_targets=ios1"
    )
    assert checked[0] == 0 and held(site["device"]) == set(), checked[1]

    rc, output, recap = play(
        site, "playbooks/rollback.yml", "-e", "rollback_snapshot=1", "-e", "rollback_targets=ios1"
    )

    assert rc == 0, output
    assert "feed1" not in recap
    assert held(site["device"]) == {"host 192.0.2.7", "host 198.51.100.25"}
    assert show(site) == before
    assert "the state still records snapshot 2" in output


def test_rollback_to_all_is_recorded_as_a_new_snapshot(site: dict[str, Any]) -> None:
    rc, output, _ = play(site, "playbooks/rollback.yml")

    assert rc == 0, output
    assert held(site["device"]) == {"host 192.0.2.7", "host 198.51.100.25"}
    assert (site["tmp"] / "feed.txt").read_text().splitlines()[1:] == ["192.0.2.7", "198.51.100.25"]
    assert show(site)["snapshot"] == 3


def test_unblock_removes_the_address_everywhere_and_allowlists_it(site: dict[str, Any]) -> None:
    assert play(site, "playbooks/rollback.yml", "-e", "rollback_snapshot=2")[0] == 0
    assert "host 203.0.113.9" in held(site["device"])

    checked = play(
        site,
        "playbooks/unblock.yml",
        "--check",
        "-e",
        "unblock_address=203.0.113.9",
        "-e",
        "unblock_reason='partner relay, ticket 4711'",
    )
    assert checked[0] == 0, checked[1]
    assert "host 203.0.113.9" in held(site["device"])
    assert not (site["tmp"] / "allowlist.yml").exists()

    rc, output, _ = play(
        site,
        "playbooks/unblock.yml",
        "-e",
        "unblock_address=203.0.113.9",
        "-e",
        "unblock_reason='partner relay, ticket 4711'",
        "-e",
        "unblock_expires=30d",
    )

    assert rc == 0, output
    assert "host 203.0.113.9" not in held(site["device"])
    assert "203.0.113.9" not in (site["tmp"] / "feed.txt").read_text()
    assert "203.0.113.9" not in show(site)["entries"]
    allowlist = yaml.safe_load((site["tmp"] / "allowlist.yml").read_text())
    assert [(e["network"], e["reason"]) for e in allowlist] == [
        ("203.0.113.9", "partner relay, ticket 4711")
    ]
    assert allowlist[0]["expires"].endswith("Z")


def test_role_check_mode_shows_the_device_diff_and_a_rerun_changes_nothing(
    site: dict[str, Any],
) -> None:
    playbook = site["tmp"] / "push.yml"
    playbook.write_text(
        "- name: Push\n  hosts: ios1\n  gather_facts: false\n  roles:\n"
        "    - role: campusnet.smtpguard.push_blocklist\n"
        "      vars: {push_blocklist_entries: ['192.0.2.7', '2001:db8::25']}\n"
    )
    checked = play(site, str(playbook), "--check", "--diff")
    pushed = play(site, str(playbook), "-vvv")
    again = play(site, str(playbook))

    assert checked[0] == 0 and "+object-group network SMTPGUARD | host 192.0.2.7" in checked[1], (
        checked[1]
    )
    assert held(site["device"]) == {"host 192.0.2.7", "host 2001:db8::25"}
    assert pushed[2]["ios1"][1] == 1 and again[2]["ios1"][1] == 0, again[1]
    assert PASSWORD not in pushed[1] + checked[1]


def test_role_warns_with_numbers_when_the_device_is_full(site: dict[str, Any]) -> None:
    rc, output, _ = play(
        site,
        "playbooks/rollback.yml",
        "-e",
        "rollback_snapshot=2",
        "-e",
        "push_blocklist_capacity=2",
    )

    assert rc == 0, output
    assert (
        "the block list has 4 entries, the device holds 2; 2 entries with the least impact"
        in output
    )
    # the two with the most qualifying sessions stay
    assert held(site["device"]) == {"host 203.0.113.9", "host 192.0.2.7"}


def test_postfix_table_is_written_and_postfix_reloaded(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "postfix").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "postfix").chmod(0o755)
    playbook = tmp_path / "push.yml"
    playbook.write_text(
        "- name: Push\n  hosts: localhost\n  gather_facts: false\n  roles:\n"
        "    - role: campusnet.smtpguard.push_blocklist\n"
        "      vars: {push_blocklist_platform: postfix,"
        f" push_blocklist_dest: '{tmp_path}/blocked.cidr',"
        " push_blocklist_entries: ['192.0.2.7', '2001:db8::/48'], push_blocklist_header: false}\n"
    )
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1"}
    command = [
        str(ANSIBLE_PLAYBOOK),
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        "ansible_python_interpreter={{ ansible_playbook_python }}",
        str(playbook),
    ]

    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)

    assert first.returncode == 0, first.stdout
    assert (
        tmp_path / "blocked.cidr"
    ).read_text() == "192.0.2.7/32\tREJECT\n2001:db8::/48\tREJECT\n"
    assert calls.read_text() == "reload\n"  # the second run changed nothing and did not reload
    assert second.returncode == 0


@pytest.mark.parametrize(
    ("targets", "unmatched"),
    [
        pytest.param("ios1,ios9", "ios9", id="a-misspelt-device-in-a-list"),
        pytest.param("localhost,ios1", "localhost", id="a-host-that-is-no-enforcer"),
        pytest.param("ios9:ios1", "ios9", id="colon-separated"),
    ],
)
def test_rollback_targets_that_name_no_enforcer_fail_before_any_push(
    site: dict[str, Any], targets: str, unmatched: str
) -> None:
    before = show(site)

    rc, output, recap = play(
        site,
        "playbooks/rollback.yml",
        "-e",
        "rollback_snapshot=1",
        "-e",
        f"rollback_targets={targets}",
    )

    assert rc != 0
    assert f"rollback_targets {targets}: {unmatched} matches no host of the enforcers" in output
    assert held(site["device"]) == set() and not (site["tmp"] / "feed.txt").exists()
    assert set(recap) == {"localhost"} and show(site) == before


def test_rollback_to_a_list_of_targets_pushes_to_each_and_only_to_them(
    site: dict[str, Any],
) -> None:
    rc, output, recap = play(
        site,
        "playbooks/rollback.yml",
        "-e",
        "rollback_snapshot=1",
        "-e",
        "rollback_targets=ios1,feed1",
    )

    assert rc == 0, output
    assert set(recap) == {"localhost", "ios1", "feed1"}
    assert held(site["device"]) == {"host 192.0.2.7", "host 198.51.100.25"}
    assert (site["tmp"] / "feed.txt").read_text().splitlines()[1:] == ["192.0.2.7", "198.51.100.25"]
    assert show(site)["snapshot"] == 3  # every enforcer took it: recorded


def test_rollback_to_snapshot_0_empties_every_device_and_says_so(site: dict[str, Any]) -> None:
    assert play(site, "playbooks/rollback.yml", "-e", "rollback_snapshot=2")[0] == 0
    assert len(held(site["device"])) == 4

    rc, output, _ = play(site, "playbooks/rollback.yml", "-e", "rollback_snapshot=0")

    assert rc == 0, output
    assert "Restoring snapshot 0 (the empty list before the first push)" in output
    assert held(site["device"]) == set()
    assert (site["tmp"] / "feed.txt").read_text().splitlines()[1:] == []
    assert show(site)["entries"] == {}


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        pytest.param(
            ["unblock_address=0.0.0.0/0"],
            "address '0.0.0.0/0' is refused for unblock: wider than /16",
            id="everything",
        ),
        pytest.param(
            ["unblock_address=2001::/16"],
            "address '2001::/16' is refused for unblock: wider than /32",
            id="v6-too-wide",
        ),
        pytest.param(
            ["unblock_address=203.0.113.9", "unblock_expires=-5d"],
            "expires must be a positive duration such as 7d or 12h",
            id="negative-expiry",
        ),
    ],
)
def test_unblock_refuses_before_anything_is_written(
    site: dict[str, Any], variables: list[str], message: str
) -> None:
    assert play(site, "playbooks/rollback.yml", "-e", "rollback_snapshot=2")[0] == 0
    pushed, before = held(site["device"]), show(site)
    extra = [arg for variable in variables for arg in ("-e", variable)]

    rc, output, _ = play(
        site, "playbooks/unblock.yml", *extra, "-e", "unblock_reason='ticket 4711'"
    )

    assert rc != 0
    assert message in output
    assert held(site["device"]) == pushed and show(site) == before
    assert not (site["tmp"] / "allowlist.yml").exists()


AGGREGATE = ["192.0.2.7", "192.0.2.8", "198.51.100.1", "198.51.100.2"]


@pytest.mark.parametrize(
    ("spared", "expected"),
    [
        pytest.param(
            [], {"host 192.0.2.7", "host 192.0.2.8", "198.51.100.0 255.255.255.0"}, id="file"
        ),
        pytest.param(
            ["198.51.100.77"],
            {"host 192.0.2.7", "host 192.0.2.8", "host 198.51.100.1"},
            id="file-and-spared",
        ),
    ],
)
def test_aggregation_on_a_full_device_leaves_the_allowlist_and_spared_sources_out(
    site: dict[str, Any], spared: list[str], expected: set[str]
) -> None:
    (site["tmp"] / "allowlist.yml").write_text(
        "- {network: 192.0.2.200, reason: partner relay, expires: null}\n"
    )
    playbook = site["tmp"] / "aggregate.yml"
    playbook.write_text(
        "- name: Push\n  hosts: ios1\n  gather_facts: false\n  roles:\n"
        "    - role: campusnet.smtpguard.push_blocklist\n"
        f"      vars: {{push_blocklist_entries: {json.dumps(AGGREGATE)},\n"
        "             push_blocklist_capacity: 3, push_blocklist_aggregate: true,\n"
        f"             push_blocklist_spared: {json.dumps(spared)}}}\n"
    )

    rc, output, _ = play(site, str(playbook))

    assert rc == 0, output
    assert held(site["device"]) == expected
    assert "networks were not aggregated (first: 192.0.2.0/24" in output
