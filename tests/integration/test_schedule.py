"""The schedule role applied to localhost, with every path in a temporary directory.

The cron entry, the wrapper and the log go under tmp_path; the lock is a file there too. The
locking tests run the installed wrapper (real bash, real flock) around real ansible-playbook
runs of a small playbook that holds the lock until the test releases it.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
RECAP = re.compile(
    r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE
)
ROLE_PLAYBOOK = """\
- name: Apply the schedule role
  hosts: localhost
  gather_facts: false
  roles:
    - role: campusnet.smtpguard.schedule
"""
# A run that records its start, holds the lock until `release` exists, then records its end.
HOLD_PLAYBOOK = """\
- name: Hold the lock
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Record the start
      ansible.builtin.shell: echo "start {{ tag }}" >> {{ events }}
      changed_when: true
    - name: Name the run in the output
      ansible.builtin.debug:
        msg: "run {{ tag }}"
    - name: Wait for the release
      ansible.builtin.wait_for:
        path: "{{ release }}"
        timeout: 120
      when: release is defined
    - name: Record the end
      ansible.builtin.shell: echo "end {{ tag }}" >> {{ events }}
      changed_when: true
"""
SKIPPED = 75

pytestmark = pytest.mark.skipif(
    not (BIN / "ansible-playbook").exists(), reason="needs .venv/bin/ansible-playbook (make setup)"
)
# ansible.builtin.cron runs the crontab program even to write a cron.d file. CI installs cron
# and sets CI=true: there a missing crontab is a failure, not a skip.
needs_crontab = pytest.mark.skipif(
    shutil.which("crontab") is None and os.environ.get("CI") != "true",
    reason="needs the crontab program (package cron, or cronie on RedHat); CI installs it",
)


class Applied:
    def __init__(self, process: subprocess.CompletedProcess[str]) -> None:
        self.rc = process.returncode
        self.output = process.stdout + process.stderr
        match = RECAP.search(process.stdout)
        assert match, self.output
        self.ok, self.changed, self.unreachable, self.failed = map(int, match.groups())


class Paths:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.cron_file = base / "cron.d" / "smtpguard"
        self.wrapper = base / "bin" / "smtpguard-run"
        self.lock = base / "lock" / "smtpguard.lock"
        self.log = base / "log" / "cycle.log"
        self.events = base / "events"
        self.release = base / "release"
        self.hold = base / "hold.yml"
        for directory in (self.cron_file.parent, self.wrapper.parent, self.lock.parent):
            directory.mkdir(parents=True, exist_ok=True)
        self.hold.write_text(HOLD_PLAYBOOK)

    def variables(self, **overrides: Any) -> dict[str, Any]:
        return {
            "schedule_project_dir": str(ROOT),
            "schedule_cron_file": str(self.cron_file),
            "schedule_wrapper": str(self.wrapper),
            "schedule_lock_file": str(self.lock),
            "schedule_log_file": str(self.log),
            "schedule_install_cron": False,
            "schedule_playbook": str(self.hold),
            "schedule_playbook_args": [
                "-i", "localhost,", "-c", "local",
                "-e", f"ansible_python_interpreter={BIN / 'python'}",
                "-e", f"events={self.events}",
            ],
            **overrides,
        }  # fmt: skip

    def events_seen(self) -> list[str]:
        return self.events.read_text().splitlines() if self.events.exists() else []


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """Wrapper processes a test starts; any still running at the end are stopped by PID."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            process.wait(timeout=30)


def apply(paths: Paths, *args: str, **overrides: Any) -> Applied:
    playbook = paths.base / "schedule.yml"
    playbook.write_text(ROLE_PLAYBOOK)
    extra = paths.base / "vars.json"
    extra.write_text(json.dumps(paths.variables(**overrides)))
    command = [
        str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
        "-e", "ansible_python_interpreter={{ ansible_playbook_python }}",
        "-e", f"@{extra}", str(playbook), *args,
    ]  # fmt: skip
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    process = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    return Applied(process)


def cron_command(paths: Paths) -> str:
    """The command of the installed cron entry (cron.d format: five fields, user, command)."""
    entries = [line for line in paths.cron_file.read_text().splitlines() if line[:1] not in "#"]
    assert len(entries) == 1, entries
    return entries[0].split(None, 6)[6]


def start(paths: Paths, started: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [str(paths.wrapper), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    started.append(process)
    return process


def wait_until(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def read_line(process: subprocess.Popen[str], timeout: float = 60) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "no output from the wrapper"
    return process.stdout.readline()


@needs_crontab
def test_apply_installs_cron_entry_and_wrapper_and_second_apply_changes_nothing(
    paths: Paths,
) -> None:
    first = apply(paths)
    second = apply(paths)

    assert (first.rc, first.failed) == (0, 0), first.output
    assert first.changed == 3, first.output
    assert paths.cron_file.read_text() == (
        "#Ansible: smtpguard cycle\n"
        f"*/30 * * * * root {paths.wrapper} --no-wait --log {paths.log} {paths.hold}\n"
    )
    assert paths.wrapper.stat().st_mode & 0o777 == 0o755
    assert paths.log.parent.is_dir() and paths.log.parent.stat().st_mode & 0o777 == 0o750
    assert f"lock_file={paths.lock}\n" in paths.wrapper.read_text()
    assert (second.rc, second.changed, second.failed) == (0, 0, 0), second.output


@needs_crontab
def test_check_mode_reports_changes_and_writes_nothing(paths: Paths) -> None:
    checked = apply(paths, "--check", "--diff")

    assert (checked.rc, checked.failed) == (0, 0), checked.output
    assert checked.changed == 3, checked.output
    assert "+*/30 * * * * root" in checked.output
    assert not paths.cron_file.exists()
    assert not paths.wrapper.exists()
    assert not paths.log.parent.exists()


@needs_crontab
@pytest.mark.parametrize(("minutes", "field"), [(1, "*/1"), (5, "*/5"), (59, "*/59")])
def test_interval_sets_the_minute_field(paths: Paths, minutes: int, field: str) -> None:
    applied = apply(paths, schedule_interval_minutes=minutes)

    assert applied.rc == 0, applied.output
    assert paths.cron_file.read_text().splitlines()[1].startswith(f"{field} * * * * root ")


@pytest.mark.parametrize("minutes", [0, 60, -5, 1.5, "often"])
def test_interval_outside_1_to_59_fails_with_a_message(paths: Paths, minutes: Any) -> None:
    applied = apply(paths, schedule_interval_minutes=minutes)

    assert applied.failed == 1, applied.output
    assert "schedule_interval_minutes" in applied.output
    assert not paths.cron_file.exists()


@needs_crontab
def test_absent_removes_everything_it_installed_and_repeating_changes_nothing(
    paths: Paths, started: list[subprocess.Popen[str]]
) -> None:
    apply(paths)
    run = start(paths, started, "--log", str(paths.log), str(paths.hold), "-e", "tag=A")
    assert run.wait(timeout=120) == 0

    removed = apply(paths, schedule_state="absent", schedule_purge_logs=True)
    again = apply(paths, schedule_state="absent", schedule_purge_logs=True)

    assert (removed.rc, removed.failed) == (0, 0), removed.output
    assert removed.changed == 4, removed.output  # cron file, wrapper, lock file, log
    assert not paths.cron_file.exists()
    assert not paths.wrapper.exists()
    assert not paths.lock.exists()
    assert not paths.log.exists()
    assert (again.rc, again.changed, again.failed) == (0, 0, 0), again.output


@needs_crontab
def test_absent_keeps_the_log_and_a_held_lock(
    paths: Paths, started: list[subprocess.Popen[str]]
) -> None:
    apply(paths)
    holder = start(paths, started, str(paths.hold), "-e", "tag=A", "-e", f"release={paths.release}")
    wait_until(lambda: "start A" in paths.events_seen(), "the first run to start")
    paths.log.write_text("earlier cycle\n")

    removed = apply(paths, schedule_state="absent")
    paths.release.touch()

    assert removed.rc == 0, removed.output
    assert "still holds" in removed.output
    assert paths.lock.exists()
    assert paths.log.read_text() == "earlier cycle\n"
    assert not paths.cron_file.exists() and not paths.wrapper.exists()
    assert holder.wait(timeout=120) == 0


@needs_crontab
def test_scheduled_run_skips_with_a_message_while_another_run_holds_the_lock(
    paths: Paths, started: list[subprocess.Popen[str]]
) -> None:
    apply(paths)
    holder = start(paths, started, str(paths.hold), "-e", "tag=A", "-e", f"release={paths.release}")
    wait_until(lambda: "start A" in paths.events_seen(), "the first run to start")

    scheduled = subprocess.run(
        ["/bin/sh", "-c", cron_command(paths) + " -e tag=B"], timeout=120, check=False
    )
    paths.release.touch()

    assert scheduled.returncode == SKIPPED
    log = paths.log.read_text()
    assert re.search(rf"skipped {re.escape(str(paths.hold))}: the lock .* is held by pid "
                     rf"{holder.pid} \(\w+\) since \S+ running ", log), log  # fmt: skip
    assert holder.wait(timeout=120) == 0
    assert paths.events_seen() == ["start A", "end A"]


@needs_crontab
def test_manual_run_waits_for_the_lock_and_runs_after_the_holder(
    paths: Paths, started: list[subprocess.Popen[str]]
) -> None:
    apply(paths)
    first = start(paths, started, str(paths.hold), "-e", "tag=A", "-e", f"release={paths.release}")
    wait_until(lambda: "start A" in paths.events_seen(), "the first run to start")

    second = start(paths, started, "--wait", "120", str(paths.hold), "-e", "tag=B")
    waiting = read_line(second)
    assert f"waiting for the lock {paths.lock}, held by pid {first.pid} " in waiting
    assert paths.events_seen() == ["start A"]
    paths.release.touch()

    assert first.wait(timeout=120) == 0
    assert second.wait(timeout=120) == 0
    assert paths.events_seen() == ["start A", "end A", "start B", "end B"]


@needs_crontab
def test_wait_gives_up_after_its_timeout(
    paths: Paths, started: list[subprocess.Popen[str]]
) -> None:
    apply(paths, schedule_wait_timeout=1)
    first = start(paths, started, str(paths.hold), "-e", "tag=A", "-e", f"release={paths.release}")
    wait_until(lambda: "start A" in paths.events_seen(), "the first run to start")

    second = subprocess.run(
        [str(paths.wrapper), str(paths.hold), "-e", "tag=B"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    paths.release.touch()

    assert second.returncode == SKIPPED
    assert "gave up on" in second.stdout and f"held by pid {first.pid} " in second.stdout
    assert first.wait(timeout=120) == 0
    assert paths.events_seen() == ["start A", "end A"]


@needs_crontab
def test_log_is_rotated_by_size_keeping_the_configured_number(paths: Paths) -> None:
    apply(paths, schedule_log_max_bytes=100, schedule_log_keep=2)
    command = cron_command(paths)

    for tag in ("A", "B", "C", "D"):
        ran = subprocess.run(["/bin/sh", "-c", f"{command} -e tag={tag}"], timeout=120, check=False)
        assert ran.returncode == 0

    logs = {path.name: path.read_text() for path in paths.log.parent.iterdir()}
    assert sorted(logs) == ["cycle.log", "cycle.log.1", "cycle.log.2"]
    for name, tag in (("cycle.log", "D"), ("cycle.log.1", "C"), ("cycle.log.2", "B")):
        assert f"run {tag}" in logs[name], logs[name]
        assert logs[name].count("smtpguard-run[") == 2  # the start and end lines of one run
    assert not any("run A" in text for text in logs.values())


@pytest.mark.parametrize(
    ("os_family", "package"), [("Debian", "cron"), ("RedHat", "cronie"), ("Suse", "cronie")]
)
def test_cron_package_follows_the_os_family(os_family: str, package: str) -> None:
    facts = json.dumps({"ansible_facts": {"os_family": os_family}})
    done = subprocess.run(
        [str(BIN / "ansible"), "localhost", "-m", "ansible.builtin.debug",
         "-a", "var=schedule_cron_package",
         "-e", f"@{ROOT / 'roles' / 'schedule' / 'defaults' / 'main.yml'}", "-e", facts],
        cwd=ROOT, env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f'"schedule_cron_package": "{package}"' in done.stdout
