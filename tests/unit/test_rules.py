"""Rules at their boundaries, through the whole engine: log in, candidates out."""

from __future__ import annotations

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._rules import (
    DEFAULT_RULES,
    RuleError,
    load_rules,
    thresholds,
)
from support.logs import NOW, PostfixLog, by_source, contract, run_analysis

SOURCE = "203.0.113.9"


def _analyse(tmp_path, *, duration, count, risk=None, rules=None, unknown_risk=0.0):
    """`count` sessions of `SOURCE` lasting `duration` s (None: still open, started 60 s
    before now), with `risk` in a risk file; the paper's rules unless `rules`."""
    log = PostfixLog()
    start = NOW - 60 if duration is None else NOW - 1500
    log.sessions(
        SOURCE, count, start=start, duration=duration, spacing=0.5 if duration is None else 1
    )
    log.session("192.0.2.200", start=NOW - 100, duration=90)  # a neighbour that matches nothing
    log.write(tmp_path / "mail.log")
    risk_file = tmp_path / "risk.csv"
    risk_file.write_text("ip,risk\n" + ("" if risk is None else f"{SOURCE},{risk}\n"))
    return run_analysis(
        tmp_path / "mail.log",
        rules=rules,
        risk_source="file",
        risk_file=str(risk_file),
        unknown_risk=unknown_risk,
    )


BOUNDARIES = [
    # duration s, sessions, risk %, first rule, all rules
    pytest.param(20, 40, 95, "cond1", ["cond1"], id="cond1-at-every-boundary"),
    pytest.param(19, 40, 95, None, [], id="cond1-19s"),
    pytest.param(20, 39, 95, None, [], id="cond1-39-sessions"),
    pytest.param(20, 40, 94.9, None, [], id="cond1-risk-94.9"),
    pytest.param(200, 1, 95, "cond2", ["cond2"], id="cond2-at-every-boundary"),
    pytest.param(199, 1, 95, None, [], id="cond2-199s"),
    pytest.param(200, 1, 94.9, None, [], id="cond2-risk-94.9"),
    pytest.param(1, 300, 0, "cond3", ["cond3"], id="cond3-300-sessions"),
    pytest.param(0, 300, None, "cond3", ["cond3"], id="cond3-zero-length-no-risk"),
    pytest.param(1, 299, 100, None, [], id="cond3-299-sessions"),
    pytest.param(200, 40, 95, "cond1", ["cond1", "cond2"], id="cond1-before-cond2"),
    pytest.param(200, 300, 100, "cond1", ["cond1", "cond2", "cond3"], id="all-three"),
    pytest.param(None, 40, 95, "cond1", ["cond1"], id="open-sessions-count-with-age"),
]


@pytest.mark.parametrize(("duration", "count", "risk", "rule", "rules"), BOUNDARIES)
def test_default_rules_at_their_boundaries(tmp_path, duration, count, risk, rule, rules):
    result = _analyse(tmp_path, duration=duration, count=count, risk=risk)

    candidates = by_source(result)
    if rule is None:
        assert SOURCE not in candidates
        return
    candidate = candidates[SOURCE]
    assert (candidate["rule"], candidate["rules"]) == (rule, rules)
    assert candidate["sessions"] == count
    assert candidate["risk"] == (0.0 if risk is None else risk)
    assert candidate["open_sessions"] == (count if duration is None else 0)


def test_candidate_reports_the_evidence_of_its_first_rule(tmp_path):
    log = PostfixLog()
    log.sessions(SOURCE, 40, start=NOW - 1500, duration=25)
    log.sessions(SOURCE, 10, start=NOW - 1000, duration=5)
    log.session(SOURCE, start=NOW - 45, duration=None)
    log.write(tmp_path / "mail.log")
    (tmp_path / "risk.csv").write_text(f"{SOURCE},96\n")

    result = run_analysis(
        tmp_path / "mail.log", rules=None, risk_source="file", risk_file=str(tmp_path / "risk.csv")
    )

    assert [contract(candidate) for candidate in result["candidates"]] == [
        {
            "ip": SOURCE,
            "rule": "cond1",
            "rules": ["cond1"],
            "sessions": 51,
            "qualifying_sessions": 41,
            "longest_session": 45,
            "open_sessions": 1,
            "risk": 96.0,
        }
    ]
    assert result["candidates"][0]["risk_known"] is True
    assert [rule["name"] for rule in result["rules"]] == ["cond1", "cond2", "cond3"]


def test_unknown_risk_stands_in_for_a_missing_score(tmp_path):
    result = _analyse(tmp_path, duration=250, count=1, risk=None, unknown_risk=95)

    assert by_source(result)[SOURCE]["rule"] == "cond2"
    assert by_source(result)[SOURCE]["risk_known"] is False


CUSTOM = [
    {"name": "long", "min_duration": "3m", "min_sessions": 2, "min_risk": 0},
    {"name": "many", "min_duration": 0, "min_sessions": 5, "min_risk": 0},
]


@pytest.mark.parametrize(
    ("rules", "duration", "rule", "matched"),
    [
        pytest.param(CUSTOM, 180, "long", ["long", "many"], id="first-in-list-order"),
        pytest.param(CUSTOM[::-1], 180, "many", ["many", "long"], id="reversed-order"),
        pytest.param(CUSTOM, 179, "many", ["many"], id="179s-is-under-3m"),
        pytest.param(CUSTOM[:1], 179, None, [], id="no-rule-matches"),
    ],
)
def test_custom_rules_apply_in_list_order(tmp_path, rules, duration, rule, matched):
    result = _analyse(tmp_path, duration=duration, count=5, risk=10, rules=rules)

    candidate = by_source(result).get(SOURCE, {"rule": None, "rules": []})
    assert (candidate["rule"], candidate["rules"]) == (rule, matched)
    assert result["rules"] == [
        {
            **item,
            "min_duration": {"3m": 180.0, 0: 0.0}[item["min_duration"]],
            "min_risk": float(item["min_risk"]),
        }
        for item in rules
    ]


INVALID = [
    pytest.param([CUSTOM[0], CUSTOM[0]], "rule 'long' is defined twice", id="duplicate-name"),
    pytest.param(
        [{"name": "r", "min_duration": 0, "min_sessions": 0}],
        "rule 'r' min_sessions must be at least 1, not 0",
        id="min-sessions-0",
    ),
    pytest.param(
        [{"name": "r", "min_duration": 0, "min_sessions": 1.5}],
        "rule 'r' min_sessions must be a whole",
        id="min-sessions-fraction",
    ),
    pytest.param(
        [{"name": "r", "min_sessions": 1, "min_duration": 0, "min_risk": 101}],
        "rule 'r' min_risk must be a percentage from 0 to 100, not 101",
        id="min-risk-101",
    ),
    pytest.param(
        [{"name": "r", "min_sessions": 1, "min_duration": 0, "min_risk": -1}],
        "rule 'r' min_risk must be a percentage",
        id="min-risk-negative",
    ),
    pytest.param(
        [{"name": "r", "min_sessions": 1, "min_duration": 0, "min_risk": "high"}],
        "rule 'r' min_risk must be a number",
        id="min-risk-text",
    ),
    pytest.param(
        [{"name": "r", "min_sessions": 1, "min_duration": "twenty"}],
        "rule 'r' min_duration: 'twenty' is not a duration",
        id="bad-duration",
    ),
    pytest.param(
        [{"name": "r", "min_sessions": 1, "min_duration": -20}],
        "rule 'r' min_duration: -20 is negative",
        id="negative-duration",
    ),
    pytest.param(
        [{"name": "manual"}],
        "rule 'manual' needs min_duration and min_sessions",
        id="name-only",
    ),
    pytest.param(
        [{"name": "r", "min_duration": 0, "min_sessions": "inf"}],
        "rule 'r' min_sessions must be a finite number",
        id="min-sessions-inf",
    ),
    pytest.param([], "rules is empty", id="empty-list"),
    pytest.param(["cond1"], "rule 1 must be a mapping", id="not-a-mapping"),
]


@pytest.mark.parametrize(("rules", "message"), INVALID)
def test_invalid_rules_give_an_error_naming_the_rule(rules, message):
    with pytest.raises(RuleError) as caught:
        load_rules(rules)

    assert message in str(caught.value)


def test_invalid_rules_stop_the_analysis_before_reading(tmp_path):
    with pytest.raises(RuleError, match="min_sessions must be at least 1"):
        run_analysis(
            tmp_path / "never-read.log",
            rules=[{"name": "r", "min_duration": 0, "min_sessions": 0}],
        )


def test_default_rules_are_the_papers_three():
    rules = load_rules(None)

    assert [rule.as_dict() for rule in rules] == [
        {"name": "cond1", "min_duration": 20.0, "min_sessions": 40, "min_risk": 95.0},
        {"name": "cond2", "min_duration": 200.0, "min_sessions": 1, "min_risk": 95.0},
        {"name": "cond3", "min_duration": 0.0, "min_sessions": 300, "min_risk": 0.0},
    ]
    assert thresholds(rules) == [0.0, 20.0, 200.0]
    assert len(DEFAULT_RULES) == 3
