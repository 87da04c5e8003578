"""The sample generator drives a real Postfix, and the analysis agrees with its answer.

Runs tools/sample/make_sample.py in quick mode (about a minute and a half): a network
namespace, Postfix with postscreen and its own log, dnsmasq for the DNSBL zones and the
attack driver. The script itself refuses to write a sample unless its driver's record and an
independent reader of the log agree; here flood_analyze must agree with both.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.campusnet.smtpguard.plugins.module_utils._analyze import (
    Settings,
    analyze,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("sample")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "sample" / "make_sample.py"),
            "--quick",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return output / "sample"


@pytest.fixture(scope="module")
def answer(sample) -> dict:
    return yaml.safe_load((sample / "answer.yml").read_text())


@pytest.fixture(scope="module")
def result(sample, answer) -> dict:
    return analyze(
        Settings(
            paths=[str(sample / "mail.log*")],
            capacity=answer["capacity"],
            timezone=answer["timezone"],
            postscreen_threshold=answer["dnsbl_threshold"],
            rules=answer["rules"],
        )
    )


def test_log_is_a_rotated_family_written_by_postfix(sample, result):
    names = sorted(path.name for path in sample.glob("mail.log*"))
    assert len(names) == 2 and names[0] == "mail.log" and names[1].endswith(".gz")
    assert result["stats"]["skipped"] == 0
    assert result["stats"]["sessions"] > 0


def test_occupancy_at_now_matches_the_answer(result, answer):
    assert result["occupancy"]["current_sessions"] == answer["occupancy"]["current_sessions"]
    assert result["triggered"] is answer["triggered"]


def test_candidates_match_the_answer(result, answer):
    expected = {entry["ip"]: entry["rule"] for entry in answer["block"] + answer["spared"]}
    assert {entry["ip"]: entry["rule"] for entry in result["candidates"]} == expected


def test_near_misses_are_not_candidates(result, answer):
    selected = {entry["ip"] for entry in result["candidates"]}
    assert not selected & {entry["ip"] for entry in answer["not_candidates"]}
