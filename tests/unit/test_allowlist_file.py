"""The allowlist file: expired entries leave it whenever the state is written, and say so."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from ansible_collections.campusnet.smtpguard.plugins.module_utils._state import (
    BlockListState,
    StateError,
)
from ansible_collections.campusnet.smtpguard.plugins.modules.blocklist_state import run

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
FILE = [
    {"network": "192.0.2.0/24", "reason": "conference", "expires": "2026-11-30T00:00:00Z"},
    {"network": "198.51.100.25", "reason": "partner relay", "expires": "2026-12-31T00:00:00Z"},
    {"network": "2001:db8::/48", "reason": "university", "expires": None},
    {"network": "203.0.113.9", "reason": "ends now", "expires": "2026-12-01T12:00:00Z"},
]


def write(path: Path, entries: list[Any]) -> None:
    path.write_text(yaml.safe_dump(entries, sort_keys=False))


def params(tmp_path: Path, action: str, **values: Any) -> dict[str, Any]:
    base = {
        "state_dir": str(tmp_path / "state"),
        "action": action,
        "candidates": [],
        "ttl": "24h",
        "max_new": 1000,
        "never_block": [],
        "spared": [],
        "allowlist": [],
        "allowlist_file": str(tmp_path / "allowlist.yml"),
        "now": "2026-12-01T12:00:00Z",
        "plan": None,
        "snapshot": None,
        "address": None,
        "reason": None,
        "expires": None,
    }
    return {**base, **values}


def empty_plan(tmp_path: Path) -> dict[str, Any]:
    state = BlockListState(str(tmp_path / "state"))
    plan = state.plan(candidates=[], ttl="24h", max_new=10, never_block=[], now=NOW)
    return plan.result(state_file=state.store.state_file)["plan"]


def test_a_commit_prunes_expired_entries_and_warns(tmp_path: Path) -> None:
    path = tmp_path / "allowlist.yml"
    write(path, FILE)
    warnings: list[str] = []

    done = run(
        params(tmp_path, "commit", plan=empty_plan(tmp_path)), write=True, warn=warnings.append
    )

    kept = yaml.safe_load(path.read_text())
    assert [entry["network"] for entry in kept] == ["198.51.100.25", "2001:db8::/48"]
    assert [entry["network"] for entry in done["allowlist"]["pruned"]] == [
        "192.0.2.0/24",
        "203.0.113.9",
    ]
    assert done["changed"] is True and done["allowlist"]["count"] == 2
    assert len(warnings) == 1 and "2 expired allowlist entries removed" in warnings[0]
    assert "192.0.2.0/24 (conference, expired 2026-11-30T00:00:00Z)" in warnings[0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_check_mode_reports_the_pruning_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "allowlist.yml"
    write(path, FILE)
    before = path.read_bytes()

    done = run(params(tmp_path, "commit", plan=empty_plan(tmp_path)), write=False, warn=print)

    assert len(done["allowlist"]["pruned"]) == 2 and done["changed"] is True
    assert path.read_bytes() == before


def test_nothing_expired_leaves_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "allowlist.yml"
    write(path, FILE[1:3])
    before = (path.read_bytes(), path.stat().st_mtime_ns)

    done = run(params(tmp_path, "commit", plan=empty_plan(tmp_path)), write=True, warn=print)

    assert done["allowlist"] == {
        "file": str(path),
        "changed": False,
        "count": 2,
        "pruned": [],
        "added": None,
    }
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_allowlisting_adds_replaces_and_prunes(tmp_path: Path) -> None:
    path = tmp_path / "allowlist.yml"
    write(path, FILE)

    done = run(
        params(
            tmp_path,
            "allowlist",
            address="198.51.100.25",
            reason="ticket 4711",
            expires="30d",
        ),
        write=True,
        warn=print,
    )
    again = run(
        params(
            tmp_path,
            "allowlist",
            address="198.51.100.25",
            reason="ticket 4711",
            expires=done["allowlist"]["added"]["expires"],
        ),
        write=True,
        warn=print,
    )

    kept = yaml.safe_load(path.read_text())
    assert kept == [
        {"network": "2001:db8::/48", "reason": "university", "expires": None},
        {"network": "198.51.100.25", "reason": "ticket 4711", "expires": "2026-12-31T12:00:00Z"},
    ]
    assert again["changed"] is False


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("network: 192.0.2.1\n", "must be a list"),
        ("- reason: no network\n", "entry 1: each entry needs a network"),
        ("- {network: mail.example.org}\n", "entry 1:"),
        ("- {network: 192.0.2.1, expires: soon}\n", "expires 'soon' is not an ISO 8601 time"),
        ("- [unclosed\n", "is not YAML"),
    ],
)
def test_a_damaged_file_fails_naming_the_entry(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "allowlist.yml"
    path.write_text(content)

    with pytest.raises(StateError, match=message):
        run(params(tmp_path, "commit", plan=empty_plan(tmp_path)), write=True, warn=print)
    assert path.read_text() == content


def test_an_unquoted_yaml_date_is_read_as_midnight_utc(tmp_path: Path) -> None:
    path = tmp_path / "allowlist.yml"
    path.write_text("- {network: 192.0.2.1, reason: fair, expires: 2026-11-01}\n- 192.0.2.2\n")

    done = run(params(tmp_path, "commit", plan=empty_plan(tmp_path)), write=True, warn=print)

    assert done["allowlist"]["pruned"][0]["expires"] == "2026-11-01T00:00:00Z"
    assert yaml.safe_load(path.read_text()) == [
        {"network": "192.0.2.2", "reason": "allowlist", "expires": None}
    ]
