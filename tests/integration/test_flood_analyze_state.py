"""flood_analyze's state_path through Ansible: check mode reads it but never writes it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from support.logs import NOW, PostfixLog, iso

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / ".venv" / "bin" / "ansible"
MODULE = "campusnet.smtpguard.flood_analyze"


def _run(args: dict, *, check: bool = False) -> dict:
    command = [str(ANSIBLE), "localhost", "-m", MODULE, "-a", json.dumps(args)]
    if check:
        command.append("--check")
    environment = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}
    done = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300, check=False
    )
    _, found, line = done.stdout.partition("localhost | ")
    assert found and done.returncode == 0, done.stdout + done.stderr
    return json.loads(line.partition(" => ")[2])


def test_check_mode_leaves_the_state_alone_and_a_real_run_goes_on_from_it(tmp_path):
    live, state = tmp_path / "mail.log", tmp_path / "state" / "gw1.json"
    log = PostfixLog()
    log.sessions("203.0.113.9", 5, start=NOW - 900, duration=25, spacing=60)
    log.connect(NOW - 500, "198.51.100.7", pid=7000)
    log.write(live)
    args = {"paths": [str(live)], "capacity": 50, "now": iso(NOW - 400), "timezone": "UTC",
            "force": True, "risk_source": "none", "state_path": str(state),
            "rules": [{"name": "any", "min_duration": 0, "min_sessions": 1,
                       "min_risk": 0}]}  # fmt: skip

    checked = _run(args, check=True)
    assert checked["state"] == {"path": str(state), "resumed": False,
                                "full_read": "no state yet", "written": False}  # fmt: skip
    assert not state.exists()

    first = _run(args)
    assert first["state"]["written"] is True
    assert state.exists()

    with open(live, "ab") as handle:
        handle.write(PostfixLog().disconnect(NOW - 10, "198.51.100.7", pid=7000).data())
    again = _run({**args, "now": None})

    assert again["state"]["resumed"] is True
    assert {c["ip"]: c["longest_session"] for c in again["candidates"]}["198.51.100.7"] == 490
