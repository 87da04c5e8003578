"""playbooks/report.yml over stored cycle reports with known counts, per day and per month."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._report import (
    build_report,
    write_report,
)

ROOT = Path(__file__).resolve().parents[2]
# (check time, occupancy at the check, sources added): two months, four days, one rerun.
STORED = [
    ("2026-10-31T23:30:00+00:00", 52.0, ["203.0.113.1"]),
    ("2026-11-01T00:00:00+00:00", 47.5, ["203.0.113.2", "203.0.113.3"]),
    ("2026-11-01T00:30:00+00:00", 18.0, []),
    ("2026-11-01T00:30:00+00:00", 18.0, []),  # the same check stored again
    ("2026-11-03T12:00:00+00:00", 40.0, ["2001:db8::7"]),  # at 40%, not above
    ("2026-11-03T12:30:00+00:00", 63.1, ["203.0.113.3"]),  # blocked again after expiry
]


@pytest.fixture(scope="module")
def reports_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("stored") / "cycles"
    for end, current, added in STORED:
        report = build_report(
            gateways={"gw1": {
                "occupancy": {"capacity": 200, "current": current, "peak": current,
                              "peak_at": end, "mean": current},
                "alert": current > 40, "triggered": current > 20,
                "stats": {"window_start": end, "window_end": end}}},
            spare={}, plan={"added": [{"ip": ip} for ip in added]}, devices={},
            trigger_occupancy=20, alert_occupancy=40,
            written_at=dt.datetime.fromisoformat(end),
        )  # fmt: skip
        write_report(report, directory=str(directory), written_at=dt.datetime.fromisoformat(end))
    return directory


def run_report(reports_dir: Path, dest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    extra = {"smtpguard_work_dir": str(dest.parent), "notify_report_dir": str(reports_dir),
             "notify_period_dest": str(dest)}  # fmt: skip
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/report.yml",
               "-e", json.dumps(extra), *args]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_per_day(reports_dir, tmp_path):
    dest = tmp_path / "days"
    done = run_report(reports_dir, dest, "-e", "notify_period_by=day")
    assert done.returncode == 0, done.stdout + done.stderr

    summary = json.loads(dest.with_suffix(".json").read_text())
    assert [(row["period"], row["checks"], row["above"], row["blocked"])
            for row in summary["periods"]] == [
        ("2026-10-31", 1, 1, 1),
        ("2026-11-01", 2, 1, 2),
        ("2026-11-02", 0, 0, 0),
        ("2026-11-03", 2, 1, 2),
    ]  # fmt: skip
    assert summary["totals"] == {"checks": 5, "above": 3, "blocked": 4}
    page = dest.with_suffix(".html").read_text()
    assert "<svg" in page and "<td>2026-11-02</td>" in page


def test_per_month_in_tokyo(reports_dir, tmp_path):
    # 2026-10-31T23:30Z is 1 November in Tokyo.
    dest = tmp_path / "months"
    done = run_report(reports_dir, dest, "-e", "notify_period_timezone=Asia/Tokyo")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(dest.with_suffix(".json").read_text())
    assert [(row["period"], row["checks"], row["above"], row["blocked"])
            for row in summary["periods"]] == [("2026-11", 5, 3, 4)]  # fmt: skip
    assert "2026-11  5  3  4" in done.stdout


def test_check_mode_writes_nothing(reports_dir, tmp_path):
    dest = tmp_path / "dry"
    done = run_report(reports_dir, dest, "--check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not dest.with_suffix(".json").exists() and not dest.with_suffix(".html").exists()
    assert "check mode: nothing written" in done.stdout


def test_bad_stored_reports_are_left_out_with_a_warning_each(reports_dir, tmp_path):
    spoiled = tmp_path / "cycles"
    shutil.copytree(reports_dir, spoiled)
    [first, second, third, *_] = sorted(spoiled.glob("cycle-*.json"))
    for path, change in (
        (first, lambda data: data.update(gateways="x")),
        (second, lambda data: data["run"].update(check_time="1900-01-01T00:00:00+00:00")),
        (third, lambda data: data["decision"].update(added=[["a"]])),
    ):
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    dest = tmp_path / "months"
    done = run_report(spoiled, dest)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output

    for path in (first, second, third):
        assert f"left out the report {path.name}: " in output
    summary = json.loads(dest.with_suffix(".json").read_text())
    assert summary["reports"] == len(STORED) - 3
    assert [row["period"] for row in summary["periods"]] == ["2026-11"]


def test_an_unknown_time_zone_names_the_setting(reports_dir, tmp_path):
    done = run_report(reports_dir, tmp_path / "x", "-e", "notify_period_timezone=Mars/Olympus")
    assert done.returncode != 0
    assert "notify_period_timezone: 'Mars/Olympus' is not an IANA time zone" in done.stdout
