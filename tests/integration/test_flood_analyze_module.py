"""campusnet.smtpguard.flood_analyze run by Ansible itself on a generated gateway log."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from support.logs import (
    CANDIDATE_KEYS,
    NOW,
    NOW_ISO,
    PostfixLog,
    by_source,
    contract,
    run_analysis,
)

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / ".venv" / "bin" / "ansible"
MODULE = "campusnet.smtpguard.flood_analyze"

RULES = [
    {"name": "cond1", "min_duration": 20, "min_sessions": 40, "min_risk": 95},
    {"name": "cond2", "min_duration": "200s", "min_sessions": 1, "min_risk": 95},
    {"name": "cond3", "min_duration": 0, "min_sessions": 300, "min_risk": 0},
]


def run_module(args: dict, *, check: bool = False) -> tuple[str, dict]:
    """Run the module on localhost through `ansible` (cwd: the repository, so that its
    ansible.cfg applies) and return the task's status (SUCCESS, FAILED!) and result."""
    command = [str(ANSIBLE), "localhost", "-m", MODULE, "-a", json.dumps(args)]
    if check:
        command.append("--check")
    environment = {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    }
    done = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300, check=False
    )
    # "localhost | SUCCESS => {...}", after an error report when the task failed.
    _, found, line = done.stdout.partition("localhost | ")
    assert found, done.stdout + done.stderr
    status, _, body = line.partition(" => ")
    assert (status == "SUCCESS") == (done.returncode == 0), done.stdout + done.stderr
    return status, json.loads(body)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """A rotated gateway log with a slow-session flood, a slow-post attacker still
    connected, an IPv6 source and ordinary mail, and a risk file."""
    directory = tmp_path_factory.mktemp("gateway")
    old = PostfixLog()
    old.sessions("203.0.113.9", 45, start=NOW - 1700, duration=25, spacing=10)
    old.write(directory / "mail.log.1.gz", compress=True)

    live = PostfixLog()
    live.session("198.51.100.7", start=NOW - 250, duration=None)
    live.sessions("2001:DB8:0:0::25", 3, start=NOW - 900, duration=30, spacing=60)
    live.sessions("192.0.2.10", 20, start=NOW - 1200, duration=2, spacing=30)
    live.sessions("192.0.2.11", 11, start=NOW - 100, duration=None, spacing=5)
    live.write(directory / "mail.log")

    risk = directory / "risk.csv"
    risk.write_text("ip,risk\n203.0.113.9,96\n198.51.100.7,97\n2001:db8::25,99\n")
    return directory


def _args(gateway: Path, **extra) -> dict:
    return {
        "paths": [str(gateway / "mail.log*")],
        "capacity": 50,
        "now": NOW_ISO,
        "timezone": "UTC",
        "window": "30m",
        "rules": RULES,
        "risk_source": "file",
        "risk_file": str(gateway / "risk.csv"),
        **extra,
    }


def _without_timing(result: dict) -> dict:
    result = {
        key: value
        for key, value in result.items()
        if key not in ("changed", "invocation", "warnings", "deprecations")
    }
    result["stats"] = {key: value for key, value in result["stats"].items() if key != "seconds"}
    return result


def test_module_returns_the_designed_result(gateway):
    status, result = run_module(_args(gateway))

    assert status == "SUCCESS", result
    assert result["changed"] is False
    assert set(result["occupancy"]) >= {
        "capacity",
        "current_sessions",
        "current",
        "peak",
        "peak_at",
        "mean",
    }
    assert set(result["stats"]) >= {
        "lines",
        "parsed",
        "skipped",
        "sessions",
        "open_sessions",
        "distinct_ips",
        "window_start",
        "window_end",
    }
    for candidate in result["candidates"]:
        assert set(candidate) >= set(CANDIDATE_KEYS)

    # 12 sessions open at now of 50: above the trigger (20%), not above the alert (40%).
    assert result["occupancy"]["current_sessions"] == 12
    assert result["occupancy"]["current"] == 24.0
    assert (result["triggered"], result["alert"]) == (True, False)
    assert [contract(candidate) for candidate in result["candidates"]] == [
        {
            "ip": "203.0.113.9",
            "rule": "cond1",
            "rules": ["cond1"],
            "sessions": 45,
            "qualifying_sessions": 45,
            "longest_session": 25,
            "open_sessions": 0,
            "risk": 96.0,
        },
        {
            "ip": "198.51.100.7",
            "rule": "cond2",
            "rules": ["cond2"],
            "sessions": 1,
            "qualifying_sessions": 1,
            "longest_session": 250,
            "open_sessions": 1,
            "risk": 97.0,
        },
    ]
    assert result["stats"]["distinct_ips"] == 5
    assert result["stats"]["window_start"] == "2026-12-03T09:30:00+00:00"
    assert result["stats"]["window_end"] == "2026-12-03T10:00:00+00:00"
    assert result["stats"]["lines"] == result["stats"]["parsed"] == 2 * 45 + 1 + 6 + 40 + 11


def test_module_result_is_the_engines_result(gateway):
    status, result = run_module(_args(gateway))
    engine = run_analysis(
        gateway / "mail.log*",
        **{key: value for key, value in _args(gateway).items() if key != "paths"},
        force=False,
    )

    assert status == "SUCCESS"
    assert _without_timing(result) == _without_timing(json.loads(json.dumps(engine)))


def test_check_mode_gives_the_same_result(gateway):
    status, normal = run_module(_args(gateway))
    check_status, checked = run_module(_args(gateway), check=True)

    assert (status, check_status) == ("SUCCESS", "SUCCESS")
    assert checked["changed"] is False
    assert _without_timing(checked) == _without_timing(normal)


def test_report_path_receives_the_full_per_source_report(gateway, tmp_path):
    report = tmp_path / "reports" / "analysis.json"

    status, result = run_module(_args(gateway, report_path=str(report)))

    assert status == "SUCCESS", result
    written = json.loads(report.read_text())
    assert written["candidates"] == result["candidates"]
    assert written["occupancy"] == result["occupancy"]
    sources = {source["ip"]: source for source in written["sources"]}
    assert set(sources) == {
        "203.0.113.9",
        "198.51.100.7",
        "2001:db8::25",
        "192.0.2.10",
        "192.0.2.11",
    }
    assert sources["2001:db8::25"]["sessions"] == 3
    assert sources["2001:db8::25"]["risk"] == 99.0
    assert oct(report.stat().st_mode & 0o777) == oct(0o644)


@pytest.mark.parametrize(
    ("paths", "named"),
    [
        pytest.param(["missing/mail.log"], "missing/mail.log", id="missing-file"),
        pytest.param(["missing/mail.log*"], "missing/mail.log*", id="empty-glob"),
    ],
)
def test_missing_path_fails_naming_it(gateway, paths, named):
    args = _args(gateway, paths=[str(gateway / path) for path in paths])

    status, result = run_module(args)

    assert status == "FAILED!"
    assert str(gateway / named) in result["msg"]


def test_invalid_rule_fails_with_a_clear_message(gateway):
    args = _args(gateway, rules=[{"name": "r", "min_duration": 0, "min_sessions": 0}])

    status, result = run_module(args)

    assert status == "FAILED!"
    assert result["msg"] == "rule 'r' min_sessions must be at least 1, not 0"


def test_untriggered_run_selects_no_candidates(gateway):
    status, result = run_module(_args(gateway, trigger_occupancy=24))

    assert status == "SUCCESS"
    assert result["triggered"] is False
    assert result["candidates"] == []
    assert result["stats"]["matching_sources"] == 2
    assert by_source(result) == {}
