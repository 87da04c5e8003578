"""Sparing candidates, in-process and through Ansible, against a real DNS server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import dns.reversename
import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._spare import (
    SpareError,
    read_candidates,
    read_settings,
    spare_candidates,
)
from ansible_collections.campusnet.smtpguard.plugins.modules.spare_candidates import (
    ARGUMENT_SPEC,
)
from support.dns import ROOT, dns_server_fixture

V6 = "2001:db8::25"

RECORDS = f"""
9.113.0.203.in-addr.arpa   PTR mail.example.ac.jp.
mail.example.ac.jp         A   203.0.113.9
20.113.0.203.in-addr.arpa  PTR MAIL.EXAMPLE.JP.
mail.example.jp            A   203.0.113.20
21.113.0.203.in-addr.arpa  PTR mail.example.ac.uk.
mail.example.ac.uk         A   203.0.113.21
22.113.0.203.in-addr.arpa  PTR mx.badexample.ac.uk.
mx.badexample.ac.uk        A   203.0.113.22
23.113.0.203.in-addr.arpa  PTR host.example.xjp.
host.example.xjp           A   203.0.113.23
24.113.0.203.in-addr.arpa  PTR jp.example.com.
jp.example.com             A   203.0.113.24
25.113.0.203.in-addr.arpa  PTR spoof.example.jp.
spoof.example.jp           A   198.51.100.1
26.113.0.203.in-addr.arpa  PTR ghost.example.jp.
28.113.0.203.in-addr.arpa  PTR slow.example.jp.
29.113.0.203.in-addr.arpa  PTR evil\\010line\\;x.{{{{7*7}}}}.jp.
evil\\010line\\;x.{{{{7*7}}}}.jp. A 203.0.113.29
30.113.0.203.in-addr.arpa  PTR evil\\.jp.example.com.
evil\\.jp.example.com.     A   203.0.113.30
31.113.0.203.in-addr.arpa  PTR mail.example.ac.jp.
32.113.0.203.in-addr.arpa  PTR mx.badexample.ac.jp.
mx.badexample.ac.jp        A   203.0.113.32
{dns.reversename.from_address(V6)} PTR mail6.example.ac.jp.
mail6.example.ac.jp        AAAA {V6}
"""

dns_server = dns_server_fixture(RECORDS)
NOW = datetime(2025, 6, 1, 12, 0).astimezone()
CANDIDATE = {
    "rule": "cond1",
    "rules": ["cond1"],
    "sessions": 50,
    "qualifying_sessions": 42,
    "longest_session": 40,
    "open_sessions": 1,
    "risk": 96.0,
}
BLOCKED = "cond1: 42 qualifying sessions (longest 40 s), risk 96%; "


def params(server: Any, **overrides: Any) -> dict[str, Any]:
    """The module's own defaults, pointed at the test server."""
    values = {name: spec.get("default") for name, spec in ARGUMENT_SPEC.items()}
    values.update(nameservers=["127.0.0.1"], port=server.port, timeout=0.3)
    values.update(overrides)
    return values


def run(server: Any, ips: list[str], **overrides: Any) -> tuple[dict[str, Any], list[str]]:
    warnings: list[str] = []
    settings = read_settings(params(server, **overrides), now=NOW, warn=warnings.append)
    candidates = read_candidates([{**CANDIDATE, "ip": ip} for ip in ips])
    return spare_candidates(candidates, settings=settings, warn=warnings.append), warnings


def decide(server: Any, ip: str, **overrides: Any) -> tuple[str, dict[str, Any], list[str]]:
    """Which list one candidate lands in, its entry, and the warnings of the run."""
    result, warnings = run(server, [ip], **overrides)
    (where,) = [name for name in ("block", "spared") if result[name]]
    return where, result[where][0], warnings


# Decisions, one candidate at a time.

# fmt: off
CASES = [
    # id, ip, options, list, ptr_status, ptr, reason
    ("domestic", "203.0.113.9", {}, "spared", "confirmed", "mail.example.ac.jp",
     "domestic sender: mail.example.ac.jp (forward-confirmed, .jp)"),
    ("domestic-any-case", "203.0.113.20", {}, "spared", "confirmed", "MAIL.EXAMPLE.JP",
     "domestic sender: MAIL.EXAMPLE.JP (forward-confirmed, .jp)"),
    ("tld-with-dots", "203.0.113.9", {"domestic_tlds": [".JP."]}, "spared", "confirmed",
     "mail.example.ac.jp", "domestic sender: mail.example.ac.jp (forward-confirmed, .JP)"),
    ("ipv6-domestic", V6, {}, "spared", "confirmed", "mail6.example.ac.jp",
     "domestic sender: mail6.example.ac.jp (forward-confirmed, .jp)"),
    ("tld-label-boundary", "203.0.113.23", {}, "block", "confirmed", "host.example.xjp",
     BLOCKED + "PTR host.example.xjp is forward-confirmed but neither domestic nor spared"),
    ("tld-is-last-label", "203.0.113.24", {}, "block", "confirmed", "jp.example.com",
     BLOCKED + "PTR jp.example.com is forward-confirmed but neither domestic nor spared"),
    ("spare-domain", "203.0.113.21", {"spare_domains": ["example.ac.uk"]}, "spared",
     "confirmed", "mail.example.ac.uk",
     "spare domain: mail.example.ac.uk (forward-confirmed, example.ac.uk)"),
    ("spare-domain-boundary", "203.0.113.22", {"spare_domains": ["example.ac.uk"]}, "block",
     "confirmed", "mx.badexample.ac.uk",
     BLOCKED + "PTR mx.badexample.ac.uk is forward-confirmed but neither domestic nor spared"),
    ("spare-domain-alone", "203.0.113.9",
     {"domestic_tlds": [], "spare_domains": ["example.ac.jp"]}, "spared", "confirmed",
     "mail.example.ac.jp", "spare domain: mail.example.ac.jp (forward-confirmed, example.ac.jp)"),
    ("spare-domain-alone-boundary", "203.0.113.32",
     {"domestic_tlds": [], "spare_domains": ["example.ac.jp"]}, "block", "confirmed",
     "mx.badexample.ac.jp",
     BLOCKED + "PTR mx.badexample.ac.jp is forward-confirmed but neither domestic nor spared"),
    ("resolves-elsewhere", "203.0.113.25", {}, "block", "unconfirmed", "spoof.example.jp",
     BLOCKED + "PTR spoof.example.jp does not resolve back to the source, so it does not spare"),
    ("name-without-address", "203.0.113.26", {}, "block", "unconfirmed", "ghost.example.jp",
     BLOCKED + "PTR ghost.example.jp does not resolve back to the source, so it does not spare"),
    ("borrowed-domestic-name", "203.0.113.31", {}, "block", "unconfirmed", "mail.example.ac.jp",
     BLOCKED + "PTR mail.example.ac.jp does not resolve back to the source, so it does not spare"),
    ("no-ptr", "203.0.113.27", {}, "block", "none", None, BLOCKED + "no PTR record"),
    ("timeout", "203.0.113.28", {}, "block", "error", None,
     BLOCKED + "DNS lookup failed (PTR lookup timed out), so it stays blocked"),
    ("hostile-name", "203.0.113.29", {}, "spared", "confirmed", "evil\\010line\\;x.{{7*7}}.jp",
     "domestic sender: evil\\010line\\;x.{{7*7}}.jp (forward-confirmed, .jp)"),
    ("escaped-dot-is-no-label", "203.0.113.30", {}, "block", "confirmed",
     "evil\\.jp.example.com",
     BLOCKED + "PTR evil\\.jp.example.com is forward-confirmed but neither domestic nor spared"),
    ("never-block-default", "127.0.0.1", {}, "spared", "skipped", None,
     "never-block network 127.0.0.0/8"),
    ("never-block-v6-default", "fe80::1", {}, "spared", "skipped", None,
     "never-block network fe80::/10"),
    ("never-block-site", "203.0.113.25", {"never_block": ["203.0.113.0/24"]}, "spared",
     "skipped", None, "never-block network 203.0.113.0/24"),
    ("internal", "10.1.2.3", {"internal_networks": ["10.0.0.0/8"]}, "spared", "skipped", None,
     "internal network 10.0.0.0/8"),
    ("allowlist-plain", "192.0.2.10", {"allowlist": ["192.0.2.0/24"]}, "spared", "skipped",
     None, "allowlist 192.0.2.0/24"),
    ("allowlist-reason", "192.0.2.10",
     {"allowlist": [{"network": "192.0.2.0/24", "reason": "partner university"}]}, "spared",
     "skipped", None, "allowlist 192.0.2.0/24: partner university"),
    ("allowlist-most-specific", "192.0.2.10",
     {"allowlist": [{"network": "192.0.2.0/24", "reason": "wide"},
                    {"network": "192.0.2.8/29", "reason": "narrow"}]},
     "spared", "skipped", None, "allowlist 192.0.2.8/29: narrow"),
    ("allowlist-valid-today", "192.0.2.10",
     {"allowlist": [{"network": "192.0.2.0/24", "expires": "2025-06-01"}]}, "spared",
     "skipped", None, "allowlist 192.0.2.0/24"),
    ("allowlist-expired", "192.0.2.10",
     {"allowlist": [{"network": "192.0.2.0/24", "expires": "2025-05-31"}]}, "block", "none",
     None, BLOCKED + "no PTR record"),
    ("allowlist-expired-time", "192.0.2.10",
     {"allowlist": [{"network": "192.0.2.0/24", "expires": "2025-06-01T11:59:00"}]}, "block",
     "none", None, BLOCKED + "no PTR record"),
    ("allowlist-mapped-v6", "::ffff:192.0.2.10", {"allowlist": ["192.0.2.0/24"]}, "spared",
     "skipped", None, "allowlist 192.0.2.0/24"),
    ("ptr-lookup-off", "203.0.113.9", {"ptr_lookup": False}, "block", "skipped", None,
     BLOCKED + "PTR lookup is off"),
]
# fmt: on


@pytest.mark.parametrize(
    ("ip", "options", "where", "ptr_status", "ptr", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decision(dns_server, ip, options, where, ptr_status, ptr, reason):
    dns_server.drop("28.113.0.203.in-addr.arpa")

    landed, entry, _ = decide(dns_server, ip, **options)

    assert (landed, entry["ptr_status"], entry["ptr"], entry["reason"]) == (
        where,
        ptr_status,
        ptr,
        reason,
    )
    assert entry["rules"] == ["cond1"] and entry["risk"] == 96.0
    assert not any(ord(c) < 32 for c in entry["reason"] + (entry["ptr"] or ""))


@pytest.mark.parametrize(
    "ip", ["127.0.0.1", "::1", "169.254.1.1", "224.0.0.5", "ff02::1", "0.0.0.1"]
)
def test_never_block_needs_no_dns(dns_server, ip):
    landed, entry, _ = decide(dns_server, ip)

    assert landed == "spared" and entry["reason"].startswith("never-block network")
    assert dns_server.queries == []


def test_expired_allowlist_entry_warns(dns_server):
    entry = {"network": "192.0.2.0/24", "reason": "old partner", "expires": "2025-05-31"}

    _, _, warnings = decide(dns_server, "192.0.2.10", allowlist=[entry])

    assert len(warnings) == 1
    assert warnings[0] == (
        "allowlist entry 192.0.2.0/24 (old partner) expired (2025-05-31) and is ignored;"
        " renew or remove it"
    )


def test_timeouts_warn_and_stay_blocked(dns_server):
    dns_server.drop("28.113.0.203.in-addr.arpa")

    result, warnings = run(dns_server, ["203.0.113.28", "203.0.113.9"])

    assert [entry["ip"] for entry in result["block"]] == ["203.0.113.28"]
    assert result["stats"]["timeouts"] == 1 and result["stats"]["ptr"]["error"] == 1
    assert warnings == [
        "1 source(s) could not be checked in DNS (timeout or server failure) and stay on the"
        " block list: 203.0.113.28; check the nameservers or raise timeout"
    ]


def test_reason_names_the_rule_duration_when_the_candidate_has_it(dns_server):
    settings = read_settings(params(dns_server, ptr_lookup=False), now=NOW, warn=print)
    record = {**CANDIDATE, "ip": "203.0.113.27", "min_duration": 20, "risk": None}

    result = spare_candidates(read_candidates([record]), settings=settings, warn=print)

    reason = result["block"][0]["reason"]
    assert reason == (
        "cond1: 42 sessions of 20 s or more (longest 40 s), risk unknown; PTR lookup is off"
    )


def test_reason_says_session_for_one_session(dns_server):
    settings = read_settings(params(dns_server, ptr_lookup=False), now=NOW, warn=print)
    record = {**CANDIDATE, "ip": "203.0.113.27", "rule": "cond2", "qualifying_sessions": 1,
              "min_duration": 200, "longest_session": 236, "risk": 95}

    result = spare_candidates(read_candidates([record]), settings=settings, warn=print)

    assert result["block"][0]["reason"].startswith(
        "cond2: 1 session of 200 s or more (longest 236 s), risk 95%"
    )


def test_stats_count_every_outcome(dns_server):
    ips = ["127.0.0.1", "192.0.2.10", "203.0.113.9", "203.0.113.9", "203.0.113.25", "2001:db8::1"]

    result, _ = run(dns_server, ips, allowlist=["192.0.2.0/24"])

    stats = {k: v for k, v in result["stats"].items() if k != "seconds"}
    assert stats == {
        "candidates": 6,
        "block": 2,
        "spared": 4,
        "spared_by": {
            "never_block": 1,
            "internal": 0,
            "allowlist": 1,
            "spare_domain": 0,
            "domestic": 2,
        },
        "ptr": {"confirmed": 2, "unconfirmed": 1, "none": 1, "error": 0, "skipped": 2},
        "lookups": 5,
        "cache_hits": 0,
        "timeouts": 0,
        "failures": 0,
    }
    assert [e["ip"] for e in result["spared"]] == ["127.0.0.1", "192.0.2.10", *ips[2:4]]


# Bad input fails up front, naming the entry.


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"never_block": ["127.0.0.1/8"]}, "never_block: '127.0.0.1/8' is not"),
        ({"internal_networks": ["campus"]}, "internal_networks: 'campus' is not"),
        ({"allowlist": ["192.0.2.0/33"]}, "allowlist: '192.0.2.0/33' is not"),
        ({"allowlist": [{"network": "192.0.2.0/24", "expire": "2030-01-01"}]}, "unknown keys"),
        ({"allowlist": [{"reason": "no network"}]}, "has no network"),
        ({"allowlist": [{"network": "192.0.2.0/24", "expires": "soon"}]}, "'soon' is not a date"),
        ({"allowlist": [42]}, "neither a network nor a dict"),
        ({"domestic_tlds": ["."]}, "would match every name"),
        ({"spare_domains": ["bad..example"]}, "not a domain name"),
        ({"nameservers": ["ns.example"]}, "nameservers: 'ns.example' is not an IP address"),
        ({"timeout": 0}, "timeout must be a positive"),
        ({"concurrency": 0}, "concurrency must be at least 1"),
    ],
)
def test_bad_settings_fail_naming_the_entry(dns_server, overrides, message):
    with pytest.raises(SpareError, match=message):
        read_settings(params(dns_server, **overrides), now=NOW, warn=print)


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        ([{"ip": "203.0.113.9"}, {"ip": "mail.example"}], "candidate 2 has ip 'mail.example'"),
        ([{"ip": "fe80::1%eth0"}], "candidate 1 has ip 'fe80::1%eth0'"),
        ([{"rule": "cond1"}], "candidate 1 has ip None"),
        ([{"ip": "1.2.3.4\n{{ x }}"}], r"candidate 1 has ip '1.2.3.4\\n\{\{ x \}\}'"),
        (["203.0.113.9"], "candidate 1 is not a dict"),
    ],
)
def test_bad_candidates_fail_naming_them(candidates, message):
    with pytest.raises(SpareError, match=message):
        read_candidates(candidates)


# The module through Ansible.


def run_playbook(tmp_path: Path, tasks: list[dict[str, Any]]) -> subprocess.CompletedProcess:
    playbook = tmp_path / "spare.yml"
    play = [
        {"name": "Spare candidates", "hosts": "localhost", "gather_facts": False, "tasks": tasks}
    ]
    playbook.write_text(json.dumps(play), encoding="utf-8")
    environment = {
        **os.environ,
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
    }
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        str(playbook),
    ]
    return subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )


def saved(name: str, path: Path) -> dict[str, Any]:
    return {
        "name": f"Save {name}",
        "ansible.builtin.copy": {
            "content": f"{{{{ {name} | to_json }}}}",
            "dest": str(path),
            "mode": "0600",
        },
        "check_mode": False,
    }


def test_module_through_ansible(dns_server, tmp_path):
    arguments = {
        "candidates": [
            {**CANDIDATE, "ip": ip}
            for ip in [
                "203.0.113.9",
                "203.0.113.25",
                "203.0.113.29",
                "2001:DB8::25",
                "192.0.2.10",
                "10.9.9.9",
            ]
        ],
        "nameservers": ["127.0.0.1"],
        "port": dns_server.port,
        "timeout": 0.3,
        "internal_networks": ["10.0.0.0/8"],
        "allowlist": [{"network": "192.0.2.0/24", "reason": "partner university"}],
    }
    tasks = [
        {"name": "Spare", "campusnet.smtpguard.spare_candidates": arguments, "register": "run"},
        {
            "name": "Spare in check mode",
            "campusnet.smtpguard.spare_candidates": arguments,
            "register": "check",
            "check_mode": True,
        },
        {
            "name": "Refuse a bad candidate",
            "campusnet.smtpguard.spare_candidates": {"candidates": [{"ip": "not-an-address"}]},
            "register": "bad",
            "ignore_errors": True,
        },
        saved("run", tmp_path / "run.json"),
        saved("check", tmp_path / "check.json"),
        saved("bad", tmp_path / "bad.json"),
    ]

    process = run_playbook(tmp_path, tasks)

    assert process.returncode == 0, process.stdout + process.stderr
    run = json.loads((tmp_path / "run.json").read_text())
    check = json.loads((tmp_path / "check.json").read_text())
    bad = json.loads((tmp_path / "bad.json").read_text())
    assert run["changed"] is False and check["changed"] is False
    assert [e["ip"] for e in run["block"]] == ["203.0.113.25"]
    assert {e["ip"]: e["reason"] for e in run["spared"]} == {
        "203.0.113.9": "domestic sender: mail.example.ac.jp (forward-confirmed, .jp)",
        "203.0.113.29": "domestic sender: evil\\010line\\;x.{{7*7}}.jp (forward-confirmed, .jp)",
        "2001:db8::25": "domestic sender: mail6.example.ac.jp (forward-confirmed, .jp)",
        "192.0.2.10": "allowlist 192.0.2.0/24: partner university",
        "10.9.9.9": "internal network 10.0.0.0/8",
    }
    assert (check["block"], check["spared"]) == (run["block"], run["spared"])
    assert bad["failed"] is True
    assert bad["msg"] == "candidate 1 has ip 'not-an-address', which is not an IP address"


def test_a_cache_file_answers_the_next_run_without_asking_again(dns_server, tmp_path):
    cache = tmp_path / "dns-cache.json"
    first, _ = run(dns_server, ["203.0.113.9", "203.0.113.22"], dns_cache_path=str(cache))
    asked = len(dns_server.queries)

    second, _ = run(dns_server, ["203.0.113.9", "203.0.113.22"], dns_cache_path=str(cache))

    assert asked > 0 and cache.exists()
    assert len(dns_server.queries) == asked  # every answer came from the file
    assert second["spared"] == first["spared"] and second["block"] == first["block"]


def test_check_mode_reads_the_cache_file_but_never_writes_it(dns_server, tmp_path):
    cache = tmp_path / "dns-cache.json"
    settings = read_settings(params(dns_server, dns_cache_path=str(cache)), now=NOW, warn=print,
                             check_mode=True)  # fmt: skip
    spare_candidates(read_candidates([{**CANDIDATE, "ip": "203.0.113.9"}]), settings=settings,
                     warn=print)  # fmt: skip

    assert not cache.exists()
