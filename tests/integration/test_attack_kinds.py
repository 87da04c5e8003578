"""The attack kinds and the internal servers' figures on the shipped sample, against the answer
written beside it: every candidate carries the kind its answer names, the run shows all five,
and the server that answered with 421s has them counted."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_flood_analyze_module import run_module

from ansible_collections.campusnet.smtpguard.plugins.module_utils._analyze import (
    Settings,
    analyze,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "demo" / "sample"
MAIL, NOMAIL = "198.51.100.26", "198.51.100.27"

FEW, SLOW, STORM, MANY, MIXED = (
    "few_source_flood", "slow_post", "421_storm", "many_source_flood", "mixed")  # fmt: skip
# The answer's kind of a source -> the labels it must carry. The 421 storm's source also sends
# more than 300 sessions, so it is a few-source flood as well, and mixed.
LABELS = {
    "SMTP DoS": [FEW],
    "slow post": [SLOW],
    "421 storm": [FEW, STORM, MIXED],
    "SMTP DDoS": [MANY],
}


@pytest.fixture(scope="module")
def answer() -> dict:
    return yaml.safe_load((SAMPLE / "answer.yml").read_text())


def _options(answer: dict) -> dict:
    return {
        "paths": [str(SAMPLE / "mail.log*")],
        "capacity": answer["capacity"],
        "now": answer["now"],
        "timezone": answer["timezone"],
        "year": answer["year"],
        "rules": answer["rules"],
        "risk_source": "log",
        "postscreen_threshold": answer["dnsbl_threshold"],
        "servers": [{"name": "mail.campus.example", "address": MAIL}, NOMAIL],
    }


@pytest.fixture(scope="module")
def result(answer) -> dict:
    warnings: list[str] = []
    found = analyze(Settings(**_options(answer)), warn=warnings.append)
    assert warnings == []
    return found


def _expected_labels(answer: dict) -> dict[str, list[str]]:
    kinds = {source["ip"]: source["kind"] for source in answer["sources"]}
    candidates = [entry["ip"] for entry in answer["block"] + answer["spared"]]
    return {address: LABELS[kinds[address]] for address in candidates}


def test_every_candidate_carries_the_kind_of_its_answer(result, answer):
    labels = {candidate["ip"]: candidate["kinds"] for candidate in result["candidates"]}

    assert labels == _expected_labels(answer)
    assert set(labels) == {entry["ip"] for entry in answer["block"] + answer["spared"]}


def test_the_run_shows_all_five_kinds_with_the_numbers_of_the_answer(result, answer):
    sources = answer["sources"]
    attack = result["attack"]

    assert attack["kinds"] == [FEW, SLOW, STORM, MANY, MIXED]
    assert attack["numbers"] == {
        "few_source_flood_sources": sum(source["sessions"] >= 300 for source in sources),
        "slow_post_sources": sum(source["longest_session"] >= 200 for source in sources),
        "421_storm_sources": 1,
        "server_replies_421": 163,
        "flooding_sources": sum(source["sessions"] >= 40 for source in sources),
        "replies_421": 0,
        "tempfails": 0,
    }
    assert (attack["numbers"]["few_source_flood_sources"],
            attack["numbers"]["slow_post_sources"],
            attack["numbers"]["flooding_sources"]) == (3, 3, 17)  # fmt: skip


def test_the_storms_source_draws_the_421s_of_the_server_its_mail_went_to(result):
    (storm,) = [candidate for candidate in result["candidates"] if STORM in candidate["kinds"]]

    assert storm["ip"] == "203.0.113.30"
    assert storm["notes"] == {"server_421": 163}
    assert storm["kind_numbers"]["server_421"] == 163
    assert storm["kind_numbers"]["sessions"] == 310
    assert (storm["replies_421"], storm["tempfails"]) == (0, 0)


def test_internal_servers_are_reported_in_the_order_given_with_their_421s(result, answer):
    mail, nomail = result["servers"]
    share = answer["capacity"] * 25 // 100

    assert (mail["name"], mail["address"]) == ("mail.campus.example", MAIL)
    assert (nomail["name"], nomail["address"]) == (NOMAIL, NOMAIL)
    assert (nomail["sessions"], nomail["replies_421"], nomail["tempfails"]) == (163, 163, 163)
    assert (mail["replies_421"], mail["tempfails"]) == (0, 0)
    assert mail["sessions"] > nomail["sessions"]
    assert mail["capacity"] == nomail["capacity"] == share == 37
    assert not mail["over_share"] and not nomail["over_share"]
    assert 0 < nomail["peak_sessions"] <= mail["peak_sessions"] <= share


def test_without_servers_the_deliveries_are_not_read(answer):
    options = {**_options(answer), "servers": []}

    found = analyze(Settings(**options))

    assert found["servers"] == []
    assert found["attack"]["numbers"]["server_replies_421"] == 0
    storm = {candidate["ip"]: candidate for candidate in found["candidates"]}["203.0.113.30"]
    assert storm["kinds"] == [FEW]  # its 421s came from the server, which is not read now


def test_the_module_reports_the_kinds_and_servers_of_the_sample(answer, result):
    status, reported = run_module(_options(answer))

    assert status == "SUCCESS", reported
    assert reported["changed"] is False
    assert {found["ip"]: found["kinds"] for found in reported["candidates"]} == _expected_labels(
        answer
    )
    assert reported["attack"]["kinds"] == [FEW, SLOW, STORM, MANY, MIXED]
    nomail = reported["servers"][1]
    assert (nomail["address"], nomail["sessions"], nomail["replies_421"]) == (NOMAIL, 163, 163)
    assert reported["attack"] == result["attack"]
    assert reported["servers"] == result["servers"]
