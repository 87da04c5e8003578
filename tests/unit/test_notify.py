"""The notification's text, its rate limit and the webhook body, without delivering."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._notify import (
    MailSettings,
    NotifyError,
    SyslogSettings,
    compose,
    cycle_facts,
    mail_message,
    masked_url,
    post_webhook,
    send_mail,
    send_syslog,
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


def test_a_dry_run_says_so_and_counts_what_it_would_block():
    facts = cycle_facts(gateways={"gw1": analysis(45.0, alert=True)}, spare={},
                        plan={"added": [{"ip": "203.0.113.5"}, {"ip": "203.0.113.6"}]},
                        check_mode=True)  # fmt: skip
    message = compose(facts)

    assert message.subject.startswith(
        "[smtpguard] ALERT (dry run): gw1 occupancy 45.0% (peak 60.0%), 2 to block, 0 spared"
    )
    assert message.line.startswith("ALERT (dry run): gw1 occupancy 45.0%")
    assert "; 2 to block, 0 spared, 0 expired;" in message.line
    assert "DRY RUN: nothing was pushed or recorded" in message.text


def test_a_dry_run_of_a_rerun_names_the_entries_it_would_renew():
    facts = cycle_facts(gateways={"gw1": analysis(45.0, alert=True)}, spare={},
                        plan={"added": [], "renewed": [{"ip": "203.0.113.5"}] * 13},
                        check_mode=True)  # fmt: skip

    assert "(peak 60.0%), 0 to block, 13 to renew, 0 spared" in compose(facts).subject


def test_a_rerun_names_the_entries_it_renewed():
    facts = cycle_facts(gateways={"gw1": analysis(45.0, alert=True)}, spare={},
                        plan={"added": [], "renewed": [{"ip": "203.0.113.5"}] * 13})
    message = compose(facts)

    assert "(peak 60.0%), 0 blocked, 13 renewed, 0 spared" in message.subject
    assert "; 0 blocked, 13 renewed, 0 spared," in message.line


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


def test_a_huge_summary_interval_means_no_second_summary():
    state = {"last_summary": "2026-12-03T11:00:00+00:00"}
    assert summary_due(state, now=NOW, interval=1e300) is False


def test_each_gateway_is_named_against_its_own_alert_level():
    # gw1 alerts at 80 %, gw2 at 25 %: at 30 % only gw2 is in alert.
    facts = cycle_facts(
        gateways={"gw1": analysis(30.0), "gw2": analysis(30.0, alert=True)},
        spare={}, plan={}, alert_occupancy=80.0, alert_levels={"gw1": 80.0, "gw2": 25.0},
    )  # fmt: skip
    message = compose(facts)

    assert message.subject.startswith("[smtpguard] ALERT: gw2 occupancy 30.0% (peak 60.0%),")
    assert "gw1" not in message.subject
    assert "above the alert level of 25.0%" in message.text
    assert "80.0%" not in message.text


def test_an_alert_subject_names_every_gateway_in_alert():
    facts = cycle_facts(
        gateways={"gw1": analysis(50.0, alert=True), "gw2": analysis(70.0, alert=True),
                  "gw3": analysis(90.0)},
        spare={}, plan={},
    )  # fmt: skip
    subject = compose(facts).subject
    assert "gw2 occupancy 70.0% (peak 60.0%), gw1 occupancy 50.0%" in subject
    assert "gw3" not in subject


class _Recorder(http.server.BaseHTTPRequestHandler):
    """/redirect answers 302, /auth demands Basic auth, anything else 200; records requests."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization")))
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST  # noqa: N815 (http.server's name)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def recorder() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_redirecting_webhook_is_a_failure_naming_the_status():
    with recorder() as server:
        url = f"http://127.0.0.1:{server.server_port}/redirect"
        with pytest.raises(NotifyError, match="answered HTTP 302") as caught:
            post_webhook({"text": "x"}, url=url, timeout=5)
        assert server.seen == [("POST", "/redirect", None)]  # the redirect was not followed
    assert "/redirect" not in str(caught.value)


def test_webhook_credentials_go_as_basic_auth_and_never_into_the_error():
    with recorder() as server:
        port = server.server_port
        assert post_webhook({"text": "x"}, url=f"http://bob:p%40w@127.0.0.1:{port}/auth") == 200
        method, path, authorization = server.seen[0]
    assert (method, path) == ("POST", "/auth")
    assert authorization == "Basic " + base64.b64encode(b"bob:p@w").decode()

    with pytest.raises(NotifyError) as caught:
        post_webhook({"text": "x"}, url=f"http://bob:sekret@127.0.0.1:{port}/auth", timeout=2)
    assert "sekret" not in str(caught.value) and f"127.0.0.1:{port}" in str(caught.value)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_mail_error_names_the_relay_host_and_port():
    port = _closed_port()
    settings = MailSettings(host="127.0.0.1", port=port, recipients=["noc@example.org"],
                            sender="smtpguard@example.org", timeout=2)  # fmt: skip
    message = compose(cycle_facts(gateways={"gw1": analysis(25.0)}, spare={}, plan={}))
    with pytest.raises(NotifyError, match=f"relay 127.0.0.1:{port} .*refused"):
        send_mail(message, settings)


def test_a_syslog_error_names_the_host_and_port():
    port = _closed_port()
    message = compose(cycle_facts(gateways={"gw1": analysis(25.0)}, spare={}, plan={}))
    with pytest.raises(NotifyError, match=f"syslog at 127.0.0.1:{port}/tcp failed: .*refused"):
        send_syslog(message, SyslogSettings(address="127.0.0.1", port=port, protocol="tcp"))


def test_line_breaks_in_names_and_reasons_become_spaces_in_every_channel():
    facts = cycle_facts(
        gateways={"gw1\nX-Injected: yes": analysis(45.0, alert=True)},
        spare={"block": [{"ip": "203.0.113.5", "rule": "cond2\r\nrule", "sessions": 2,
                          "qualifying_sessions": 1, "ptr": "mx.evil.example\r\nBcc: x@y.example"}],
               "spared": []},
        plan={"added": [{"ip": "203.0.113.5"}]},
        devices={"ips1": {"pushed": True, "warning": "first line\nsecond line"}},
        failures=["the report\u2028could not be written"], run_kind="emergency\n",
    )  # fmt: skip
    message = compose(facts)
    settings = MailSettings(host="127.0.0.1", recipients=["noc@example.org"],
                            sender="smtpguard@example.org")  # fmt: skip
    mail = mail_message(message, settings)

    assert mail["Subject"].startswith("[smtpguard] emergency  ALERT: gw1 X-Injected: yes occupancy")
    assert mail["X-Injected"] is None and mail["Bcc"] is None
    assert "blocked   203.0.113.5 (mx.evil.example Bcc: x@y.example): rule cond2 rule," in (
        message.text)  # fmt: skip
    assert "  ips1: first line second line\n" in message.text
    assert "  the report could not be written\n" in message.text
    assert "\n" not in message.line and "\r" not in message.line
    body = webhook_body(message)
    assert body["smtpguard"]["top"][0]["ptr"] == "mx.evil.example Bcc: x@y.example"
    assert all(line.startswith(("*", "`", " ", "gw1 ", "smtpguard", "blocked", "top", "failures",
                                "evidence")) or not line
               for line in body["text"].splitlines()), body["text"]  # fmt: skip


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:{port}/services/T0 sekret", r"failed \(InvalidURL\); check that"),
        ("http://bob:1234/sekret@127.0.0.1:{port}/x", "holds '@' after the host; percent-encode"),
    ],
    ids=["space-in-the-token", "unencoded-slash-in-the-password"],
)
def test_a_malformed_webhook_url_never_shows_its_secret(url, message):
    port = _closed_port()
    with pytest.raises(NotifyError, match=message) as caught:
        post_webhook({"text": "x"}, url=url.format(port=port), timeout=2)
    assert "sekret" not in str(caught.value) and "1234" not in str(caught.value)
