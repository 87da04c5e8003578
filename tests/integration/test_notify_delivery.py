"""notify_cycle run by ansible-playbook, delivering to real receivers on loopback: an SMTP relay
(aiosmtpd, STARTTLS and AUTH), an HTTP webhook and a UDP syslog listener."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.listeners import SMTPRelay, SyslogListener, free_port, webhook_server

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
PASSWORD = "relay-Secret-4711"
TOKEN = "T000/B000/XXXXsecretTOKENxxxx"

ANALYSIS = {
    "occupancy": {"capacity": 150, "current_sessions": 45, "current": 30.0, "peak": 56.0,
                  "peak_at": "2026-12-03T16:39:13+00:00", "mean": 39.7},
    "triggered": True, "alert": False, "forced": False,
    "stats": {"window_end": "2026-12-03T16:41:24+00:00", "skipped": 0},
}  # fmt: skip
SPARE = {
    "block": [{"ip": "203.0.113.40", "rule": "cond1", "sessions": 45, "qualifying_sessions": 44,
               "longest_session": 40, "risk": 96.0, "ptr": "bot40.example.net"}],
    "spared": [{"ip": "203.0.113.9", "rule": "cond1", "sessions": 50, "qualifying_sessions": 41,
                "longest_session": 30, "risk": 95.0, "ptr": "mail.example.ac.jp"}],
    "stats": {"timeouts": 0, "failures": 0},
}  # fmt: skip
PLAN = {"added": [{"ip": "203.0.113.40"}], "renewed": [], "capped": [],
        "removed": [{"ip": "198.51.100.7", "reason": "expired"}], "blocklist": ["203.0.113.40"]}


def notify(tmp_path: Path, *, alert: bool = False, now: str | None = None, verbose: bool = False,
           check: bool = False, **channels: object) -> tuple[dict, str, int]:
    """Run notify_cycle once in a playbook; returns its result, the output and the exit code."""
    result_file = tmp_path / "result.json"
    analysis = {**ANALYSIS, "alert": alert}
    if alert:
        analysis["occupancy"] = {**ANALYSIS["occupancy"], "current": 45.0, "current_sessions": 68}
    args = {"gateways": {"gw1": analysis}, "spare": SPARE, "plan": PLAN,
            "state_path": str(tmp_path / "state" / "notify.json"), **channels}  # fmt: skip
    if now:
        args["now"] = now
    playbook = [{
        "name": "Notify", "hosts": "localhost", "gather_facts": False,
        "tasks": [
            {"name": "Send", "campusnet.smtpguard.notify_cycle": args, "register": "sent"},
            {"name": "Keep the result", "ansible.builtin.copy": {
                "content": "{{ sent | to_json }}", "dest": str(result_file), "mode": "0600"},
             "check_mode": False},
        ],
    }]  # fmt: skip
    path = tmp_path / "notify.yml"
    path.write_text(yaml.safe_dump(playbook))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    command = [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local",
               "-e", f"ansible_python_interpreter={sys.executable}", str(path)]  # fmt: skip
    if verbose:
        command.append("-vvv")
    if check:
        command.append("--check")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    return result, output, done.returncode


@pytest.fixture
def relay(tmp_path):
    with SMTPRelay(tmp_path, username="smtpguard", password=PASSWORD) as server:
        yield server


def mail_settings(relay: SMTPRelay) -> dict:
    return {"host": "127.0.0.1", "port": relay.port, "security": "starttls",
            "username": "smtpguard", "password": PASSWORD, "sender": "smtpguard@campus.example",
            "recipients": ["noc@campus.example", "mail-team@campus.example"],
            "ca_path": str(relay.cert)}  # fmt: skip


def test_summary_arrives_by_mail_after_starttls_and_login(tmp_path, relay):
    result, output, rc = notify(tmp_path, mail=mail_settings(relay))

    assert rc == 0, output
    assert result["sent"] == ["mail"]
    assert relay.logins == ["smtpguard"]
    assert relay.inbox.envelopes == [
        ("smtpguard@campus.example", ["noc@campus.example", "mail-team@campus.example"])
    ]
    mail = relay.inbox.messages[0]
    assert mail["Subject"].strip() == (  # a long subject is folded after "Subject:"
        "[smtpguard] summary: gw1 occupancy 30.0% (peak 56.0%), 1 blocked, 1 spared"
    )
    body = mail.get_content()
    assert "gw1: occupancy now 30.0% (45 of 150 sessions), peak 56.0%" in body
    assert "blocked: 1 new, 0 renewed, block list 1 entries; spared: 1; expired: 1" in body
    assert "blocked   203.0.113.40 (bot40.example.net): rule cond1, 44 qualifying" in body
    assert "spared    203.0.113.9 (mail.example.ac.jp)" in body
    assert "failures: none" in body


def test_webhook_gets_a_slack_and_teams_body(tmp_path):
    with webhook_server() as server:
        url = f"http://127.0.0.1:{server.server_port}/services/{TOKEN}"
        result, output, rc = notify(tmp_path, alert=True, webhook={"url": url})

    assert rc == 0, output
    assert result["kind"] == "alert" and result["sent"] == ["webhook"]
    [received] = server.received
    assert received["type"] == "application/json"
    body = received["json"]
    assert body["text"].startswith("*[smtpguard] ALERT: gw1 occupancy 45.0%")  # Slack
    assert body["@type"] == "MessageCard" and body["themeColor"] == "C62828"  # Teams
    assert body["title"] == result["subject"]
    assert body["smtpguard"]["kind"] == "alert"
    assert body["smtpguard"]["blocked_new"] == 1 and body["smtpguard"]["expired"] == 1
    assert body["smtpguard"]["top"][0]["ip"] == "203.0.113.40"


def test_adaptive_card_for_teams_workflows(tmp_path):
    with webhook_server() as server:
        url = f"http://127.0.0.1:{server.server_port}/services/{TOKEN}"
        result, output, rc = notify(tmp_path, webhook={"url": url, "format": "adaptive"})
    assert rc == 0, output
    card = server.received[0]["json"]["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["body"][0]["text"] == result["subject"]


def test_syslog_line_arrives_with_facility_and_priority(tmp_path):
    with SyslogListener() as listener:
        result, output, rc = notify(
            tmp_path, alert=True,
            syslog={"address": "127.0.0.1", "port": listener.port, "facility": "local3",
                    "alert_priority": "crit"},
        )  # fmt: skip
        datagrams = listener.drain()

    assert rc == 0, output
    assert result["sent"] == ["syslog"]
    [line] = [datagram.decode() for datagram in datagrams]
    assert line.startswith(f"<{19 * 8 + 2}>smtpguard: ALERT: gw1 occupancy 45.0% peak 56.0%")
    assert "1 blocked, 1 spared, 1 expired; failures: 0" in line


def test_summaries_at_most_hourly_alerts_every_cycle(tmp_path):
    state_file = tmp_path / "state" / "notify.json"
    steps = [  # (time, alert, sent)
        ("2026-12-03T10:00:00Z", False, True),
        ("2026-12-03T10:30:00Z", False, False),  # within the hour of the last summary
        ("2026-12-03T10:45:00Z", True, True),  # an alert goes whatever the time
        ("2026-12-03T11:00:00Z", False, True),  # an hour after the last summary
    ]
    with SyslogListener() as listener:
        for now, alert, sent in steps:
            result, output, rc = notify(tmp_path, now=now, alert=alert,
                                        syslog={"address": "127.0.0.1", "port": listener.port})
            assert rc == 0, output
            assert (result["due"], len(listener.drain())) == (sent, int(sent)), now
            if sent:
                last = json.loads(state_file.read_text())[f"last_{result['kind']}"]
                assert last == now.replace("Z", "+00:00")
    assert json.loads(state_file.read_text())["last_summary"] == "2026-12-03T11:00:00+00:00"


def test_dead_relay_is_a_warning_and_other_channels_still_deliver(tmp_path):
    dead = {"host": "127.0.0.1", "port": free_port(), "recipients": ["noc@campus.example"],
            "security": "none"}  # fmt: skip
    with SyslogListener() as listener:
        result, output, rc = notify(
            tmp_path, mail=dead, syslog={"address": "127.0.0.1", "port": listener.port}
        )
        datagrams = listener.drain()

    assert rc == 0, output
    assert "notification by mail failed" in output and "[WARNING]" in output
    assert result["sent"] == ["syslog"] and "mail" in result["errors"]
    assert len(datagrams) == 1


def test_no_secret_in_verbose_output_even_when_channels_fail(tmp_path, relay):
    with webhook_server() as server:
        # A wrong path: the webhook answers 404, so the error path runs too.
        url = f"http://127.0.0.1:{server.server_port}/wrong/{TOKEN}"
        wrong_password = {**mail_settings(relay), "password": PASSWORD + "-wrong"}
        result, output, rc = notify(tmp_path, verbose=True, webhook={"url": url},
                                    mail=wrong_password)  # fmt: skip

    assert rc == 0, output
    assert set(result["errors"]) == {"mail", "webhook"}
    assert "HTTP 404" in result["errors"]["webhook"]
    assert "authentication" in result["errors"]["mail"].lower() or "535" in output
    assert "<ansible.cfg" not in output  # the run was really verbose: look for its markers
    assert "ESTABLISH LOCAL CONNECTION" in output
    for secret in (PASSWORD, TOKEN, "XXXXsecretTOKENxxxx"):
        assert secret not in output


def test_check_mode_sends_nothing_and_remembers_nothing(tmp_path, relay):
    result, output, rc = notify(tmp_path, check=True, mail=mail_settings(relay))

    assert rc == 0, output
    assert result["would_send"] == ["mail"] and result["sent"] == []
    assert relay.inbox.messages == []
    assert not (tmp_path / "state").exists()
