"""fetch_logs copies a gateway's logs to the controller, then the analysis reads the copies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "demo" / "sample"

PLAYBOOK = """
- name: Fetch and analyse
  hosts: gw
  gather_facts: false
  roles:
    - role: campusnet.smtpguard.fetch_logs
    - role: campusnet.smtpguard.analyze
  post_tasks:
    - name: Save what the roles found
      ansible.builtin.copy:
        content: "{{ {'paths': fetch_logs_result_paths, 'result': analyze_result} | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
      delegate_to: localhost
"""


def run(tmp_path: Path, paths: list[str]) -> tuple[subprocess.CompletedProcess, Path]:
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    inventory = {
        "all": {
            "hosts": {
                "gw": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable,
                    "fetch_logs_method": "fetch",
                    "fetch_logs_paths": paths,
                    "fetch_logs_dest": str(tmp_path / "fetched"),
                    "analyze_capacity": 150,
                    "analyze_timezone": "UTC",
                    "analyze_postscreen_threshold": 3,
                    "smtpguard_work_dir": str(tmp_path / "work"),
                    "out": str(tmp_path / "out.json"),
                }
            }
        }
    }
    (tmp_path / "inventory.json").write_text(json.dumps(inventory))
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(tmp_path / "inventory.json"),
            str(tmp_path / "play.yml"),
        ],
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done, tmp_path / "out.json"


def test_fetch_copies_the_rotated_family_and_the_analysis_reads_it(tmp_path):
    done, out = run(tmp_path, [str(SAMPLE / "mail.log*")])

    assert done.returncode == 0, done.stdout + done.stderr
    fetched = sorted(path.name for path in (tmp_path / "fetched").iterdir())
    assert fetched == sorted(path.name for path in SAMPLE.glob("mail.log*"))
    for name in fetched:
        assert (tmp_path / "fetched" / name).read_bytes() == (SAMPLE / name).read_bytes()
    saved = json.loads(out.read_text())
    assert all(path.startswith(str(tmp_path / "fetched")) for path in saved["paths"])
    assert saved["result"]["occupancy"]["current_sessions"] == 45
    assert len(saved["result"]["candidates"]) == 16


def test_fetch_names_the_patterns_when_nothing_matches(tmp_path):
    done, _ = run(tmp_path, [str(tmp_path / "nowhere" / "mail.log*")])

    assert done.returncode != 0
    assert "nowhere/mail.log*" in done.stdout
