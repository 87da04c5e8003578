"""Evidence reports: their content, the escaping of hostile names, retention, period summaries."""

from __future__ import annotations

import datetime as dt
import json
import os
import re

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._report import (
    REPORT_NAME,
    ReportError,
    build_report,
    load_reports,
    occupancy_svg,
    period_summary,
    prune,
    render_cycle_html,
    render_period_html,
    write_report,
)

UTC = dt.UTC
HOSTILE = "<script>alert('x')</script>&\"evil\".example"


def analysis(*, end: str, current: float, alert: bool = False, servers: object = None) -> dict:
    result = {
        "occupancy": {"capacity": 100, "current_sessions": int(current), "current": current,
                      "peak": current + 5, "peak_at": end, "mean": current / 2},
        "triggered": current > 20,
        "alert": alert,
        "forced": False,
        "candidates": [],
        "rules": [{"name": "cond1", "min_duration": 20, "min_sessions": 40, "min_risk": 95}],
        "stats": {"window_start": end, "window_end": end, "covered_start": end, "skipped": 0,
                  "seconds": 0.5},
    }  # fmt: skip
    if servers is not None:
        result["servers"] = servers
    return result


def cycle(end: str, *, current: float, added: list[str], gateway: str = "gw1") -> dict:
    return build_report(
        gateways={gateway: analysis(end=end, current=current, alert=current > 40)},
        spare={"block": [], "spared": []},
        plan={"added": [{"ip": ip} for ip in added], "blocklist": added},
        devices={},
        trigger_occupancy=20,
        alert_occupancy=40,
        written_at=dt.datetime.fromisoformat(end),
    )


SPARE = {
    "block": [
        {"ip": "203.0.113.10", "rule": "cond3", "rules": ["cond3"], "sessions": 320,
         "qualifying_sessions": 320, "longest_session": 1, "open_sessions": 0, "risk": 0.0,
         "ptr": HOSTILE, "ptr_status": "unconfirmed", "reason": f"cond3; PTR {HOSTILE}"},
        {"ip": "203.0.113.40", "rule": "cond1", "rules": ["cond1"], "sessions": 45,
         "qualifying_sessions": 44, "longest_session": 40, "open_sessions": 1, "risk": 96.0,
         "ptr": None, "ptr_status": "none", "reason": "cond1: no PTR record"},
    ],
    "spared": [
        {"ip": "203.0.113.9", "rule": "cond1", "sessions": 50, "qualifying_sessions": 41,
         "longest_session": 30, "risk": 95.0, "ptr": "mail.example.ac.jp",
         "ptr_status": "confirmed", "reason": "domestic sender: mail.example.ac.jp"},
    ],
    "stats": {"seconds": 0.2},
}  # fmt: skip
PLAN = {
    "added": [{"ip": "203.0.113.10"}],
    "renewed": [{"ip": "203.0.113.40"}],
    "removed": [{"ip": "198.51.100.7", "reason": "expired", "detail": "2026-12-02T16:00:00Z"}],
    "capped": [],
    "blocklist": ["203.0.113.10", "203.0.113.40"],
    "plan": {"next_snapshot": 7},
}


@pytest.fixture
def report() -> dict:
    return build_report(
        gateways={"gw1": analysis(end="2026-12-03T16:41:24+00:00", current=45.0, alert=True,
                                  servers={"mx<1>": {"current": 12.0, "peak": 22.0}})},
        spare=SPARE,
        plan=PLAN,
        devices={"ips1": {"platform": "nftables", "dest": "/etc/x.nft", "pushed": True,
                          "fit": {"networks": ["203.0.113.10", "203.0.113.40"], "warning": None}},
                 "border1": {"platform": "ios", "pushed": True, "fit": {"networks": []},
                             "result": {"added": ["203.0.113.10"], "removed": [],
                                        "messages": [HOSTILE]}}},
        trigger_occupancy=20,
        alert_occupancy=40,
        written_at=dt.datetime(2026, 12, 3, 16, 42, tzinfo=UTC),
        run_kind="emergency",
    )  # fmt: skip


def test_report_records_each_candidate_with_verdict_and_evidence(report):
    rows = {row["ip"]: row for row in report["candidates"]}
    assert rows["203.0.113.10"]["verdict"] == "blocked (new)"
    assert rows["203.0.113.40"]["verdict"] == "blocked (renewed)"
    assert rows["203.0.113.9"]["verdict"] == "spared"
    assert rows["203.0.113.9"]["forward_confirmed"] is True
    assert rows["203.0.113.40"]["longest_session"] == 40
    assert rows["203.0.113.40"]["risk"] == 96.0
    assert report["decision"]["snapshot"] == 7
    assert report["decision"]["removed"][0]["reason"] == "expired"
    assert report["run"] == {"kind": "emergency", "check_time": "2026-12-03T16:41:24+00:00",
                             "written_at": "2026-12-03T16:42:00+00:00"}  # fmt: skip


def test_report_names_each_device_with_its_delta(report):
    devices = {device["name"]: device for device in report["devices"]}
    assert devices["border1"]["added"] == ["203.0.113.10"]  # the device's own delta
    assert devices["ips1"]["added"] == ["203.0.113.10"]  # the plan's delta
    assert devices["ips1"]["removed"] == ["198.51.100.7"]
    assert devices["ips1"]["diff"] == "-198.51.100.7\n+203.0.113.10\n"
    assert devices["ips1"]["entries"] == 2


def test_report_takes_servers_as_mapping_or_list():
    for servers in ({"mx1": {"current": 3.0}}, [{"name": "mx1", "current": 3.0}],
                    [{"name": "mx1", "occupancy": {"current": 3.0}}]):  # fmt: skip
        gateway = build_report(
            gateways={"gw1": analysis(end="2026-12-03T16:41:24+00:00", current=5.0,
                                      servers=servers)},
            spare={}, plan={}, devices={}, trigger_occupancy=20, alert_occupancy=40,
            written_at=dt.datetime(2026, 12, 3, tzinfo=UTC),
        )["gateways"][0]  # fmt: skip
        assert [(row["name"], row["current"]) for row in gateway["servers"]] == [("mx1", 3.0)]


def test_html_escapes_every_hostile_string(report):
    page = render_cycle_html(report)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&#34;evil&#34;.example" in page
    assert "mx&lt;1&gt;" in page
    assert page.count("203.0.113.10") >= 2


def test_html_is_self_contained_with_an_inline_chart(report):
    page = render_cycle_html(report)
    assert "<svg" in page and "</svg>" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<link" not in page and "<script" not in page
    chart = occupancy_svg(report)
    assert "trigger 20" in chart and "alert 40" in chart
    assert "peak 50.0%" in chart and "at the check 45.0%" in chart


def test_chart_draws_a_series_when_the_analysis_has_one():
    result = analysis(end="2026-12-03T16:41:24+00:00", current=30.0)
    result["occupancy"]["series"] = [{"at": "2026-12-03T16:30:00+00:00", "percent": 10.0},
                                     ["2026-12-03T16:35:00+00:00", 60.0]]  # fmt: skip
    report = build_report(gateways={"gw1": result}, spare={}, plan={}, devices={},
                          trigger_occupancy=20, alert_occupancy=40,
                          written_at=dt.datetime(2026, 12, 3, tzinfo=UTC))  # fmt: skip
    assert report["gateways"][0]["series"][1] == ["2026-12-03T16:35:00+00:00", 60.0]
    assert "<polyline" in occupancy_svg(report)


def test_written_report_reads_back(tmp_path, report):
    paths = write_report(report, directory=str(tmp_path), written_at=dt.datetime(2026, 12, 3))
    assert REPORT_NAME.match(os.path.basename(paths["json"]))
    assert json.loads(open(paths["json"]).read()) == report
    assert open(paths["html"]).read().startswith("<!DOCTYPE html>")
    assert load_reports(str(tmp_path)) == ([report], [])


def _runs(directory, stamps: list[str]) -> None:
    for stamp in stamps:
        for suffix in ("json", "html"):
            (directory / f"cycle-{stamp}-abcdef.{suffix}").write_text("{}")


@pytest.mark.parametrize(
    ("keep_days", "keep_files", "kept"),
    [
        (0, 0, ["20261203T120000Z", "20261130T120000Z", "20261101T120000Z"]),
        (0, 2, ["20261203T120000Z", "20261130T120000Z"]),
        (7, 0, ["20261203T120000Z", "20261130T120000Z"]),
        (7, 1, ["20261203T120000Z"]),
        (60, 5, ["20261203T120000Z", "20261130T120000Z", "20261101T120000Z"]),
    ],
)
def test_retention_by_age_and_count(tmp_path, keep_days, keep_files, kept):
    _runs(tmp_path, ["20261101T120000Z", "20261130T120000Z", "20261203T120000Z"])
    (tmp_path / "analysis-gw1.json").write_text("{}")  # not a cycle report: never touched
    now = dt.datetime(2026, 12, 3, 13, tzinfo=UTC)

    prune(str(tmp_path), keep_days=keep_days, keep_files=keep_files, now=now)

    left = sorted({name[6:22] for name in os.listdir(tmp_path) if name.startswith("cycle-")})
    assert left == sorted(kept)
    assert (tmp_path / "analysis-gw1.json").exists()
    assert all((tmp_path / f"cycle-{stamp}-abcdef.html").exists() for stamp in kept)


# Known counts: 2026-11-30 has 2 checks (1 above 40%), 2026-12-01 none, 2026-12-03 has 3
# checks on two gateways (2 above) plus a rerun of one of them that must not count again.
SYNTHETIC = [
    ("2026-11-30T10:00:00+00:00", 45.0, ["203.0.113.1", "203.0.113.2"], "gw1"),
    ("2026-11-30T10:30:00+00:00", 12.0, [], "gw1"),
    ("2026-12-03T09:00:00+00:00", 55.0, ["203.0.113.3"], "gw1"),
    ("2026-12-03T09:00:00+00:00", 55.0, [], "gw1"),  # the same check again
    ("2026-12-03T09:00:00+00:00", 41.0, ["203.0.113.3", "203.0.113.4"], "gw2"),
    ("2026-12-03T23:30:00+00:00", 39.9, ["203.0.113.5"], "gw1"),
]


@pytest.fixture
def stored() -> list[dict]:
    return [cycle(end, current=value, added=added, gateway=gateway)
            for end, value, added, gateway in SYNTHETIC]  # fmt: skip


def test_period_summary_per_day(stored):
    summary = period_summary(stored, by="day", timezone="UTC", above=40)
    rows = {
        row["period"]: (row["checks"], row["above"], row["blocked"]) for row in summary["periods"]
    }
    assert rows == {
        "2026-11-30": (2, 1, 2),
        "2026-12-01": (0, 0, 0),
        "2026-12-02": (0, 0, 0),
        "2026-12-03": (3, 2, 3),
    }
    assert summary["totals"] == {"checks": 5, "above": 3, "blocked": 5}


def test_period_summary_per_month_in_a_time_zone(stored):
    # In Tokyo (UTC+9) the check at 2026-12-03T23:30Z falls on 4 December; months don't move.
    by_day = period_summary(stored, by="day", timezone="Asia/Tokyo")
    assert [row["period"] for row in by_day["periods"]][-1] == "2026-12-04"
    by_month = period_summary(stored, by="month", timezone="Asia/Tokyo", above=40)
    assert [(row["period"], row["checks"], row["above"], row["blocked"])
            for row in by_month["periods"]] == [("2026-11", 2, 1, 2), ("2026-12", 3, 2, 3)]


def test_period_summary_spans_a_year_end():
    reports = [cycle("2026-11-15T00:00:00+00:00", current=50, added=["192.0.2.1"]),
               cycle("2027-02-01T00:00:00+00:00", current=10, added=[])]  # fmt: skip
    months = [row["period"] for row in period_summary(reports, by="month")["periods"]]
    assert months == ["2026-11", "2026-12", "2027-01", "2027-02"]


def test_period_page_holds_the_table_and_both_series(stored):
    summary = period_summary(stored, by="day")
    page = render_period_html(summary)
    assert "<svg" in page and "checks above 40.0%" in page and "sources blocked" in page
    assert "<td>2026-12-03</td>" in page


@pytest.mark.parametrize(("by", "timezone"), [("week", "UTC"), ("day", "Mars/Olympus")])
def test_period_summary_refuses_unknown_settings(stored, by, timezone):
    with pytest.raises(ReportError):
        period_summary(stored, by=by, timezone=timezone)


def _store(directory, reports: dict[str, object]) -> None:
    for stamp, data in reports.items():
        (directory / f"cycle-{stamp}-abcdef.json").write_text(json.dumps(data))


def _broken(change) -> dict:
    data = json.loads(json.dumps(cycle("2026-12-03T09:00:00+00:00", current=50,
                                       added=["203.0.113.7"])))  # fmt: skip
    change(data)
    return data


BROKEN = {
    "gateways is a string": lambda data: data.update(gateways="x"),
    "current is a word": lambda data: data["gateways"][0]["occupancy"].update(current="high"),
    "added holds a list": lambda data: data["decision"].update(added=[["a"]]),
    "check time in 1900": lambda data: data["run"].update(check_time="1900-01-01T00:00:00Z"),
    "window end in 1900": lambda data: data["gateways"][0].update(window_end="1900-01-01"),
    "check time unreadable": lambda data: data["run"].update(check_time="yesterday"),
    "check time next year": lambda data: data["run"].update(check_time="2027-12-03T00:00:00Z"),
    "run is a list": lambda data: data.update(run=[]),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_one_bad_stored_report_is_left_out_by_name(tmp_path, case):
    good = cycle("2026-12-02T09:00:00+00:00", current=45, added=["203.0.113.1"])
    _store(tmp_path, {"20261202T090000Z": good, "20261203T090000Z": _broken(BROKEN[case])})

    reports, left_out = load_reports(str(tmp_path), now=dt.datetime(2026, 12, 3, 12, tzinfo=UTC))

    assert reports == [good]
    assert len(left_out) == 1 and left_out[0].startswith("cycle-20261203T090000Z-abcdef.json: ")
    summary = period_summary(reports, by="month")
    assert [row["period"] for row in summary["periods"]] == ["2026-12"]


def test_each_gateway_keeps_its_own_levels_in_the_report_and_chart():
    end = "2026-12-03T16:41:24+00:00"
    report = build_report(
        gateways={"gw1.demo": analysis(end=end, current=30.0),
                  "gw2.demo": analysis(end=end, current=30.0, alert=True)},
        spare={}, plan={}, devices={}, trigger_occupancy=20, alert_occupancy=80,
        levels={"gw1.demo": {"trigger": 20, "alert": 80}, "gw2.demo": {"alert": 25}},
        written_at=dt.datetime(2026, 12, 3, 16, 42, tzinfo=UTC),
    )  # fmt: skip
    assert [row["levels"] for row in report["gateways"]] == [
        {"trigger": 20, "alert": 80}, {"trigger": 20, "alert": 25},
    ]

    chart = occupancy_svg(report)
    assert "alert 80% (gw1.demo)" in chart and "alert 25% (gw2.demo)" in chart
    assert "trigger 20%<" in chart  # a shared level is one line without names
    page = render_cycle_html(report)
    assert "gw2.demo: occupancy above its alert level\n(25%)" in page
    assert "gw1.demo: occupancy above" not in page
