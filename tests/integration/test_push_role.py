"""The push_blocklist role run by ansible-playbook: check mode, diff, idempotence, nftables."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.campusnet.smtpguard.plugins.filter.blocklist import (
    blocklist_networks,
    nft_set_networks,
)

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"
RECAP = re.compile(
    r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE
)
PLAYBOOK = """\
- name: Push a block list
  hosts: localhost
  gather_facts: false
  roles:
    - role: campusnet.smtpguard.push_blocklist
"""

pytestmark = pytest.mark.skipif(
    not ANSIBLE_PLAYBOOK.exists(), reason="needs .venv/bin/ansible-playbook (run `make setup`)"
)


class Run:
    """One ansible-playbook run: its output and the recap counts."""

    def __init__(self, process: subprocess.CompletedProcess[str]) -> None:
        self.rc = process.returncode
        self.output = process.stdout + process.stderr
        match = RECAP.search(process.stdout)
        assert match, self.output
        self.ok, self.changed, self.unreachable, self.failed = map(int, match.groups())

    def diff_lines(self) -> tuple[set[str], set[str]]:
        """Entries the diff adds and removes; headers and the comment line left out."""
        added, removed = set(), set()
        for line in self.output.splitlines():
            if line.startswith(("+++", "---")) or line[1:].startswith("#"):
                continue
            if line.startswith("+"):
                added.add(line[1:])
            elif line.startswith("-"):
                removed.add(line[1:])
        return added, removed


def play(
    tmp_path: Path, variables: dict[str, Any], *args: str, prefix: tuple[str, ...] = ()
) -> Run:
    playbook = tmp_path / "push.yml"
    playbook.write_text(PLAYBOOK)
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(variables))
    command = [
        *prefix,
        str(ANSIBLE_PLAYBOOK),
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        "ansible_python_interpreter={{ ansible_playbook_python }}",
        "-e",
        f"@{extra}",
        str(playbook),
        *args,
    ]
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    process = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    return Run(process)


def plaintext(dest: Path, entries: list[str], generation: int = 3) -> dict[str, Any]:
    return {
        "push_blocklist_platform": "plaintext",
        "push_blocklist_dest": str(dest),
        "push_blocklist_entries": entries,
        "push_blocklist_generation": generation,
    }


FIRST = ["192.0.2.10", "198.51.100.0/24", "2001:db8::25"]
SECOND = ["192.0.2.10", "203.0.113.9", "2001:DB8::25", "2001:db8:1::/48"]


def test_real_run_writes_and_second_run_changes_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "feed" / "blocklist.txt"
    dest.parent.mkdir()

    first = play(tmp_path, plaintext(dest, FIRST))
    second = play(tmp_path, plaintext(dest, FIRST))

    assert (first.rc, first.changed) == (0, 1), first.output
    assert dest.read_text() == (
        "# smtpguard block list: 3 entries, generation 3\n"
        "192.0.2.10\n198.51.100.0/24\n2001:db8::25\n"
    )
    assert oct(dest.stat().st_mode & 0o777) == "0o644"
    assert (second.rc, second.changed, second.failed) == (0, 0, 0), second.output


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass


@pytest.fixture
def web() -> Iterator[Any]:
    """A web server on 127.0.0.1 serving a directory the test chooses, stopped afterwards."""
    servers: list[ThreadingHTTPServer] = []

    def serve(directory: Path) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=directory))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/blocklist.txt"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@contextmanager
def socket_bound() -> Iterator[int]:
    """A loopback port that is bound but not listening: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_feed_url_serving_the_file_just_written_passes(tmp_path: Path, web: Any) -> None:
    dest = tmp_path / "feed" / "blocklist.txt"
    dest.parent.mkdir()
    variables = {**plaintext(dest, FIRST), "push_blocklist_feed_url": web(dest.parent)}

    first = play(tmp_path, variables)
    second = play(tmp_path, {**variables, **plaintext(dest, SECOND)})

    assert (first.rc, first.failed) == (0, 0), first.output
    assert (second.rc, second.failed) == (0, 0), second.output
    assert "203.0.113.9" in dest.read_text()


def test_feed_url_serving_a_stale_copy_fails_and_says_so(tmp_path: Path, web: Any) -> None:
    dest = tmp_path / "feed" / "blocklist.txt"
    dest.parent.mkdir()
    stale = tmp_path / "docroot"
    stale.mkdir()
    (stale / "blocklist.txt").write_text("# smtpguard block list: 1 entries\n192.0.2.10\n")

    run = play(tmp_path, {**plaintext(dest, FIRST), "push_blocklist_feed_url": web(stale)})

    assert (run.rc, run.failed) != (0, 0), run.output
    assert "does not serve the feed just written" in run.output, run.output
    assert "devices polling it get an old block list" in run.output


def test_feed_url_that_does_not_answer_fails_naming_it(tmp_path: Path) -> None:
    dest = tmp_path / "blocklist.txt"
    with socket_bound() as port:
        url = f"http://127.0.0.1:{port}/blocklist.txt"
        run = play(tmp_path, {**plaintext(dest, FIRST), "push_blocklist_feed_url": url})

    assert run.failed == 1, run.output
    assert url in run.output


def test_check_mode_with_diff_writes_nothing_and_lists_the_changes(tmp_path: Path) -> None:
    dest = tmp_path / "blocklist.txt"
    play(tmp_path, plaintext(dest, FIRST))
    before = (dest.read_bytes(), dest.stat().st_mtime_ns)

    checked = play(tmp_path, plaintext(dest, SECOND), "--check", "--diff")

    assert (checked.rc, checked.changed) == (0, 1), checked.output
    assert (dest.read_bytes(), dest.stat().st_mtime_ns) == before
    assert checked.diff_lines() == ({"203.0.113.9", "2001:db8:1::/48"}, {"198.51.100.0/24"})
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "blocklist.txt",
        "push.yml",
        "vars.json",
    ]


def test_check_mode_creates_no_file(tmp_path: Path) -> None:
    dest = tmp_path / "blocklist.txt"

    checked = play(tmp_path, plaintext(dest, FIRST), "--check", "--diff")

    assert checked.rc == 0, checked.output
    assert not dest.exists()
    assert checked.diff_lines()[0] == {"192.0.2.10", "198.51.100.0/24", "2001:db8::25"}


@pytest.mark.parametrize("hostile", ["192.0.2.1\nflush ruleset", "mail.example.org", "{{ 7*7 }}"])
def test_hostile_entry_fails_before_anything_is_written(tmp_path: Path, hostile: str) -> None:
    dest = tmp_path / "blocklist.txt"

    failed = play(tmp_path, plaintext(dest, ["192.0.2.7", hostile]))

    assert failed.rc != 0
    assert failed.failed == 1
    assert "is not an IP address or network" in failed.output
    assert not dest.exists()


# nftables, applied for real inside a network namespace of the test's own


def _lab_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace and load nftables"
    for tool in ("nft", "ip"):
        if shutil.which(tool) is None:
            return f"needs the {tool} command"
    return None


@pytest.fixture
def netns() -> Iterator[str]:
    reason = _lab_missing()
    if reason:
        pytest.skip(reason)
    name = f"smtpguard-push-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def device_set(netns: str, name: str) -> list[str]:
    listing = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-j", "list", "set", "inet", "smtpguard", name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return nft_set_networks(listing)


def nftables(dest: Path, entries: list[str]) -> dict[str, Any]:
    return {
        "push_blocklist_platform": "nftables",
        "push_blocklist_dest": str(dest),
        "push_blocklist_entries": entries,
        "push_blocklist_apply": True,
        "push_blocklist_nft_drop_smtp": True,
        "push_blocklist_mode": "0600",
    }


def test_nftables_apply_verify_and_rollback(tmp_path: Path, netns: str) -> None:
    dest = tmp_path / "blocklist.nft"
    inside = ("ip", "netns", "exec", netns)
    first = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "198.51.100.0/24", "2001:db8::25"]

    applied = play(tmp_path, nftables(dest, first), prefix=inside)
    again = play(tmp_path, nftables(dest, first), prefix=inside)

    assert (applied.rc, applied.failed) == (0, 0), applied.output
    assert applied.changed >= 2
    assert device_set(netns, "blocked_v4") == blocklist_networks(first[:4], collapse=True)
    assert device_set(netns, "blocked_v6") == ["2001:db8::25"]
    assert (again.rc, again.changed) == (0, 0), again.output

    second = ["203.0.113.9", "2001:db8::/64"]
    replaced = play(tmp_path, nftables(dest, second), prefix=inside)
    assert (replaced.rc, replaced.failed) == (0, 0), replaced.output
    assert device_set(netns, "blocked_v4") == ["203.0.113.9"]
    assert device_set(netns, "blocked_v6") == ["2001:db8::/64"]
    assert sorted(path.name for path in tmp_path.glob("blocklist.nft*")) == ["blocklist.nft"]

    pushed = dest.read_bytes()
    checked = play(tmp_path, nftables(dest, first), "--check", "--diff", prefix=inside)
    assert (checked.rc, checked.changed) == (0, 1), checked.output
    assert checked.diff_lines() == (
        {f"\t{entry}," for entry in first},
        {"\t203.0.113.9,", "\t2001:db8::/64,"},
    )
    assert dest.read_bytes() == pushed
    assert device_set(netns, "blocked_v4") == ["203.0.113.9"]

    # A set that holds at most four elements makes the device refuse a longer list.
    subprocess.run(
        [*inside, "nft", "-f", "-"],
        input=(
            "flush chain inet smtpguard smtp_drop\n"
            "delete set inet smtpguard blocked_v4\n"
            "add set inet smtpguard blocked_v4 { type ipv4_addr; flags interval; size 4; }\n"
            "add element inet smtpguard blocked_v4 { 203.0.113.9 }\n"
        ),
        text=True,
        check=True,
    )
    kept = dest.read_bytes()
    too_long = [f"10.0.0.{n}" for n in range(1, 12, 2)]

    refused = play(tmp_path, nftables(dest, too_long), prefix=inside)

    assert refused.rc != 0
    assert refused.failed == 1
    assert "Could not process rule" in refused.output
    assert "previous block list file is restored and loaded again" in refused.output
    assert dest.read_bytes() == kept
    assert device_set(netns, "blocked_v4") == ["203.0.113.9"]
    assert sorted(path.name for path in tmp_path.glob("blocklist.nft*")) == ["blocklist.nft"]


# nftables failures, each named with the step and nft's words: a stand-in nft that records
# what it was asked and fails where a case says

FAKE_NFT = """#!/bin/sh
echo "nft $*" >> "{calls}"
if [ "$1" = "-f" ] && [ "$2" = "-" ]; then cat >> "{calls}"; exit 0; fi
if [ "$1" = "-f" ] && [ "$FAKE_NFT_FAIL" = "apply" ]; then
    echo "{dest}:40:1-20: Error: Could not process rule: No space left on device" >&2
    exit 1
fi
if [ "$1" = "--json" ] && [ "$FAKE_NFT_FAIL" = "read-back" ]; then
    echo "Error: JSON support not compiled-in" >&2
    exit 1
fi
exit 0
"""

NFT_FAILURES = [
    pytest.param(
        False,
        "read-back",
        [
            'failed at "Read the block list back from nftables": blocked_v4: Error: JSON support '
            "not compiled-in",
            "nft loaded the new block list, but it could not be verified; this was the first push",
            "the sets are emptied again, as they were before it, and the file is removed",
        ],
        id="first-push-read-back-fails",
    ),
    pytest.param(
        False,
        "apply",
        [
            'failed at "Apply the nftables block list":',
            "Could not process rule",
            "nft did not load the new block list",
            "there was no previous block list file, so the device is as it was",
        ],
        id="first-push-refused",
    ),
    pytest.param(
        True,
        "read-back",
        [
            'failed at "Read the block list back from nftables": blocked_v4:',
            "nft loaded the new block list, but it could not be verified; the previous block "
            "list file is restored and loaded again",
        ],
        id="later-push-read-back-fails",
    ),
]


@pytest.mark.parametrize(("had_previous", "fail", "said"), NFT_FAILURES)
def test_an_nftables_failure_says_which_step_failed_and_what_the_device_holds(
    tmp_path: Path, had_previous: bool, fail: str, said: list[str]
) -> None:
    dest, calls, bin_dir = tmp_path / "blocklist.nft", tmp_path / "calls", tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nft").write_text(FAKE_NFT.format(calls=calls, dest=dest))
    (bin_dir / "nft").chmod(0o755)
    previous = "# the previous block list\n"
    if had_previous:
        dest.write_text(previous)
    environment = ("env", f"PATH={bin_dir}:{os.environ['PATH']}", f"FAKE_NFT_FAIL={fail}")

    failed = play(tmp_path, nftables(dest, FIRST), prefix=environment)

    output = " ".join(failed.output.split())
    assert (failed.rc, failed.failed) != (0, 0)
    for words in said:
        assert words in output, failed.output
    asked = calls.read_text()
    emptied = "flush set inet smtpguard blocked_v4\nflush set inet smtpguard blocked_v6\n"
    assert (emptied in asked) == (not had_previous and fail == "read-back"), asked
    assert asked.count(f"nft -f {dest}") == (2 if had_previous else 1)
    assert (dest.read_text() if dest.exists() else None) == (previous if had_previous else None)
    assert sorted(path.name for path in tmp_path.glob("blocklist.nft*")) == (
        ["blocklist.nft"] if had_previous else []
    )
