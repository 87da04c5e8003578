"""What unblock, allowlist and rollback accept: no address wider than the block list holds, a
positive expiry, snapshot 0 as the empty list; and the rollback targets split element by
element."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.campusnet.smtpguard.plugins.filter.targets import host_pattern_elements
from ansible_collections.campusnet.smtpguard.plugins.module_utils._state import (
    BlockListState,
    StateError,
)

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
BLOCKED = ["192.0.2.7", "198.51.100.25", "2001:db8::25"]


@pytest.fixture
def state(tmp_path: Path) -> BlockListState:
    """Two snapshots: 192.0.2.7 alone, then all of BLOCKED."""
    blocklist = BlockListState(str(tmp_path / "state"))
    for ips in (BLOCKED[:1], BLOCKED):
        candidates = [
            {"ip": ip, "rule": "cond3", "rules": ["cond3"], "reason": "test", "sessions": 9}
            for ip in ips
        ]
        planned = blocklist.plan(
            candidates=candidates, ttl="7d", max_new=100, never_block=[], now=NOW
        )
        blocklist.commit(planned.payload(), write=True)
    return blocklist


WIDTHS = [
    pytest.param("0.0.0.0/0", False, id="v4-everything"),
    pytest.param("::/0", False, id="v6-everything"),
    pytest.param("10.0.0.0/8", False, id="v4-8"),
    pytest.param("192.0.0.0/15", False, id="v4-15"),
    pytest.param("2001::/16", False, id="v6-16"),
    pytest.param("192.0.0.0/16", True, id="v4-16"),
    pytest.param("2001:db8::/32", True, id="v6-32"),
    pytest.param("198.51.100.25", True, id="one-address"),
]


@pytest.mark.parametrize(("address", "taken"), WIDTHS)
def test_unblock_takes_no_more_than_the_block_list_holds(
    state: BlockListState, address: str, taken: bool
) -> None:
    if taken:
        planned = state.unblock(address=address, reason="ticket 4711", expires="7d", now=NOW)
        assert planned.extra["unblocked"]["address"] == address
        return

    with pytest.raises(StateError, match=r"refused for unblock: wider than /(16|32)") as refused:
        state.unblock(address=address, reason="ticket 4711", expires="7d", now=NOW)

    assert "at most a /16 for IPv4, a /32 for IPv6" in str(refused.value)


@pytest.mark.parametrize(("address", "taken"), WIDTHS)
def test_the_allowlist_action_takes_the_same_widths(
    state: BlockListState, tmp_path: Path, address: str, taken: bool
) -> None:
    path = tmp_path / "allowlist.yml"

    def allow() -> object:
        return state.allowlist(
            str(path), now=NOW, write=True, address=address, reason="ticket 4711"
        )

    if taken:
        allow()
        assert address in path.read_text()
    else:
        with pytest.raises(StateError, match="refused for allowlist"):
            allow()
        assert not path.exists()


@pytest.mark.parametrize("expires", ["-5d", "-12h", "- 5d", "0d", "0", -5, 0, "-5"])
def test_an_expiry_that_is_not_positive_says_to_give_a_positive_duration(
    state: BlockListState, expires: object
) -> None:
    with pytest.raises(StateError) as refused:
        state.unblock(address=BLOCKED[1], reason="ticket 4711", expires=expires, now=NOW)

    assert "expires must be a positive duration such as 7d or 12h" in str(refused.value)
    assert repr(expires) in str(refused.value)


@pytest.mark.parametrize(
    ("expires", "until"),
    [
        ("7d", "2026-12-08T12:00:00Z"),
        ("12H", "2026-12-02T00:00:00Z"),
        (3600, "2026-12-01T13:00:00Z"),
        ("2027-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
    ],
)
def test_a_positive_expiry_is_taken(state: BlockListState, expires: object, until: str) -> None:
    planned = state.unblock(address=BLOCKED[1], reason="ticket 4711", expires=expires, now=NOW)

    assert planned.extra["unblocked"]["expires"] == until


def test_snapshot_0_is_the_empty_list_before_the_first_push(state: BlockListState) -> None:
    planned = state.rollback(snapshot=0, never_block=[], now=NOW)
    result = planned.result(state_file=state.store.state_file)

    assert result["rollback_to"] == 0
    assert result["blocklist"] == []
    assert sorted(item["ip"] for item in result["removed"]) == sorted(BLOCKED)
    assert {item["detail"] for item in result["removed"]} == {"not in snapshot 0"}


@pytest.mark.parametrize("snapshot", [-1, -12])
def test_a_negative_snapshot_is_refused_saying_what_0_means(
    state: BlockListState, snapshot: int
) -> None:
    with pytest.raises(StateError, match=r"0 for the empty block list in force before the first"):
        state.rollback(snapshot=snapshot, never_block=[], now=NOW)


@pytest.mark.parametrize(
    ("pattern", "elements"),
    [
        ("enforcers", ["enforcers"]),
        ("ips1,ips2", ["ips1", "ips2"]),
        ("ips1, ips2 ,", ["ips1", "ips2"]),
        ("ips1:ips2", ["ips1", "ips2"]),
        ("border:&campus,!ips9", ["border:&campus", "!ips9"]),
        ("ips1:&enforcers", ["ips1", "&enforcers"]),
        ("2001:db8::1", ["2001:db8::1"]),
        ("ips[1:3]", ["ips[1:3]"]),
        (["ips1", "ips2,ips3"], ["ips1", "ips2", "ips3"]),
    ],
)
def test_host_pattern_elements_splits_as_ansible_does(pattern: object, elements: list) -> None:
    assert host_pattern_elements(pattern) == elements


@pytest.mark.parametrize("pattern", [None, 7, {"hosts": "ips1"}, ["ips1", 2]])
def test_host_pattern_elements_refuses_what_is_no_pattern(pattern: object) -> None:
    with pytest.raises(AnsibleFilterError, match="expects a host pattern"):
        host_pattern_elements(pattern)
