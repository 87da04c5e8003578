"""The notification's text, its rate limit and the webhook body, without delivering."""

from __future__ import annotations

import datetime as dt

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._notify import (
    compose,
    cycle_facts,
    masked_url,
    summary_due,
    webhook_body,
)

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


def analysis(current: float, *, alert: bool = False, forced: bool = False) -> dict:
    return {"occupancy": {"capacity": 100, "current_sessions": int(current), "current": current,
                          "peak": 60.0, "peak_at": "2026-12-03T11:50:00+00:00"},
            "triggered": True, "alert": alert, "forced": forced,
            "stats": {"window_end": "2026-12-03T12:00:00+00:00", "skipped": 3},
            "servers": {"mx1": {"current": 10.0, "peak": 25.0}}}  # fmt: skip


@pytest.mark.parametrize(
    ("last", "interval", "due"),
    [
        (None, 3600, True),
        ("2026-12-03T11:00:00+00:00", 3600, True),
        ("2026-12-03T11:00:01+00:00", 3600, False),
        ("2026-12-03T11:59:00Z", 0, True),
        ("2026-12-03T13:00:00+00:00", 3600, True),  # clock set back: better early than never
        ("not a time", 3600, True),
    ],
)
def test_summary_due(last, interval, due):
    state = {"last_summary": last} if last else {}
    assert summary_due(state, now=NOW, interval=interval) is due


def test_alert_when_any_gateway_alerts_and_text_names_everything():
    facts = cycle_facts(
        gateways={"gw1": analysis(20.0), "gw2": analysis(45.0, alert=True, forced=True)},
        spare={"block": [{"ip": "203.0.113.5", "rule": "cond2", "sessions": 2,
                          "qualifying_sessions": 1, "longest_session": 300, "risk": 99.0}],
               "spared": [], "stats": {"timeouts": 2}},
        plan={"added": [{"ip": "203.0.113.5"}], "capped": [{"ip": "203.0.113.5"}],
              "removed": [{"ip": "192.0.2.1", "reason": "expired"},
                          {"ip": "192.0.2.2", "reason": "unblocked"}]},
        devices={"ips1": {"pushed": False}},
        run_kind="emergency",
    )  # fmt: skip
    message = compose(facts)

    assert facts.kind == "alert" and facts.expired == 1
    assert message.subject == (
        "[smtpguard] emergency ALERT: gw2 occupancy 45.0% (peak 60.0%), 1 blocked, 0 spared, "
        "FAILURES"
    )
    assert "gw2: occupancy now 45.0% (45 of 100 sessions)" in message.text
    assert "triggered (forced); above the alert level of 40.0%" in message.text
    assert "  server mx1: now 10.0%, peak 25.0%" in message.text
    assert "held back by the cap: 1" in message.text
    assert "held back 203.0.113.5: rule cond2" in message.text
    assert "ips1 did not take the block list" in message.text
    assert "2 DNS look-ups timed out" in message.text
    assert "gw1: 3 log lines could not be parsed" in message.text
    assert message.line.startswith("emergency ALERT: gw1 occupancy 20.0% peak 60.0% triggered;")


def test_summary_below_the_alert_level():
    facts = cycle_facts(gateways={"gw1": analysis(25.0)}, spare={}, plan={})
    assert facts.kind == "summary"
    assert webhook_body(compose(facts))["themeColor"] == "2E7D32"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0/B0/secret", "https://hooks.slack.com/…"),
        ("https://x.webhook.office.com:8443/webhookb2/abc?token=s", "https://x.webhook.office.com:8443/…"),
    ],
)
def test_masked_url_hides_the_token(url, shown):
    assert masked_url(url) == shown
