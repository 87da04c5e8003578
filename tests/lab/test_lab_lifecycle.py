"""The lab as a new operator meets it: `up` twice, `down` twice, runs cut short, sshd restarts.

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
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAB_PY = ROOT / "tools" / "lab" / "lab.py"
PREFIX = "sgll"
DIRECTORY = Path("/run/smtpguard-lab-lifecycle")
BUILD = ("--prefix", PREFIX, "--number", "51")  # `up` only: the other commands refuse them


def argv(args: Sequence[str]) -> list[str]:
    build = BUILD if args[0] == "up" else ()
    return [sys.executable, str(LAB_PY), *args, "--dir", str(DIRECTORY), *build]


def lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv(args),
        text=True,
        capture_output=True,
        check=False,
        timeout=120,
    )


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv(args),
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
    assert json.loads(first.stdout)["already_running"] is False
    assert json.loads(second.stdout)["already_running"] is True
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
    assert "the half-built lab was removed" in errors
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
    _, interrupted = attack.communicate(timeout=20)
    traffic_left = processes_in(internet)
    status = json.loads(lab("status").stdout)
    refused = lab("attack", "--background", "--duration", "60")  # its traffic is in the window
    reset = lab("reset")
    background = lab("attack", "--background", "--duration", "60")
    until("the background attack running", lambda: processes_in(internet))
    foreground = lab("attack", "--duration", "60")

    down = lab("down")

    assert attack.returncode == 130
    assert "the attack's traffic stopped" in interrupted
    assert traffic_left == []
    daemons = {name: entry["alive"] for name, entry in status["daemons"].items()}
    assert status["complete"] and daemons.pop("attack") is False and all(daemons.values())
    assert refused.returncode == 1 and "lab.py reset" in refused.stderr
    assert reset.returncode == 0, reset.stderr
    assert background.returncode == 0, background.stderr
    assert foreground.returncode == 1 and "an attack runs already" in foreground.stderr
    assert down.stdout.strip() == "lab removed"
    assert leftovers(inodes) == NOTHING


DEAD = 2**22 + 1  # above the kernel's highest PID: never a running process


def sshds_with(config: str) -> list[int]:
    """PIDs of the sshd listeners started with this configuration (sshd retitles itself, but
    its title keeps the command line)."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
        if line.startswith("sshd: ") and f"-f {config} " in line:
            pids.append(int(entry.name))
    return pids


def hold_port(namespace: str, address: str, port: int) -> subprocess.Popen[str]:
    """A process in the namespace listening on address:port, ready when this returns."""
    holder = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-c",
         "import socket, sys; s = socket.create_server((sys.argv[1], int(sys.argv[2]))); "
         "print('ready', flush=True); sys.stdin.read()", address, str(port)],
        text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert holder.stdout.readline() == "ready\n"
    return holder


def test_restart_keeps_a_running_sshd_and_starts_a_stopped_one_once(clean):
    assert lab("up").returncode == 0
    inodes = set(namespaces().values())
    record = json.loads((DIRECTORY / "lab.json").read_text())
    serving = record["pids"]["sshd-gateway"]["pid"]
    config = str(DIRECTORY / "ssh" / "gateway" / "sshd_config")

    running = lab("restart", "sshd-gateway")
    after_running = sshds_with(config)
    # What an earlier lab.py left behind: the record naming a dead sshd, the real one serving.
    record["pids"]["sshd-gateway"]["pid"] = DEAD
    (DIRECTORY / "lab.json").write_text(json.dumps(record))
    lost = lab("restart", "sshd-gateway")
    stopped = lab("stop", "sshd-gateway")
    started = lab("restart", "sshd-gateway")
    status = json.loads(lab("status").stdout)["daemons"]["sshd-gateway"]
    after_start = sshds_with(config)

    lab("stop", "sshd-gateway")
    facts = record["facts"]
    holder = hold_port(facts["namespaces"]["gateway"], facts["gateway_mgmt"], 22)
    try:
        taken = lab("restart", "sshd-gateway")
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    down = lab("down")

    assert (running.returncode, running.stdout.strip()) == (0, str(serving)), running.stderr
    assert "runs already" in running.stderr
    assert after_running == [serving]  # no second sshd
    assert (lost.returncode, lost.stdout.strip()) == (0, str(serving)), lost.stderr
    assert f"not as the recorded {DEAD}; recorded it" in lost.stderr
    assert (stopped.returncode, stopped.stdout.strip()) == (0, str(serving)), stopped.stderr
    assert started.returncode == 0, started.stderr
    assert status["pid"] == int(started.stdout) != serving and status["alive"] is True
    assert after_start == [status["pid"]]
    assert taken.returncode == 1
    assert "exited at start" in taken.stderr and f"held by pid {holder.pid}" in taken.stderr
    assert down.stdout.strip() == "lab removed"
    assert leftovers(inodes) == NOTHING


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("up", "--number", "300"), "from 0 to 255"),
        (("up", "--number", "-1"), "from 0 to 255"),
        (("up", "--number", "two"), "from 0 to 255"),
        (("up", "--prefix", "Lab 1"), "lower-case letters and digits"),
        (("up", "--prefix", "averylongprefix"), "1 to 11"),
        (("attack", "--duration", "-5"), "above 0"),
        (("attack", "--duration", "0"), "above 0"),
        (("attack", "--duration", "nan"), "above 0"),
        (("attack", "--duration", "inf"), "above 0"),
        (("attack", "--duration", "soon"), "about 45 s to match"),
        (("attack", "--duration", "281"), "at most 280 s"),
        (("attack", "--background", "--duration", "1e9"), "at most 280 s"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_built(tmp_path, args, says):
    done = subprocess.run(
        [sys.executable, str(LAB_PY), *args, "--dir", str(tmp_path / "lab")],
        text=True,
        capture_output=True,
        check=False,
        timeout=30,
    )

    assert done.returncode == 2
    assert says in done.stderr
    assert not (tmp_path / "lab").exists()
