"""push_blocklist_capacity run through the role: a whole number of entries or null, nothing
else; `true` is not a capacity of one."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"
PLAYBOOK = """\
- name: Push a block list
  hosts: localhost
  gather_facts: false
  roles:
    - role: campusnet.smtpguard.push_blocklist
      # role vars, not extra vars: the role passes the fitted list on, and extra vars win
      vars: {push_blocklist_entries: ["192.0.2.7", "198.51.100.25", "203.0.113.9"]}
"""

pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="needs .venv (make setup)")


def play(tmp_path: Path, capacity: Any) -> tuple[int, str]:
    (tmp_path / "push.yml").write_text(PLAYBOOK)
    variables = {
        "push_blocklist_platform": "plaintext",
        "push_blocklist_dest": str(tmp_path / "feed.txt"),
        "push_blocklist_capacity": capacity,
        "push_blocklist_header": False,
    }
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    done = subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            "ansible_python_interpreter={{ ansible_playbook_python }}",
            "-e",
            f"@{tmp_path / 'vars.json'}",
            str(tmp_path / "push.yml"),
        ],
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("capacity", [True, "true", -1])
def test_a_capacity_that_is_not_a_whole_number_is_refused(tmp_path: Path, capacity: Any) -> None:
    rc, output = play(tmp_path, capacity)

    assert rc != 0
    assert (
        "must be a whole number of entries" in output or "cannot be converted to an int" in output
    )
    assert not (tmp_path / "feed.txt").exists()


@pytest.mark.parametrize(("capacity", "kept"), [("2", 2), (0, 3)])
def test_a_whole_number_or_null_is_taken(tmp_path: Path, capacity: Any, kept: int) -> None:
    rc, output = play(tmp_path, capacity)

    assert rc == 0, output
    assert len((tmp_path / "feed.txt").read_text().splitlines()) == kept
