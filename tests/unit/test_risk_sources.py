"""Risk from each source, through the whole analysis: log ranks, a file, DNSBL zones, none."""

from __future__ import annotations

import ipaddress

import pytest

from support.dns import dns_server_fixture
from support.logs import NOW, PostfixLog, by_source, run_analysis

PAPER_RULES = None  # the defaults: cond1, cond2, cond3

FLOODER = "203.0.113.40"  # 45 sessions of 25 s: passes cond1's session part
QUIET = "203.0.113.41"  # 3 sessions: passes no rule's session part
SLOW = "2001:db8::bad"  # one session of 250 s: passes cond2's session part

dns_server = dns_server_fixture(
    "\n".join(
        [
            "40.113.0.203.dnsbl.example A 127.0.0.2",
            "41.113.0.203.dnsbl.example A 127.0.0.2",
            "40.113.0.203.weak.example A 127.0.0.3",
            ipaddress.ip_address(SLOW).reverse_pointer.replace("ip6.arpa", "dnsbl.example")
            + " A 127.0.0.2",
        ]
    )
)


@pytest.fixture
def log_path(tmp_path):
    log = PostfixLog()
    log.sessions(FLOODER, 45, start=NOW - 600, duration=25, spacing=2)
    log.sessions(QUIET, 3, start=NOW - 500, duration=30, spacing=5)
    log.session(SLOW, start=NOW - 400, duration=250)
    return log.write(tmp_path / "mail.log")


def analyse(path, **options):
    return run_analysis(path, rules=PAPER_RULES, **options)


def test_dnsbl_scores_only_sources_that_pass_a_rules_session_part(dns_server, log_path):
    result = analyse(
        log_path,
        risk_source="dnsbl",
        dnsbl={
            "zones": [{"zone": "dnsbl.example", "weight": 95}],
            "nameservers": ["127.0.0.1"],
            "port": dns_server.port,
            "timeout": 1.0,
        },
    )

    candidates = by_source(result)
    assert candidates[FLOODER]["rule"] == "cond1" and candidates[FLOODER]["risk"] == 95
    assert candidates[SLOW]["rule"] == "cond2" and candidates[SLOW]["risk"] == 95
    asked = {name for _, name, _ in dns_server.queries}
    assert any(name.startswith("40.113.0.203.") for name in asked)
    assert not any(name.startswith("41.113.0.203.") for name in asked)


def test_dnsbl_weights_add_up_to_at_most_100(dns_server, log_path):
    zones = [{"zone": "dnsbl.example", "weight": 60}, {"zone": "weak.example", "weight": 60}]
    result = analyse(
        log_path,
        risk_source="dnsbl",
        dnsbl={"zones": zones, "nameservers": ["127.0.0.1"], "port": dns_server.port},
    )

    assert by_source(result)[FLOODER]["risk"] == 100
    assert SLOW not in by_source(result)  # 60 < 95: cond2 needs 95


def test_dnsbl_timeout_leaves_unknown_risk(dns_server, log_path):
    dns_server.drop("40.113.0.203.dnsbl.example.")
    warnings: list[str] = []
    result = analyse(
        log_path,
        warnings=warnings,
        risk_source="dnsbl",
        unknown_risk=0,
        dnsbl={
            "zones": [{"zone": "dnsbl.example"}],
            "nameservers": ["127.0.0.1"],
            "port": dns_server.port,
            "timeout": 0.3,
        },
    )

    assert FLOODER not in by_source(result)
    assert any("DNSBL" in warning for warning in warnings)


@pytest.mark.parametrize(
    ("risk", "selected"),
    [("95", True), ("94.9", False), ("100", True), ("0", False)],
)
def test_risk_file_at_the_cond1_boundary(tmp_path, log_path, risk, selected):
    scores = tmp_path / "risk.csv"
    scores.write_text(f"ip,risk\n# the gateway's export\n{FLOODER},{risk}\nnot-an-ip,99\n")

    result = analyse(log_path, risk_source="file", risk_file=str(scores))

    assert (FLOODER in by_source(result)) is selected


@pytest.mark.parametrize(
    ("rank", "threshold", "risk"),
    [(3, 3, 95.0), (2, 3, 63.33), (5, 3, 100.0), (1, 1, 95.0)],
)
def test_postscreen_rank_maps_to_risk_at_the_sites_threshold(tmp_path, rank, threshold, risk):
    log = PostfixLog()
    log.sessions(FLOODER, 45, start=NOW - 600, duration=25, spacing=2)
    log.line(
        NOW - 601, f"DNSBL rank {rank} for [{FLOODER}]:4711", pid=99, program="postfix/postscreen"
    )
    path = log.write(tmp_path / "mail.log")

    result = run_analysis(
        path,
        risk_source="log",
        postscreen_threshold=threshold,
        rules=[{"name": "any", "min_duration": 0, "min_sessions": 1, "min_risk": 0}],
    )

    assert by_source(result)[FLOODER]["risk"] == risk


def test_no_risk_source_gives_every_source_unknown_risk(log_path):
    result = analyse(log_path, risk_source="none", unknown_risk=95)

    assert set(by_source(result)) == {FLOODER, SLOW}
    assert all(entry["risk_known"] is False for entry in result["candidates"])
