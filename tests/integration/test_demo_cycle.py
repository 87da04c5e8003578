"""The mitigation cycle on the demo inventory and the shipped sample, end to end.

Runs the real playbooks with ansible-playbook against a DNS server on loopback and checks
the decision against the answer written beside the sample.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "demo" / "sample"
ZONE = ROOT / "demo" / "dns.zone"

sys.path.insert(0, str(ROOT / "tools"))
from minidns import DNSServer, load_zone_file  # noqa: E402


@pytest.fixture(scope="module")
def answer() -> dict:
    return yaml.safe_load((SAMPLE / "answer.yml").read_text())


@pytest.fixture(scope="module")
def dns_port():
    server = DNSServer(load_zone_file(ZONE), host="127.0.0.1", port=0)
    server.start()
    try:
        yield server.port
    finally:
        server.stop()


def run_playbook(playbook: str, work: Path, dns_port: int, *args: str) -> dict:
    record = work.parent / f"{work.name}-{playbook}-{len(list(work.parent.iterdir()))}.json"
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_CALLBACK_PLUGINS": str(ROOT / "tests" / "support" / "callback_plugins"),
        "ANSIBLE_CALLBACKS_ENABLED": "record",
        "SMTPGUARD_RECORD": str(record),
        "SMTPGUARD_DEMO_DNS_PORT": str(dns_port),
    }
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        f"playbooks/{playbook}",
        "-e",
        json.dumps({"smtpguard_work_dir": str(work)}),
        *args,
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if not record.exists():
        pytest.fail(f"ansible-playbook recorded nothing:\n{done.stdout}\n{done.stderr}")
    report = json.loads(record.read_text())
    report["returncode"] = done.returncode
    report["output"] = done.stdout + done.stderr
    return report


def task_result(report: dict, task_name: str, host: str = "localhost") -> dict:
    """The result of the last task of that name on that host (a role's task comes after
    the include_role task that bears the same name)."""
    for task in reversed(report["tasks"]):
        if task["task"] == task_name and task["host"] == host and task["status"] != "skipped":
            return task["result"]
    raise AssertionError(f"task {task_name!r} did not run on {host}")


def totals(report: dict) -> dict:
    keys = ("changed", "failures", "unreachable")
    return {key: sum(stats.get(key, 0) for stats in report["stats"].values()) for key in keys}


def tree(path: Path) -> dict[str, bytes]:
    if not path.exists():
        return {}
    return {
        str(item.relative_to(path)): item.read_bytes() for item in path.rglob("*") if item.is_file()
    }


@pytest.fixture(scope="module")
def cycle(tmp_path_factory, dns_port) -> dict:
    """Dry run, real run and rerun of mitigate.yml in a fresh work directory."""
    work = tmp_path_factory.mktemp("cycle") / "work"
    check = run_playbook("mitigate.yml", work, dns_port, "--check", "--diff")
    after_check = tree(work)
    first = run_playbook("mitigate.yml", work, dns_port)
    after_first = tree(work)
    second = run_playbook("mitigate.yml", work, dns_port)
    return {
        "work": work,
        "check": check,
        "after_check": after_check,
        "first": first,
        "after_first": after_first,
        "second": second,
        "after_second": tree(work),
    }


def test_every_run_succeeds(cycle):
    for name in ("check", "first", "second"):
        assert cycle[name]["returncode"] == 0, cycle[name]["output"]
        assert totals(cycle[name])["failures"] == 0


def test_check_mode_writes_nothing(cycle):
    assert cycle["after_check"] == {}


def test_blocks_exactly_the_answer(cycle, answer):
    spared = task_result(cycle["first"], "Spare domestic senders, partners and internal networks")
    blocked = {entry["ip"]: entry["rule"] for entry in spared["block"]}
    assert blocked == {entry["ip"]: entry["rule"] for entry in answer["block"]}


def test_spares_exactly_the_answer(cycle, answer):
    spared = task_result(cycle["first"], "Spare domestic senders, partners and internal networks")
    assert {entry["ip"] for entry in spared["spared"]} == {
        entry["ip"] for entry in answer["spared"]
    }
    assert all(entry["reason"] for entry in spared["spared"])


def test_rendered_feed_holds_exactly_the_blocked_sources(cycle, answer):
    feed = (cycle["work"] / "feed1" / "blocklist.txt").read_text().splitlines()
    entries = {line for line in feed if line and not line.startswith("#")}
    assert entries == {entry["ip"] for entry in answer["block"]}


def test_rendered_nftables_file_lists_each_blocked_source(cycle, answer):
    text = (cycle["work"] / "ips1" / "smtpguard-blocklist.nft").read_text()
    for entry in answer["block"]:
        assert f"{entry['ip']}," in text or f"{entry['ip']}\n" in text
    for entry in answer["spared"]:
        assert entry["ip"] not in text


def test_check_mode_diff_lists_the_entries_the_real_run_adds(cycle, answer):
    plan = task_result(cycle["check"], "Plan the block list")
    added = {entry if isinstance(entry, str) else entry["ip"] for entry in plan["added"]}
    assert added == {entry["ip"] for entry in answer["block"]}
    assert plan["diff"], "check mode with --diff must show a diff"


def test_occupancy_matches_the_answer(cycle, answer):
    result = task_result(cycle["first"], "Analyse the gateway's SMTP sessions", host="gw1.demo")
    assert result["occupancy"]["capacity"] == answer["capacity"]
    assert result["occupancy"]["current_sessions"] == answer["occupancy"]["current_sessions"]
    assert result["triggered"] is True


def test_snapshot_recorded_once(cycle):
    snapshots = sorted(
        name for name in cycle["after_second"] if name.startswith("state/snapshots/")
    )
    assert len(snapshots) == 1


def test_second_run_changes_nothing(cycle):
    assert totals(cycle["second"])["changed"] == 0

    def durable(files: dict[str, bytes]) -> dict[str, bytes]:
        # The per-source report is evidence of each run (it carries the run's timing).
        return {name: data for name, data in files.items() if not name.startswith("reports/")}

    assert durable(cycle["after_second"]) == durable(cycle["after_first"])
