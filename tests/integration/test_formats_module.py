"""campusnet.smtpguard.flood_analyze run by Ansible itself on each format's scenario, checked
against the answer its generator wrote beside it (tests/data/formats/<format>/)."""

from __future__ import annotations

import json
from pathlib import Path

from test_flood_analyze_module import run_module

DATA = Path(__file__).resolve().parent.parent / "data" / "formats"


def test_cisco_esa_scenario_through_the_module_with_auto_detection():
    directory = DATA / "cisco_esa"
    answer = json.loads((directory / "answer.json").read_text())

    status, result = run_module({
        "paths": [str(directory / "mail_logs")],
        "capacity": answer["capacity"],
        "window": answer["window"],
        "now": answer["now"],
        "timezone": "UTC",
        "servers": [answer["server"]["address"]],
    })  # fmt: skip

    assert status == "SUCCESS", result
    assert result["changed"] is False
    assert result["stats"]["format"] == "cisco_esa"
    assert (result["triggered"], result["alert"]) == (True, False)
    assert {
        found["ip"]: {"rule": found["rule"], "rules": found["rules"], "sessions": found["sessions"]}
        for found in result["candidates"]
    } == answer["candidates"]
    # Risk comes from the SBRS on the policy lines (the default risk_source: log).
    assert {found["ip"]: found["risk"] for found in result["candidates"]} == {
        "203.0.113.9": 97.5, "198.51.100.7": 95.0, "192.0.2.200": 0.0}  # fmt: skip
    occupancy = result["occupancy"]
    assert {key: occupancy[key] for key in answer["occupancy"]} == answer["occupancy"]
    (server,) = result["servers"]
    assert {key: server[key] for key in answer["server"]} == answer["server"]
    assert result["stats"]["skipped"] == 0
