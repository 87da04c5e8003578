"""The Exim and Sendmail scenarios end to end: analyze() and one run of the real module each,
checked against the answer their generators (tests/support/make_exim.py, make_sendmail.py)
computed from the sessions they wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_flood_analyze_module import run_module

from ansible_collections.campusnet.smtpguard.plugins.module_utils._analyze import (
    Settings,
    analyze,
)
from support import make_exim, make_sendmail

DATA = Path(__file__).resolve().parent.parent / "data" / "formats"
SCENARIOS = [("exim", "mainlog", make_exim), ("sendmail", "maillog", make_sendmail)]


def options(directory: Path, log: str) -> dict:
    return {
        "paths": [str(directory / log)],
        "capacity": 100,
        "now": "2026-12-03T10:00:00+00:00",
        "timezone": "UTC",
        "risk_source": "file",
        "risk_file": str(directory / "risk.csv"),
    }


def expected_candidates(answer: dict) -> dict:
    return {
        ip: (found["rule"], found["rules"], found["sessions"], found["longest_session"],
             found["open_sessions"])
        for ip, found in answer["candidates"].items()
    }  # fmt: skip


def found_candidates(result: dict) -> dict:
    return {
        found["ip"]: (found["rule"], found["rules"], found["sessions"], found["longest_session"],
                      found["open_sessions"])
        for found in result["candidates"]
    }  # fmt: skip


@pytest.mark.parametrize(("name", "log", "generator"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenario_files_are_what_the_generator_writes(tmp_path, name, log, generator):
    generator.main(tmp_path)

    for written in tmp_path.iterdir():
        assert written.read_bytes() == (DATA / name / written.name).read_bytes(), written.name


@pytest.mark.parametrize(("name", "log", "generator"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenario_answer_through_analyze(name, log, generator):
    answer = json.loads((DATA / name / "answer.json").read_text())

    result = analyze(Settings(**options(DATA / name, log)))

    assert result["stats"]["format"] == name  # detected, format is auto
    assert result["stats"]["skipped"] == 0
    assert result["occupancy"]["current_sessions"] == answer["current_sessions"]
    assert result["occupancy"]["peak_sessions"] == answer["peak_sessions"]
    assert result["triggered"] is True
    assert found_candidates(result) == expected_candidates(answer)
    assert result["stats"]["sessions"] == sum(answer["sessions"].values())


@pytest.mark.parametrize(("name", "log", "generator"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenario_answer_through_the_module(tmp_path, name, log, generator):
    directory = tmp_path / name
    shutil.copytree(DATA / name, directory)
    answer = json.loads((directory / "answer.json").read_text())

    status, result = run_module(options(directory, log))

    assert status == "SUCCESS", result
    assert result["stats"]["format"] == name
    assert result["occupancy"]["current"] == float(answer["current_sessions"])
    assert found_candidates(result) == expected_candidates(answer)
