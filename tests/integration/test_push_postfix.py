"""push_blocklist to Postfix with the real postmap and postfix commands: an indexed access
table is compiled, and a failed postmap or postfix reload puts back the previous table and its
map and fails with Postfix's own message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"
PLAYBOOK = """\
- name: Push a block list to Postfix
  hosts: localhost
  gather_facts: false
  roles:
    - role: campusnet.smtpguard.push_blocklist
"""
FIRST = ["192.0.2.7", "198.51.100.0/24"]
SECOND = ["192.0.2.7", "203.0.113.9", "2001:db8::25"]

pytestmark = [
    pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="needs .venv (make setup)"),
    pytest.mark.skipif(
        not all(shutil.which(tool) for tool in ("postmap", "postfix", "script")),
        reason="needs Postfix (Debian package postfix) and script (util-linux)",
    ),
]


def play(tmp_path: Path, variables: dict[str, Any], *, path: str | None = None) -> tuple:
    (tmp_path / "push.yml").write_text(PLAYBOOK)
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    if path:
        env["PATH"] = f"{path}:{env['PATH']}"
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
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def postfix_dir(tmp_path: Path) -> Path:
    """A configuration directory of a Postfix instance that is not running."""
    config = tmp_path / "postfix"
    config.mkdir(exist_ok=True)
    (config / "main.cf").write_text("compatibility_level = 3.6\n")
    (config / "master.cf").write_text("")
    return config


def table(tmp_path: Path, entries: list[str], map_type: str, **extra: Any) -> dict[str, Any]:
    return {
        "push_blocklist_platform": "postfix",
        "push_blocklist_dest": str(tmp_path / "blocked"),
        "push_blocklist_entries": entries,
        "push_blocklist_postfix_map_type": map_type,
        "push_blocklist_postfix_config_dir": str(postfix_dir(tmp_path)),
        "push_blocklist_header": False,
        **extra,
    }


def lookup(tmp_path: Path, key: str) -> str:
    done = subprocess.run(
        ["postmap", "-c", str(postfix_dir(tmp_path)), "-q", key, f"hash:{tmp_path / 'blocked'}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def files(tmp_path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("blocked")}


def test_a_hash_table_is_compiled_and_reloaded_once(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "postfix").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "postfix").chmod(0o755)  # stands in for a running Postfix; postmap is real

    first = play(tmp_path, table(tmp_path, FIRST, "hash"), path=str(bin_dir))
    again = play(tmp_path, table(tmp_path, FIRST, "hash"), path=str(bin_dir))

    assert first[0] == 0 and again[0] == 0, first[1] + again[1]
    assert (tmp_path / "blocked").read_text() == "192.0.2.7\tREJECT\n198.51.100\tREJECT\n"
    assert (lookup(tmp_path, "192.0.2.7"), lookup(tmp_path, "198.51.100")) == ("REJECT", "REJECT")
    assert calls.read_text() == f"-c {postfix_dir(tmp_path)} reload\n"
    assert sorted(files(tmp_path)) == ["blocked", "blocked.db"]


@pytest.mark.parametrize("map_type", ["cidr", "hash"])
def test_a_failed_reload_puts_back_the_table_and_its_map(tmp_path: Path, map_type: str) -> None:
    kept = play(tmp_path, table(tmp_path, FIRST, map_type, push_blocklist_postfix_reload=False))
    assert kept[0] == 0, kept[1]
    before = files(tmp_path)

    rc, output = play(tmp_path, table(tmp_path, SECOND, map_type))

    assert rc != 0
    assert "postfix/postfix-script: fatal: the Postfix mail system is not running" in output
    assert "back in place" in output
    assert files(tmp_path) == before  # the table, its .db, and no copies left
    if map_type == "hash":
        assert (lookup(tmp_path, "198.51.100"), lookup(tmp_path, "203.0.113.9")) == ("REJECT", "")


def test_a_failed_postmap_puts_back_the_table_and_its_map(tmp_path: Path) -> None:
    kept = play(tmp_path, table(tmp_path, FIRST, "hash", push_blocklist_postfix_reload=False))
    assert kept[0] == 0, kept[1]
    before = files(tmp_path)
    variables = table(tmp_path, SECOND, "hash")
    (postfix_dir(tmp_path) / "main.cf").unlink()  # postmap -c now fails reading it

    rc, output = play(tmp_path, variables)

    assert rc != 0
    assert "postmap: fatal: open" in output and "main.cf" in output
    assert files(tmp_path) == before
    assert lookup(tmp_path, "198.51.100") == "REJECT"


def test_a_first_table_whose_reload_fails_is_removed(tmp_path: Path) -> None:
    rc, output = play(tmp_path, table(tmp_path, FIRST, "hash"))

    assert rc != 0
    assert "the Postfix mail system is not running" in output
    assert files(tmp_path) == {}


def test_an_indexed_table_refuses_a_network_it_cannot_match(tmp_path: Path) -> None:
    rc, output = play(tmp_path, table(tmp_path, ["192.0.2.7", "198.51.96.0/20"], "hash"))

    assert rc != 0
    assert "cannot hold 198.51.96.0/20; use push_blocklist_postfix_map_type cidr" in output
    assert files(tmp_path) == {}
