"""The lab as a new operator meets it: `up` twice, `down` twice, runs cut short.

Each test builds a lab of its own (tools/lab/lab.py, prefix sgll) and checks that tearing it
down leaves nothing behind: no namespace, no link on this host, no process inside the lab's
namespaces, no lab directory and no /etc/netns entry. Processes are found by the namespace
they run in, so that Postfix's daemons (whose command lines name no lab path) count too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAB_PY = ROOT / "tools" / "lab" / "lab.py"
PREFIX = "sgll"
DIRECTORY = Path("/run/smtpguard-lab-lifecycle")
ARGS = ("--dir", str(DIRECTORY), "--prefix", PREFIX, "--number", "51")


def lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LAB_PY), *args, *ARGS],
        text=True,
        capture_output=True,
        check=False,
        timeout=120,
    )


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(LAB_PY), *args, *ARGS],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def until(what: str, test, *, timeout: float = 60) -> None:
    """Poll for a condition the lab reaches by itself; fail with `what` if it never does."""
    deadline = time.monotonic() + timeout
    while not test():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.1)


def namespaces() -> dict[str, int]:
    """The lab's namespaces by name, with the inode that identifies each one."""
    found = {}
    for path in Path("/run/netns").glob(f"{PREFIX}-*"):
        try:
            found[path.name] = os.stat(path).st_ino
        except OSError:
            continue
    return found


def processes_in(inodes: set[int]) -> list[int]:
    """PIDs of processes living in any of these namespaces, named or not any more."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if os.stat(entry / "ns" / "net").st_ino in inodes:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def leftovers(inodes: set[int]) -> dict[str, object]:
    links = subprocess.run(["ip", "-br", "link"], text=True, capture_output=True).stdout
    return {
        "namespaces": sorted(namespaces()),
        "links": [line.split()[0] for line in links.splitlines() if line.startswith(PREFIX)],
        "processes": processes_in(inodes),
        "directory": DIRECTORY.exists(),
        "netns_config": Path("/etc/netns", f"{PREFIX}-gateway").exists(),
    }


NOTHING = {"namespaces": [], "links": [], "processes": [], "directory": False,
           "netns_config": False}  # fmt: skip


@pytest.fixture
def clean():
    """A lab left over by an interrupted run goes first; whatever a test leaves goes after."""
    lab("down")
    yield
    lab("down")


def test_up_twice_keeps_the_running_lab_and_down_twice_is_harmless(clean):
    first = lab("up")
    record = json.loads((DIRECTORY / "lab.json").read_text())
    second = lab("up")
    again = json.loads((DIRECTORY / "lab.json").read_text())
    inodes = set(namespaces().values())

    down = lab("down")
    down_again = lab("down")

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "runs in" in second.stderr and "already" in second.stderr
    assert json.loads(second.stdout)["prefix"] == PREFIX
    assert again["pids"] == record["pids"]  # nothing started twice
    assert len(inodes) == 5
    assert (down.returncode, down.stdout.strip()) == (0, "lab removed")
    assert down_again.returncode == 0
    assert "no lab recorded" in down_again.stdout
    assert leftovers(inodes) == NOTHING


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_up_removes_what_it_built(clean, signum):
    building = start("up")
    seen: dict[str, int] = {}

    def sshd_started() -> bool:
        seen.update(namespaces())
        try:
            pids = json.loads((DIRECTORY / "lab.json").read_text())["pids"]
        except (OSError, ValueError):
            return False
        return "sshd-bastion" in pids

    until("the build starting the bastion's sshd", sshd_started)
    building.send_signal(signum)
    _, errors = building.communicate(timeout=60)

    assert building.returncode == 130, errors
    assert "tearing down what was made" in errors
    assert len(seen) == 5
    assert leftovers(set(seen.values())) == NOTHING


def test_sigterm_to_an_attack_stops_its_traffic_and_down_leaves_nothing(clean):
    assert lab("up").returncode == 0
    facts = json.loads((DIRECTORY / "lab.json").read_text())["facts"]
    inodes = set(namespaces().values())
    internet = {namespaces()[facts["namespaces"]["internet"]]}
    gateway_log = Path(facts["gateway_log"])

    attack = start("attack", "--duration", "120")
    until(
        "the gateway logging a flooding source",
        lambda: b"[203.0.113.10]" in gateway_log.read_bytes(),
    )
    attack.send_signal(signal.SIGTERM)
    attack.communicate(timeout=20)
    traffic_left = processes_in(internet)
    status = json.loads(lab("status").stdout)
    background = lab("attack", "--background", "--duration", "60")
    until("the background attack running", lambda: processes_in(internet))

    down = lab("down")

    assert attack.returncode == 130
    assert traffic_left == []
    assert status["complete"] and all(d["alive"] for d in status["daemons"].values())
    assert background.returncode == 0, background.stderr
    assert down.stdout.strip() == "lab removed"
    assert leftovers(inodes) == NOTHING
