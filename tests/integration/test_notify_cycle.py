"""The demo cycle with the notify role at its end: the evidence report of a real run, its
escaping of hostile names, retention, and notifications that fail without failing the cycle
and without showing a secret, even at -vvv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.listeners import SyslogListener, free_port, webhook_server

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "demo" / "sample"
PASSWORD = "relay-Secret-4711"
TOKEN = "T111/B222/cycleSECRETtoken"
# A PTR name and an allowlist reason an attacker or a careless edit could write.
HOSTILE_PTR = "<script>alert-1</script>.evil.example"
HOSTILE_REASON = "partner <b onmouseover=alert(2)>univ</b> & co"

sys.path.insert(0, str(ROOT / "tools"))
from minidns import DNSServer, load_zone_file  # noqa: E402


@pytest.fixture(scope="module")
def answer() -> dict:
    return yaml.safe_load((SAMPLE / "answer.yml").read_text())


@pytest.fixture(scope="module")
def dns_port(tmp_path_factory):
    zone = tmp_path_factory.mktemp("zone") / "hostile.zone"
    zone.write_text((ROOT / "demo" / "dns.zone").read_text()
                    + f"10.113.0.203.in-addr.arpa PTR {HOSTILE_PTR}. 3600\n")  # fmt: skip
    server = DNSServer(load_zone_file(zone), host="127.0.0.1", port=0)
    server.start()
    try:
        yield server.port
    finally:
        server.stop()


def run_cycle(work: Path, dns_port: int, extra: dict, *args: str) -> tuple[int, str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "SMTPGUARD_DEMO_DNS_PORT": str(dns_port)}  # fmt: skip
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/mitigate.yml",
               "-e", json.dumps({"smtpguard_work_dir": str(work), **extra}), *args]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout + done.stderr


def recap(output: str) -> dict[str, int]:
    line = next(line for line in output.splitlines() if line.startswith("localhost "))
    return {key: int(value) for key, value in
            (field.split("=") for field in line.split(":", 1)[1].split())}  # fmt: skip


@pytest.fixture(scope="module")
def cycle(tmp_path_factory, dns_port):
    """Two real runs: the first notifies through a dead relay, a webhook and syslog at -vvv,
    the second keeps one report only."""
    work = tmp_path_factory.mktemp("notify-cycle") / "work"
    with webhook_server() as hook, SyslogListener() as syslog:
        settings = {
            "spare_allowlist": [{"network": "198.51.100.128/25", "reason": HOSTILE_REASON}],
            "notify_mail_host": "127.0.0.1",
            "notify_mail_port": free_port(),  # nothing listens there
            "notify_mail_username": "smtpguard",
            "notify_mail_password": PASSWORD,
            "notify_mail_recipients": ["noc@campus.example"],
            "notify_webhook_url": f"http://127.0.0.1:{hook.server_port}/services/{TOKEN}",
            "notify_syslog_address": "127.0.0.1",
            "notify_syslog_port": syslog.port,
        }
        first = run_cycle(work, dns_port, settings, "-vvv")
        datagrams = syslog.drain()
        reports = {path.name: path.read_text() for path in (work / "reports" / "cycles").iterdir()}
        second = run_cycle(work, dns_port, {**settings, "notify_report_keep_files": 1})
    return {"work": work, "first": first, "second": second, "hook": hook.received,
            "syslog": datagrams, "first_reports": reports}  # fmt: skip


def test_cycle_completes_although_the_relay_is_dead(cycle):
    rc, output = cycle["first"]
    assert rc == 0, output[-3000:]
    assert recap(output)["failed"] == 0
    assert "[WARNING]: notification by mail failed" in output
    assert "Connection refused" in output


def test_other_channels_deliver(cycle):
    [received] = cycle["hook"][:1]
    assert received["json"]["smtpguard"]["blocked_new"] == 14
    assert received["json"]["smtpguard"]["spared"] == 2
    [line] = [datagram.decode() for datagram in cycle["syslog"]]
    assert "smtpguard: summary: gw1.demo occupancy 30.0% peak 56.0% triggered; 14 blocked" in line


def test_second_summary_within_the_hour_is_not_sent(cycle):
    rc, output = cycle["second"]
    assert rc == 0, output[-3000:]
    assert len(cycle["hook"]) == 1
    assert "not due (one summary per 1h)" in output


def test_no_secret_in_verbose_output(cycle):
    rc, output = cycle["first"]
    assert "ESTABLISH LOCAL CONNECTION" in output  # -vvv took effect
    for secret in (PASSWORD, TOKEN, "cycleSECRETtoken"):
        assert secret not in output


def test_report_records_the_run(cycle, answer):
    [report] = [json.loads(text) for name, text in cycle["first_reports"].items()
                if name.endswith(".json")]  # fmt: skip
    assert report["run"]["check_time"] == answer["now"]
    [gateway] = report["gateways"]
    assert gateway["name"] == "gw1.demo"
    assert gateway["occupancy"]["current_sessions"] == answer["occupancy"]["current_sessions"]
    assert gateway["occupancy"]["peak"] == answer["occupancy"]["peak"]
    verdicts = {row["ip"]: row for row in report["candidates"]}
    assert {ip for ip, row in verdicts.items() if row["verdict"] == "blocked (new)"} == {
        entry["ip"] for entry in answer["block"]
    }
    assert {ip for ip, row in verdicts.items() if row["verdict"] == "spared"} == {
        entry["ip"] for entry in answer["spared"]
    }
    for entry in answer["block"]:
        assert verdicts[entry["ip"]]["rule"] == entry["rule"]
    assert verdicts["203.0.113.9"]["forward_confirmed"] is True
    assert verdicts["203.0.113.10"]["ptr"] == HOSTILE_PTR
    assert report["decision"]["snapshot"] == 1
    devices = {device["name"]: device for device in report["devices"]}
    assert set(devices) == {"ips1.demo", "feed1.demo"}
    assert devices["feed1.demo"]["pushed"] is True
    assert devices["feed1.demo"]["entries"] == len(answer["block"])
    assert "+2001:db8:bad::40" in devices["ips1.demo"]["diff"]


def test_html_holds_candidates_escaped_and_the_chart(cycle, answer):
    [page] = [text for name, text in cycle["first_reports"].items() if name.endswith(".html")]
    for entry in answer["block"] + answer["spared"]:
        assert f"<td>{entry['ip']}</td>" in page
    assert "<script>" not in page and "<b onmouseover" not in page
    assert "&lt;script&gt;alert-1&lt;/script&gt;.evil.example" in page
    assert "partner &lt;b onmouseover=alert(2)&gt;univ&lt;/b&gt; &amp; co" in page
    assert "<svg" in page and "alert 40.0%" in page and "trigger 20.0%" in page


def test_retention_keeps_the_newest_report(cycle):
    rc, output = cycle["second"]
    assert rc == 0, output[-3000:]
    left = sorted((cycle["work"] / "reports" / "cycles").iterdir())
    assert len(left) == 2  # one run: its JSON and its HTML
    assert left[0].name not in cycle["first_reports"]


def test_report_and_notification_change_nothing_on_a_rerun(cycle):
    assert recap(cycle["second"][1])["changed"] == 0


@pytest.fixture(scope="module")
def broken_report(tmp_path_factory, dns_port):
    """Runs whose report cannot be written: a file where the directory should be (with a
    summary interval that cannot be read), and a retention out of range."""
    base = tmp_path_factory.mktemp("broken-report")
    (base / "notadir").write_text("a file, not a directory\n")
    runs = {}
    with webhook_server() as hook:
        url = f"http://127.0.0.1:{hook.server_port}/services/{TOKEN}"
        for name, extra in (
            ("notadir", {"notify_report_dir": str(base / "notadir" / "cycles"),
                         "notify_summary_interval": "10y"}),
            ("keep_days", {"notify_report_keep_days": 1e12}),
        ):  # fmt: skip
            before = len(hook.received)
            settings = {"notify_webhook_url": url, **extra}
            rc, output = run_cycle(base / f"work-{name}", dns_port, settings)
            runs[name] = (rc, output, hook.received[before:])
    return runs


@pytest.mark.parametrize(
    ("run", "reason"),
    [
        ("notadir", "cannot write the evidence report in"),
        ("keep_days", "keep_days (notify_report_keep_days) is 1e+12; give 0 (no limit) up to"),
    ],
)
def test_a_report_that_cannot_be_written_never_stops_the_notification(broken_report, run, reason):
    rc, output, received = broken_report[run]
    assert rc == 0, output[-3000:]
    assert recap(output)["failed"] == 0
    [message] = received
    failures = message["json"]["smtpguard"]["failures"]
    assert any(line.startswith("the evidence report could not be written:") and reason in line
               for line in failures), failures  # fmt: skip
    assert message["json"]["smtpguard"]["blocked_new"] == 14


def test_an_unreadable_summary_interval_is_warned_about_not_fatal(broken_report):
    rc, output, received = broken_report["notadir"]
    assert "notify_summary_interval: '10y' is not a duration" in output
    assert len(received) == 1


@pytest.fixture(scope="module")
def failed_push(tmp_path_factory, dns_port):
    """A run in which ips1.demo cannot take the push: a file stands where its directory goes.
    The gateway alerts at its own level (25%), not at the one given to the notify role."""
    work = tmp_path_factory.mktemp("failed-push") / "work"
    work.mkdir()
    (work / "ips1").write_text("a file, not a directory\n")
    with webhook_server() as hook:
        url = f"http://127.0.0.1:{hook.server_port}/services/{TOKEN}"
        settings = {"notify_webhook_url": url, "analyze_alert_occupancy": 25,
                    "notify_alert_occupancy": 80}  # fmt: skip
        rc, output = run_cycle(work, dns_port, settings)
    return {"work": work, "rc": rc, "output": output, "received": hook.received}


def test_a_failed_push_is_notified_and_still_fails_the_run(failed_push):
    assert failed_push["rc"] != 0
    assert "ips1.demo did not take the block list (unreachable or failed)" in failed_push["output"]
    [message] = failed_push["received"]
    facts = message["json"]["smtpguard"]
    assert any(line.startswith("ips1.demo did not take the block list: ")
               for line in facts["failures"]), facts["failures"]  # fmt: skip
    assert any("the state is left as it was" in line for line in facts["failures"])
    assert message["json"]["title"].startswith("[smtpguard] ALERT: gw1.demo occupancy 30.0%")
    assert message["json"]["title"].endswith(", FAILURES")
    assert "above the alert level of 25.0%" in message["json"]["text"]


def test_a_failed_push_is_in_the_report_and_records_no_state(failed_push, answer):
    work = failed_push["work"]
    [path] = (work / "reports" / "cycles").glob("*.json")
    report = json.loads(path.read_text())
    devices = {device["name"]: device for device in report["devices"]}
    assert devices["ips1.demo"]["pushed"] is False and devices["ips1.demo"]["error"]
    assert devices["feed1.demo"]["pushed"] is True
    assert any("did not take the block list" in line for line in report["failures"])
    assert not (work / "state" / "state.json").exists()
    assert len((work / "feed1" / "blocklist.txt").read_text().split()) >= len(answer["block"])


@pytest.fixture(scope="module")
def unreachable_push(tmp_path_factory, dns_port):
    """A run in which no enforcing device can be reached: both are moved to SSH on a loopback
    port where nothing listens, through an inventory given after the demo's."""
    base = tmp_path_factory.mktemp("unreachable")
    work = base / "work"
    work.mkdir()
    port = free_port()  # nothing listens there
    unreachable = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": port,
                   "ansible_ssh_common_args": "-o BatchMode=yes -o ConnectTimeout=5"}  # fmt: skip
    inventory = base / "unreachable.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"enforcers": {"hosts": {
        "ips1.demo": unreachable, "feed1.demo": unreachable}}}}}))  # fmt: skip
    with webhook_server() as hook:
        url = f"http://127.0.0.1:{hook.server_port}/services/{TOKEN}"
        inventories = ("-i", str(ROOT / "inventory" / "demo"), "-i", str(inventory))
        rc, output = run_cycle(work, dns_port, {"notify_webhook_url": url}, *inventories)
    return {"work": work, "rc": rc, "output": output, "received": hook.received}


def test_every_device_unreachable_is_still_notified_and_fails_the_run(unreachable_push):
    output = unreachable_push["output"]
    assert unreachable_push["rc"] != 0
    assert "UNREACHABLE" in output
    assert "ips1.demo, feed1.demo did not take the block list (unreachable or failed)" in output
    [message] = unreachable_push["received"]
    facts = message["json"]["smtpguard"]
    assert any("did not take the block list" in line for line in facts["failures"]), facts
    assert message["json"]["title"].endswith(", FAILURES")
    assert not (unreachable_push["work"] / "state" / "state.json").exists()
