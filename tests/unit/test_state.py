"""Block list state: plan, commit, rollback, unblock and rebuild, and the files they leave."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._state import (
    BlockListState,
    ConflictError,
    StateError,
    parse_duration,
    parse_time,
)
from ansible_collections.campusnet.smtpguard.plugins.modules import blocklist_state

T0 = parse_time("2024-05-01T10:00:00Z", what="now")
A, B, C, D = "192.0.2.10", "198.51.100.7", "203.0.113.9", "2001:db8::25"


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def candidate(ip: str, **figures: Any) -> dict[str, Any]:
    return {
        "ip": ip,
        "rule": "cond1",
        "rules": ["cond1"],
        "reason": "held 40 sessions open",
        "sessions": 20,
        "qualifying_sessions": 10,
        "longest_session": 45,
        "open_sessions": 1,
        "risk": 90.0,
        **figures,
    }


def plan(
    blocklist: BlockListState,
    ips: list[str],
    *,
    now: dt.datetime = T0,
    ttl: object = "1h",
    max_new: int = 1000,
    never_block: list[str] | None = None,
) -> Any:
    return blocklist.plan(
        candidates=[candidate(ip) for ip in ips],
        ttl=ttl,
        max_new=max_new,
        never_block=never_block,
        now=now,
    )


def cycle(blocklist: BlockListState, ips: list[str], **kwargs: Any) -> dict[str, Any]:
    """Plan and commit, as one run of the playbook does."""
    return blocklist.commit(plan(blocklist, ips, **kwargs).payload(), write=True)


def tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under root with its mode and, for files, its bytes."""
    found: dict[str, tuple[int, bytes | None]] = {}
    if not root.exists():
        return found
    for path in sorted(root.rglob("*")):
        mode = path.stat().st_mode
        found[str(path.relative_to(root))] = (mode, path.read_bytes() if path.is_file() else None)
    return found


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def blocklist(state_dir: Path) -> BlockListState:
    return BlockListState(str(state_dir))


# Plan transitions, as a table: what was committed before, what the next plan decides.

TRANSITIONS = [
    pytest.param(
        [],
        dict(ips=[A, D]),
        dict(added=[A, D], removed=[], renewed=[], blocklist=[A, D], changed=True),
        id="new-sources-are-added",
    ),
    pytest.param(
        [dict(ips=[A])],
        dict(ips=[A], now=at(1800)),
        dict(added=[], removed=[], renewed=[A], blocklist=[A], changed=True),
        id="matching-again-renews",
    ),
    pytest.param(
        [dict(ips=[A, B])],
        dict(ips=[], now=at(3600)),
        dict(
            added=[],
            removed=[(A, "expired"), (B, "expired")],
            renewed=[],
            blocklist=[],
            changed=True,
        ),
        id="expiry-at-now-removes",
    ),
    pytest.param(
        [dict(ips=[A])],
        dict(ips=[], now=at(3599)),
        dict(added=[], removed=[], renewed=[], blocklist=[A], changed=False),
        id="one-second-before-expiry-keeps",
    ),
    pytest.param(
        [dict(ips=[A])],
        dict(ips=[A], now=at(3600)),
        dict(added=[], removed=[], renewed=[A], blocklist=[A], changed=True),
        id="matching-at-expiry-renews-instead-of-removing",
    ),
    pytest.param(
        [dict(ips=[A, B])],
        dict(ips=[A, B]),
        dict(added=[], removed=[], renewed=[], blocklist=[A, B], changed=False),
        id="replaying-the-same-window-changes-nothing",
    ),
    pytest.param(
        [dict(ips=[A, B])],
        dict(ips=[], now=at(60), never_block=["192.0.2.0/24"]),
        dict(added=[], removed=[(A, "never-block")], renewed=[], blocklist=[B], changed=True),
        id="never-block-removes-a-stored-entry",
    ),
    pytest.param(
        [],
        dict(ips=[A, C], never_block=["192.0.2.0/24"]),
        dict(added=[C], removed=[], renewed=[], blocklist=[C], changed=True),
        id="never-block-refuses-a-candidate",
    ),
    pytest.param(
        [],
        dict(ips=["2001:db8::1", "10.0.0.2", "9.0.0.1", "::ffff:192.0.2.1", "2001:DB8:0::0:25"]),
        dict(
            added=["9.0.0.1", "10.0.0.2", "192.0.2.1", "2001:db8::1", "2001:db8::25"],
            removed=[],
            renewed=[],
            blocklist=["9.0.0.1", "10.0.0.2", "192.0.2.1", "2001:db8::1", "2001:db8::25"],
            changed=True,
        ),
        id="addresses-are-normalised-ipv4-first-numerically",
    ),
]


@pytest.mark.parametrize(("history", "step", "expected"), TRANSITIONS)
def test_plan_transition(
    blocklist: BlockListState, history: list[dict], step: dict, expected: dict
) -> None:
    for earlier in history:
        cycle(blocklist, **earlier)

    options = {key: value for key, value in step.items() if key != "ips"}
    result = plan(blocklist, step["ips"], **options).result(state_file="state.json")

    assert [item["ip"] for item in result["added"]] == expected["added"]
    assert [(item["ip"], item["reason"]) for item in result["removed"]] == expected["removed"]
    assert [item["ip"] for item in result["renewed"]] == expected["renewed"]
    assert result["blocklist"] == expected["blocklist"]
    assert result["changed"] is expected["changed"]


def test_never_block_refusal_is_reported(blocklist: BlockListState) -> None:
    result = plan(blocklist, [A], never_block=["192.0.2.0/24"]).result(state_file="s")

    assert result["refused"] == [{"ip": A, "reason": "never-block", "detail": "192.0.2.0/24"}]
    assert result["counts"]["refused"] == 1


def test_renewal_keeps_first_seen_and_extends_expiry(blocklist: BlockListState) -> None:
    cycle(blocklist, [A], ttl="1h")

    renewed = plan(blocklist, [A], now=at(1800), ttl="1h")
    entry = renewed.entries[A]

    assert entry["first_seen"] == "2024-05-01T10:00:00Z"
    assert entry["last_seen"] == "2024-05-01T10:30:00Z"
    assert entry["expires"] == "2024-05-01T11:30:00Z"


def test_renewal_never_shortens_a_block(blocklist: BlockListState) -> None:
    cycle(blocklist, [A], ttl="1d")

    renewed = plan(blocklist, [A], now=at(60), ttl="1h")

    assert renewed.entries[A]["expires"] == "2024-05-02T10:00:00Z"


def test_new_entry_records_evidence(blocklist: BlockListState) -> None:
    entry = plan(blocklist, [A]).entries[A]

    assert entry["evidence"] == {
        "sessions": 20,
        "qualifying_sessions": 10,
        "longest_session": 45.0,
        "open_sessions": 1,
        "risk": 90.0,
    }
    assert (entry["rule"], entry["rules"], entry["ptr"]) == ("cond1", ["cond1"], None)


# max_new


def test_max_new_keeps_the_highest_impact_and_warns(blocklist: BlockListState) -> None:
    candidates = [
        candidate("192.0.2.1", qualifying_sessions=5, risk=99.0, sessions=90),
        candidate("192.0.2.2", qualifying_sessions=30, risk=10.0, sessions=30),
        candidate("192.0.2.3", qualifying_sessions=20, risk=80.0, sessions=20),
        candidate("192.0.2.4", qualifying_sessions=20, risk=80.0, sessions=25),
        candidate("192.0.2.5", qualifying_sessions=20, risk=70.0, sessions=99),
    ]

    planned = blocklist.plan(candidates=candidates, ttl="1h", max_new=3, never_block=[], now=T0)

    assert sorted(planned.entries) == ["192.0.2.2", "192.0.2.3", "192.0.2.4"]
    assert [item["ip"] for item in planned.capped] == ["192.0.2.5", "192.0.2.1"]
    assert len(planned.warnings) == 1
    assert "5 new sources exceed max_new=3" in planned.warnings[0]
    assert "2 left out" in planned.warnings[0]


def test_max_new_does_not_count_renewals(blocklist: BlockListState) -> None:
    cycle(blocklist, [A, B])

    planned = plan(blocklist, [A, B, C], now=at(60), max_new=1)

    assert sorted(planned.entries) == sorted([A, B, C])
    assert planned.warnings == []


def test_module_passes_the_cap_warning_to_ansible(state_dir: Path) -> None:
    warnings: list[str] = []
    params = {
        "state_dir": str(state_dir),
        "action": "plan",
        "candidates": [candidate(A), candidate(B)],
        "ttl": "24h",
        "max_new": 1,
        "never_block": [],
        "now": "2024-05-01T10:00:00Z",
        "plan": None,
        "snapshot": None,
        "address": None,
        "reason": None,
        "expires": None,
    }

    result = blocklist_state.run(params, write=True, warn=warnings.append)

    assert result["counts"]["added"] == 1
    assert result["counts"]["capped"] == 1
    assert len(warnings) == 1
    assert "max_new=1" in warnings[0]
    assert not state_dir.exists()


# Commit


def test_commit_writes_state_and_snapshot(blocklist: BlockListState, state_dir: Path) -> None:
    result = cycle(blocklist, [B, A])

    assert result["changed"] is True
    assert (result["generation"], result["snapshot"]) == (1, 1)
    state = json.loads((state_dir / "state.json").read_text())
    snapshot = json.loads((state_dir / "snapshots" / "000001.json").read_text())
    assert state["version"] == 1
    assert (state["generation"], state["snapshot"]) == (1, 1)
    assert sorted(state["entries"]) == sorted([A, B])
    assert snapshot["blocklist"] == [A, B]
    assert (snapshot["snapshot"], snapshot["generation"]) == (1, 1)
    assert snapshot["entries"] == state["entries"]


def test_commit_of_an_unchanged_plan_writes_nothing(
    blocklist: BlockListState, state_dir: Path
) -> None:
    cycle(blocklist, [A])
    before = tree(state_dir)

    result = cycle(blocklist, [A])

    assert result["changed"] is False
    assert tree(state_dir) == before


def test_committing_the_same_plan_twice_is_idempotent(blocklist: BlockListState) -> None:
    planned = plan(blocklist, [A]).payload()

    first = blocklist.commit(planned, write=True)
    second = blocklist.commit(planned, write=True)

    assert (first["changed"], second["changed"]) == (True, False)
    assert second["generation"] == 1


def test_renewal_only_moves_the_generation(blocklist: BlockListState, state_dir: Path) -> None:
    cycle(blocklist, [A])

    result = cycle(blocklist, [A], now=at(600))

    assert (result["changed"], result["generation"], result["snapshot"]) == (True, 2, 1)
    assert result["snapshot_file"] is None
    assert sorted(os.listdir(state_dir / "snapshots")) == ["000001.json"]


def test_files_are_private(blocklist: BlockListState, state_dir: Path) -> None:
    cycle(blocklist, [A])

    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((state_dir / "snapshots").stat().st_mode) == 0o700
    for path in (state_dir / "state.json", state_dir / "snapshots" / "000001.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [name for name in os.listdir(state_dir) if name.endswith(".tmp")]


def test_overlapping_plans_conflict(blocklist: BlockListState, state_dir: Path) -> None:
    cycle(blocklist, [A])
    first = plan(blocklist, [A, B], now=at(60)).payload()
    second = plan(blocklist, [A, C], now=at(60)).payload()
    blocklist.commit(first, write=True)
    committed = tree(state_dir)

    with pytest.raises(
        ConflictError,
        match=r"another run changed the block list state since this plan .*rerun the cycle",
    ):
        blocklist.commit(second, write=True)

    assert tree(state_dir) == committed


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param(None, "not a block list plan", id="none"),
        pytest.param({"version": 2}, "not a block list plan", id="other-version"),
        pytest.param({"version": 1, "entries": {}}, "no based_on_generation", id="no-generation"),
        pytest.param(
            {"version": 1, "based_on_generation": 0, "entries": {"flush ruleset": {}}},
            "not a canonical address",
            id="text-as-address",
        ),
        pytest.param(
            {"version": 1, "based_on_generation": 0, "entries": {"2001:DB8::1": {}}},
            "not a canonical address",
            id="address-not-canonical",
        ),
    ],
)
def test_commit_refuses_a_damaged_plan(
    blocklist: BlockListState, state_dir: Path, payload: object, message: str
) -> None:
    with pytest.raises(StateError, match=message):
        blocklist.commit(payload, write=True)

    assert not state_dir.exists()


def _commit_many(state_dir: str, worker: int, count: int, results: Any) -> None:
    """One of two overlapping runs: plan, commit, replan on conflict."""
    blocklist = BlockListState(state_dir)
    done = conflicts = 0
    while done < count:
        ip = f"10.{worker}.0.{done + 1}"
        planned = blocklist.plan(
            candidates=[candidate(ip)], ttl="1d", max_new=10, never_block=[], now=T0
        )
        try:
            blocklist.commit(planned.payload(), write=True)
        except ConflictError:
            conflicts += 1
            continue
        done += 1
    results.put((worker, conflicts))


def test_concurrent_commits_never_corrupt_the_state(state_dir: Path) -> None:
    count = 15
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [
        context.Process(target=_commit_many, args=(str(state_dir), worker, count, results))
        for worker in (1, 2)
    ]
    for process in workers:
        process.start()

    torn_reads = 0
    while any(process.is_alive() for process in workers):
        try:
            json.loads((state_dir / "state.json").read_text())
        except FileNotFoundError:
            pass
        except ValueError:
            torn_reads += 1
    for process in workers:
        process.join(timeout=120)

    assert [process.exitcode for process in workers] == [0, 0]
    assert sorted(results.get(timeout=5)[0] for _ in workers) == [1, 2]
    assert torn_reads == 0
    state = json.loads((state_dir / "state.json").read_text())
    assert state["generation"] == 2 * count
    assert len(state["entries"]) == 2 * count
    assert BlockListState(str(state_dir)).store.snapshot_numbers() == list(range(1, 2 * count + 1))
    for number in range(1, 2 * count + 1):
        snapshot = json.loads((state_dir / "snapshots" / f"{number:06d}.json").read_text())
        assert len(snapshot["blocklist"]) == number
    assert not [name for name in os.listdir(state_dir) if name.endswith(".tmp")]


# Rollback


@pytest.fixture
def three_snapshots(blocklist: BlockListState) -> BlockListState:
    cycle(blocklist, [A])
    cycle(blocklist, [A, B], now=at(60))
    cycle(blocklist, [A, B, C], now=at(120))
    return blocklist


ROLLBACKS = [
    pytest.param(None, [A, B], [], [(C, "rollback")], id="default-is-the-one-before"),
    pytest.param(1, [A], [], [(B, "rollback"), (C, "rollback")], id="named-snapshot"),
    pytest.param(3, [A, B, C], [], [], id="current-snapshot-changes-no-list"),
]


@pytest.mark.parametrize(("snapshot", "blocklist_after", "added", "removed"), ROLLBACKS)
def test_rollback_plans_the_snapshot(
    three_snapshots: BlockListState,
    snapshot: int | None,
    blocklist_after: list[str],
    added: list[str],
    removed: list[tuple[str, str]],
) -> None:
    planned = three_snapshots.rollback(snapshot=snapshot, never_block=[], now=at(180))
    result = planned.result(state_file="state.json")

    assert result["blocklist"] == blocklist_after
    assert [item["ip"] for item in result["added"]] == added
    assert [(item["ip"], item["reason"]) for item in result["removed"]] == removed
    assert result["rollback_to"] == (snapshot or 2)
    assert set(result) >= {"added", "removed", "renewed", "capped", "generation", "plan", "diff"}


def test_committing_a_rollback_records_a_new_snapshot(three_snapshots: BlockListState) -> None:
    planned = three_snapshots.rollback(snapshot=1, never_block=[], now=at(180))

    result = three_snapshots.commit(planned.payload(), write=True)

    assert (result["changed"], result["snapshot"], result["generation"]) == (True, 4, 4)
    assert three_snapshots.store.read_snapshot(4).blocklist == [A]
    assert three_snapshots.store.read_snapshot(4).restores == 1
    again = three_snapshots.rollback(snapshot=None, never_block=[], now=at(240))
    assert again.blocklist == [A]
    assert not again.changed


def test_repeating_the_default_rollback_changes_nothing(three_snapshots: BlockListState) -> None:
    first = three_snapshots.rollback(snapshot=None, never_block=[], now=at(180))
    three_snapshots.commit(first.payload(), write=True)

    second = three_snapshots.rollback(snapshot=None, never_block=[], now=at(240))

    assert first.extra["rollback_to"] == 2
    assert second.extra["rollback_to"] == 2
    assert not second.changed
    assert three_snapshots.commit(second.payload(), write=True)["changed"] is False


def test_rollback_to_a_missing_snapshot_lists_the_available(
    three_snapshots: BlockListState,
) -> None:
    with pytest.raises(StateError, match=r"snapshot 9 does not exist .*available: 1, 2, 3"):
        three_snapshots.rollback(snapshot=9, never_block=[], now=at(180))


def test_rollback_of_the_first_push_returns_to_the_empty_list(blocklist: BlockListState) -> None:
    cycle(blocklist, [A])

    planned = blocklist.rollback(snapshot=None, never_block=[], now=at(60))

    assert planned.extra["rollback_to"] == 0
    assert planned.blocklist == []
    assert blocklist.commit(planned.payload(), write=True)["snapshot"] == 2


def test_rollback_before_any_push_fails(blocklist: BlockListState) -> None:
    with pytest.raises(StateError, match="nothing to roll back"):
        blocklist.rollback(snapshot=None, never_block=[], now=at(60))


def test_rollback_leaves_out_never_block_networks(three_snapshots: BlockListState) -> None:
    planned = three_snapshots.rollback(snapshot=2, never_block=["198.51.100.0/24"], now=at(180))

    assert planned.blocklist == [A]
    assert [item["ip"] for item in planned.refused] == [B]


# Unblock


UNBLOCKS = [
    pytest.param(B, [A, C], [B], "198.51.100.7", True, id="one-address"),
    pytest.param("192.0.2.0/24", [B, C], [A], "192.0.2.0/24", True, id="a-network"),
    pytest.param("2001:db8::99", [A, B, C], [], "2001:db8::99", False, id="not-blocked"),
    pytest.param("::ffff:203.0.113.9", [A, B], [C], "203.0.113.9", True, id="mapped-address"),
]


@pytest.mark.parametrize(("address", "left", "removed", "allowed", "changed"), UNBLOCKS)
def test_unblock(
    three_snapshots: BlockListState,
    address: str,
    left: list[str],
    removed: list[str],
    allowed: str,
    changed: bool,
) -> None:
    planned = three_snapshots.unblock(
        address=address, reason="ticket 4711", expires="7d", now=at(180)
    )
    result = planned.result(state_file="state.json")

    assert result["blocklist"] == left
    assert [(item["ip"], item["reason"]) for item in result["removed"]] == [
        (ip, "unblocked") for ip in removed
    ]
    assert result["unblocked"] == {
        "address": allowed,
        "reason": "ticket 4711",
        "expires": "2024-05-08T10:03:00Z",
    }
    assert result["changed"] is changed


@pytest.mark.parametrize(
    ("address", "reason", "expires", "message"),
    [
        pytest.param("mail.example.org", "x", None, "not an address", id="a-name"),
        pytest.param("192.0.2.1/24", "x", None, "host bits", id="host-bits"),
        pytest.param(A, "", None, "reason is required", id="no-reason"),
        pytest.param(A, "x", "2020-01-01T00:00:00Z", "not after now", id="expired"),
        pytest.param(A, "x", "soon", "not an ISO 8601 time", id="nonsense-expiry"),
    ],
)
def test_unblock_refuses(
    blocklist: BlockListState, address: str, reason: str, expires: str | None, message: str
) -> None:
    with pytest.raises(StateError, match=message):
        blocklist.unblock(address=address, reason=reason, expires=expires, now=T0)


def test_committed_unblock_removes_the_entry(three_snapshots: BlockListState) -> None:
    planned = three_snapshots.unblock(address=C, reason="partner", expires=None, now=at(180))

    result = three_snapshots.commit(planned.payload(), write=True)

    assert result["blocklist"] == [A, B]
    assert three_snapshots.show()["blocklist"] == [A, B]


# Corruption and rebuild


def test_corrupt_state_names_the_file_and_the_fix(
    three_snapshots: BlockListState, state_dir: Path
) -> None:
    (state_dir / "state.json").write_text('{"version": 1, "generation": ')

    with pytest.raises(StateError) as raised:
        plan(three_snapshots, [A], now=at(180))

    assert str(state_dir / "state.json") in str(raised.value)
    assert "action=rebuild" in str(raised.value)


def test_rebuild_restores_the_newest_snapshot(
    three_snapshots: BlockListState, state_dir: Path
) -> None:
    (state_dir / "state.json").write_text("garbage")

    result = three_snapshots.rebuild(write=True)

    assert result["changed"] is True
    assert (result["snapshot"], result["blocklist"]) == (3, [A, B, C])
    assert result["generation"] == 4
    assert plan(three_snapshots, [A, B, C], now=at(120)).changed is False


def test_missing_state_with_snapshots_asks_for_rebuild(
    three_snapshots: BlockListState, state_dir: Path
) -> None:
    (state_dir / "state.json").unlink()

    with pytest.raises(StateError, match=r"missing but .* holds snapshots.*action=rebuild"):
        plan(three_snapshots, [A])
    assert three_snapshots.rebuild(write=True)["blocklist"] == [A, B, C]


def test_rebuild_of_a_sound_state_changes_nothing(
    three_snapshots: BlockListState, state_dir: Path
) -> None:
    before = tree(state_dir)

    assert three_snapshots.rebuild(write=True)["changed"] is False
    assert tree(state_dir) == before


def test_rebuild_without_snapshots_fails(blocklist: BlockListState) -> None:
    with pytest.raises(StateError, match=r"no snapshot in .* to rebuild"):
        blocklist.rebuild(write=True)


# Check mode: nothing on disk changes, not even a directory


READ_ONLY_AND_CHECK_ACTIONS = [
    pytest.param(lambda b: plan(b, [C, D], now=at(4000)), id="plan"),
    pytest.param(
        lambda b: b.commit(plan(b, [C, D], now=at(200)).payload(), write=False),
        id="commit-in-check-mode",
    ),
    pytest.param(lambda b: b.rollback(snapshot=1, never_block=[], now=at(200)), id="rollback"),
    pytest.param(
        lambda b: b.unblock(address=A, reason="x", expires="1d", now=at(200)), id="unblock"
    ),
    pytest.param(lambda b: b.show(), id="show"),
    pytest.param(lambda b: b.rebuild(write=False), id="rebuild-in-check-mode"),
]


@pytest.mark.parametrize("action", READ_ONLY_AND_CHECK_ACTIONS)
def test_check_mode_and_reads_leave_the_tree_byte_identical(
    three_snapshots: BlockListState, state_dir: Path, action: Any
) -> None:
    (state_dir / "state.json").write_text((state_dir / "state.json").read_text())
    before = tree(state_dir)

    try:
        action(three_snapshots)
    finally:
        assert tree(state_dir) == before


def test_check_mode_commit_reports_what_it_would_write(three_snapshots: BlockListState) -> None:
    result = three_snapshots.commit(plan(three_snapshots, [D], now=at(7200)).payload(), write=False)

    assert (result["changed"], result["generation"], result["snapshot"]) == (True, 4, 4)
    assert result["snapshot_file"].endswith("000004.json")
    assert three_snapshots.store.snapshot_numbers() == [1, 2, 3]


def test_check_mode_commit_does_not_create_the_state_dir(
    blocklist: BlockListState, state_dir: Path
) -> None:
    result = blocklist.commit(plan(blocklist, [A]).payload(), write=False)

    assert result["changed"] is True
    assert not state_dir.exists()


# Diff and show


def test_plan_diff_lists_one_address_a_line(blocklist: BlockListState) -> None:
    cycle(blocklist, [A, B])

    diff = plan(blocklist, [B, C], now=at(3600)).result(state_file="/s/state.json")["diff"]

    assert diff["before"] == f"{A}\n{B}\n"
    assert diff["after"] == f"{B}\n{C}\n"
    assert diff["before_header"].startswith("/s/state.json (generation 1")
    assert diff["after_header"].startswith("/s/state.json (planned by plan")


def test_show_summarises(three_snapshots: BlockListState) -> None:
    summary = three_snapshots.show()

    assert summary["changed"] is False
    assert (summary["generation"], summary["snapshot"], summary["count"]) == (3, 3, 3)
    assert summary["snapshots"] == [1, 2, 3]
    assert summary["next_expiry"] == "2024-05-01T11:02:00Z"


# Inputs


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(3600, 3600), ("90", 90), ("90s", 90), ("30m", 1800), ("24h", 86400), ("7D", 604800)],
)
def test_ttl_forms(value: object, seconds: int) -> None:
    assert parse_duration(value, what="ttl") == seconds


@pytest.mark.parametrize("value", ["1w", "-5", "", "h", 0, -1, True, None, "1.5h"])
def test_ttl_refused(value: object) -> None:
    with pytest.raises(StateError, match="ttl"):
        parse_duration(value, what="ttl")


def test_naive_now_is_utc() -> None:
    assert parse_time("2024-05-01T12:00:00", what="now") == parse_time(
        "2024-05-01T14:00:00+02:00", what="now"
    )


BAD_CANDIDATES = [
    pytest.param("203.0.113.9", "expected a dict", id="a-bare-string"),
    pytest.param(candidate("mail.example.org"), "ip is not an IPv4 or IPv6 address", id="a-name"),
    pytest.param(candidate("192.0.2.1\nflush ruleset"), "ip is not", id="injected-newline"),
    pytest.param(candidate("192.0.2.0/24"), "ip is not", id="a-network"),
    pytest.param(candidate("fe80::1%eth0"), "ip is not", id="zone-id"),
    pytest.param({**candidate(A), "ip": None}, "ip is not", id="no-ip"),
    pytest.param({**candidate(A), "rule": ""}, "rule must be", id="no-rule"),
    pytest.param({**candidate(A), "rules": "cond1"}, "rules must be", id="rules-not-a-list"),
    pytest.param({**candidate(A), "reason": None}, "reason must", id="no-reason"),
    pytest.param({**candidate(A), "ptr": 7}, "ptr must", id="ptr-not-a-name"),
    pytest.param({**candidate(A), "sessions": "many"}, "sessions must be a number", id="words"),
    pytest.param({**candidate(A), "risk": -1}, "risk must be a number", id="negative-risk"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_CANDIDATES)
def test_bad_candidates_fail_naming_the_entry(
    blocklist: BlockListState, bad: object, message: str
) -> None:
    with pytest.raises(StateError) as raised:
        blocklist.plan(candidates=[candidate(B), bad], ttl="1h", max_new=10, never_block=[], now=T0)

    assert str(raised.value).startswith("candidate 1 ")
    assert message in str(raised.value)


def test_bad_never_block_network_fails(blocklist: BlockListState) -> None:
    with pytest.raises(StateError, match="never_block: 'campus'"):
        plan(blocklist, [A], never_block=["campus"])


# Sparing after the fact: a source spared this cycle, or allowlisted, leaves at once.


def test_a_source_spared_this_cycle_leaves_the_block_list(blocklist: BlockListState) -> None:
    cycle(blocklist, [A, C])  # C was blocked while DNS was down

    planned = blocklist.plan(
        candidates=[candidate(A)],
        ttl="1h",
        max_new=1000,
        never_block=[],
        spared_sources=[{"ip": C, "reason": "domestic sender: mail.example.ac.jp"}],
        now=at(60),
    )

    assert planned.blocklist == [A]
    assert planned.removed == [
        {"ip": C, "reason": "spared", "detail": "domestic sender: mail.example.ac.jp"}
    ]


@pytest.mark.parametrize(
    ("allowlist", "kept"),
    [
        (["203.0.113.0/24"], [A]),
        ([{"network": "203.0.113.9/32", "reason": "partner"}], [A]),
        ([{"network": "203.0.113.9", "reason": "old partner", "expires": "2000-01-01"}], [A, C]),
        ([], [A, C]),
    ],
)
def test_allowlisted_entries_leave_before_their_expiry(
    blocklist: BlockListState, allowlist: list, kept: list[str]
) -> None:
    cycle(blocklist, [A, C])

    planned = blocklist.plan(
        candidates=[candidate(A), candidate(C)],
        ttl="1h",
        max_new=1000,
        never_block=[],
        allowlist=allowlist,
        now=at(60),
    )

    assert planned.blocklist == kept


def test_a_bad_allowlist_entry_is_named(blocklist: BlockListState) -> None:
    with pytest.raises(StateError, match="allowlist: 'partner.example'"):
        blocklist.plan(
            candidates=[], ttl="1h", max_new=10, never_block=[], allowlist=["partner.example"],
            now=at(0),
        )
