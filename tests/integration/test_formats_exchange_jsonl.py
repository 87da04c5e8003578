"""The Exchange and JSON-lines scenarios end to end: analyze(), state_path, and the module."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._analyze import (
    Settings,
    analyze,
)
from support import make_exchange, make_jsonl

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "formats"
ANSIBLE = ROOT / ".venv" / "bin" / "ansible"
EXCHANGE = DATA / "exchange"
JSONL = DATA / "jsonl"


def answer_of(directory: Path) -> dict:
    return json.loads((directory / "answer.json").read_text())


def exchange_settings(directory: Path, **extra) -> Settings:
    answer = answer_of(EXCHANGE)
    options = {
        "paths": [str(directory / "RECV*.LOG"), str(directory / "SEND*.LOG")],
        "capacity": answer["capacity"],
        "now": answer["now"],
        "timezone": "UTC",
        "risk_source": "file",
        "risk_file": str(EXCHANGE / "risk.csv"),
        "servers": [answer["server"]["address"]],
        **extra,
    }
    return Settings(**options)


def jsonl_settings(path: Path, **extra) -> Settings:
    answer = answer_of(JSONL)
    options = {
        "paths": [str(path)],
        "capacity": answer["capacity"],
        "now": answer["now"],
        "timezone": "UTC",
        "format_options": {
            "jsonl_fields": answer["jsonl_fields"],
            "jsonl_events": answer["jsonl_events"],
        },
        "servers": [answer["server"]["address"]],
        **extra,
    }
    return Settings(**options)


def chosen(result: dict) -> dict[str, str]:
    return {candidate["ip"]: candidate["rule"] for candidate in result["candidates"]}


def server_of(result: dict, address: str) -> dict:
    (server,) = [server for server in result["servers"] if server["address"] == address]
    return {key: server[key] for key in ("sessions", "current_sessions", "peak_sessions")}


@pytest.mark.parametrize(
    ("make", "directory"),
    [(make_exchange, EXCHANGE), (make_jsonl, JSONL)],
    ids=["exchange", "jsonl"],
)
def test_the_scenario_files_are_what_their_generator_writes(tmp_path, make, directory):
    answer = make.write(tmp_path)

    assert answer == answer_of(directory)
    for path in tmp_path.iterdir():
        assert path.read_bytes() == (directory / path.name).read_bytes(), path.name


def test_exchange_scenario_gives_its_known_answer():
    answer = answer_of(EXCHANGE)
    warnings: list[str] = []

    result = analyze(exchange_settings(EXCHANGE), warn=warnings.append)

    assert result["stats"]["format"] == "exchange"
    assert chosen(result) == answer["candidates_with_risk_file"]
    assert result["occupancy"]["current_sessions"] == answer["current_sessions"]
    assert result["occupancy"]["peak_sessions"] == answer["peak_sessions"]
    assert (result["triggered"], result["alert"]) == (True, False)
    assert result["stats"]["skipped"] == 0 and result["stats"]["bad_addresses"] == 0
    assert result["stats"]["start_unknown"] == 0  # the session across the roll is one session
    server = answer["server"]
    assert server_of(result, server["address"]) == {
        key: server[key] for key in ("sessions", "current_sessions", "peak_sessions")
    }
    assert warnings == []


def test_exchange_scenario_without_risk_selects_only_by_session_count():
    result = analyze(exchange_settings(EXCHANGE, risk_source="log"))

    assert chosen(result) == answer_of(EXCHANGE)["candidates_from_log"]
    (flood,) = result["candidates"]
    assert (flood["sessions"], flood["risk_known"]) == (310, False)


def test_jsonl_scenario_gives_its_known_answer():
    answer = answer_of(JSONL)
    warnings: list[str] = []

    result = analyze(jsonl_settings(JSONL / "gateway.jsonl"), warn=warnings.append)

    assert result["stats"]["format"] == "jsonl"
    assert chosen(result) == answer["candidates"]
    assert result["stats"]["sessions"] == answer["sessions"]
    assert result["occupancy"]["current_sessions"] == answer["current_sessions"]
    assert result["occupancy"]["peak_sessions"] == answer["peak_sessions"]
    assert (result["triggered"], result["alert"]) == (True, False)
    assert result["stats"]["skipped"] == answer["skipped"]
    assert result["stats"]["start_unknown"] == 0  # a close after its timeout is no new session
    server = answer["server"]
    assert server_of(result, server["address"]) == {
        key: server[key] for key in ("sessions", "current_sessions", "peak_sessions")
    }
    assert {candidate["ip"]: candidate["risk"] for candidate in result["candidates"]} == {
        "203.0.113.50": 60.0,
        "203.0.113.9": 96.0,
        "198.51.100.23": 97.0,
    }
    assert warnings == [f"skipped {answer['skipped']} of 900 log lines that could not be parsed"]


def _comparable(result: dict) -> dict:
    stats = {key: value for key, value in result["stats"].items() if key not in ("seconds",)}
    return {**{k: v for k, v in result.items() if k not in ("stats", "state")}, "stats": stats}


def test_exchange_read_on_with_state_path_mid_file_equals_a_full_read(tmp_path):
    # The first run stops in the middle of the 10:xx file, after its header; the second goes
    # on there and must read its lines by the header the first run kept.
    for path in EXCHANGE.glob("*.LOG"):
        shutil.copy(path, tmp_path / path.name)
    live = tmp_path / "RECV2026120310-1.LOG"
    lines = live.read_bytes().splitlines(keepends=True)
    live.write_bytes(b"".join(lines[: len(lines) // 2]))
    state = tmp_path / "state.json"

    analyze(exchange_settings(tmp_path, state_path=str(state)))
    live.write_bytes(b"".join(lines))
    resumed = analyze(exchange_settings(tmp_path, state_path=str(state)))
    full = analyze(exchange_settings(tmp_path))

    assert resumed["state"]["resumed"] is True, resumed["state"]
    assert json.loads(state.read_text())["engine"]["format_state"]["exchange"]["log_type"]
    assert _comparable(resumed) == _comparable(full)


def test_jsonl_read_on_with_state_path_between_a_timeout_and_its_close_equals_a_full_read(
    tmp_path,
):
    lines = (JSONL / "gateway.jsonl").read_bytes().splitlines(keepends=True)
    cut = next(index for index, line in enumerate(lines) if b'"timeout"' in line) + 1
    live = tmp_path / "gateway.jsonl"
    live.write_bytes(b"".join(lines[:cut]))
    state = tmp_path / "state.json"

    analyze(jsonl_settings(live, state_path=str(state)))
    live.write_bytes(b"".join(lines))
    resumed = analyze(jsonl_settings(live, state_path=str(state)))
    full = analyze(jsonl_settings(live))

    assert resumed["state"]["resumed"] is True, resumed["state"]
    assert _comparable(resumed) == _comparable(full)
    assert resumed["stats"]["start_unknown"] == 0


def run_module(args: dict) -> tuple[str, dict]:
    """Run flood_analyze on localhost through `ansible` from the repository (its ansible.cfg)."""
    command = [
        str(ANSIBLE),
        "localhost",
        "-m",
        "campusnet.smtpguard.flood_analyze",
        "-a",
        json.dumps(args),
    ]
    environment = {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    }
    done = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300, check=False
    )
    _, found, rest = done.stdout.partition("localhost | ")
    assert found, done.stdout + done.stderr
    status, _, body = rest.partition(" => ")
    return status, json.loads(body)


def test_module_reads_the_exchange_scenario_by_auto_detection():
    answer = answer_of(EXCHANGE)

    status, result = run_module(
        {
            "paths": [str(EXCHANGE / "*.LOG")],
            "capacity": answer["capacity"],
            "now": answer["now"],
            "timezone": "UTC",
            "risk_source": "file",
            "risk_file": str(EXCHANGE / "risk.csv"),
            "servers": [answer["server"]["address"]],
        }
    )

    assert status == "SUCCESS", result
    assert result["stats"]["format"] == "exchange"
    assert chosen(result) == answer["candidates_with_risk_file"]
    assert result["occupancy"]["current_sessions"] == answer["current_sessions"]
    assert result["servers"][0]["current_sessions"] == answer["server"]["current_sessions"]


def test_module_reads_the_jsonl_scenario_by_its_field_mapping():
    answer = answer_of(JSONL)

    status, result = run_module(
        {
            "paths": [str(JSONL / "gateway.jsonl")],
            "capacity": answer["capacity"],
            "now": answer["now"],
            "timezone": "UTC",
            "jsonl_fields": answer["jsonl_fields"],
            "jsonl_events": answer["jsonl_events"],
        }
    )

    assert status == "SUCCESS", result
    assert result["stats"]["format"] == "jsonl"
    assert chosen(result) == answer["candidates"]
    assert result["occupancy"]["peak_sessions"] == answer["peak_sessions"]


def test_module_refuses_a_bad_jsonl_mapping_naming_the_option():
    status, result = run_module(
        {
            "paths": [str(JSONL / "gateway.jsonl")],
            "capacity": 10,
            "format": "jsonl",
            "jsonl_fields": {"address": "client.ip"},
        }
    )

    assert status == "FAILED!", result
    assert "jsonl_fields: 'address' is not a role" in result["msg"]
