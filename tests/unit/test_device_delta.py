"""Device read-back parsers, delta, chunks, error patterns, capacity and connection settings:
raw device text in, commands and decisions out."""

from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.campusnet.smtpguard.plugins.filter.blocklist import blocklist_fit
from ansible_collections.campusnet.smtpguard.plugins.module_utils._bastion import Route
from ansible_collections.campusnet.smtpguard.plugins.module_utils._device_push import (
    connection_settings,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._devices import (
    PLATFORMS,
    DeviceError,
    capacity_default,
    compute_delta,
    delta_chunks,
    device_errors,
    fit_capacity,
    parse_config,
)

IOS_RUNNING = """\
object-group network SMTPGUARD
 host 192.0.2.7
 198.51.100.0 255.255.255.0
 description blocked by smtpguard
object-group network MGMT
 host 10.0.0.1
object-group v6-network SMTPGUARD-V6
 host 2001:db8::25
"""
ASA_RUNNING = """\
object-group network SMTPGUARD
 network-object host 192.0.2.7
 network-object 198.51.100.0 255.255.255.0
 network-object host 2001:db8::25
object-group service SMTP tcp
 port-object eq smtp
"""
JUNOS_RUNNING = """\
set policy-options prefix-list MGMT 10.0.0.0/8
set policy-options prefix-list SMTPGUARD 192.0.2.7/32
set policy-options prefix-list SMTPGUARD 198.51.100.0/24
set policy-options prefix-list SMTPGUARD 2001:db8::25/128
set policy-options policy-statement X term 1 then accept
"""
RUNNING = {"ios": IOS_RUNNING, "asa": ASA_RUNNING, "junos": JUNOS_RUNNING}
OURS = {
    "ios": "object-group network SMTPGUARD",
    "asa": "object-group network SMTPGUARD",
    "junos": "policy-options prefix-list SMTPGUARD",
}


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_read_back_parser_finds_the_members_and_ignores_other_lines(platform: str) -> None:
    parsed = parse_config(RUNNING[platform], PLATFORMS[platform], strict=False)
    ours = parsed.containers[OURS[platform]]

    expected = {net("192.0.2.7/32"), net("198.51.100.0/24")}
    if platform != "ios":
        expected.add(net("2001:db8::25/128"))
    assert set(ours) == expected
    assert all(
        "MGMT" not in name or net("10.0.0.1/32") in m or net("10.0.0.0/8") in m
        for name, m in parsed.containers.items()
    )


def test_ios_keeps_ipv6_in_its_own_group() -> None:
    parsed = parse_config(IOS_RUNNING, PLATFORMS["ios"], strict=False)
    assert set(parsed.containers["object-group v6-network SMTPGUARD-V6"]) == {
        net("2001:db8::25/128")
    }


DESIRED = {
    "ios": "object-group network SMTPGUARD\n host 192.0.2.7\n host 203.0.113.9\n",
    "asa": (
        "object-group network SMTPGUARD\n network-object host 192.0.2.7\n"
        " network-object host 203.0.113.9\n network-object host 2001:db8::25\n"
    ),
    "junos": (
        "set policy-options prefix-list SMTPGUARD\n"
        "set policy-options prefix-list SMTPGUARD 192.0.2.7/32\n"
        "set policy-options prefix-list SMTPGUARD 203.0.113.9/32\n"
        "set policy-options prefix-list SMTPGUARD 2001:db8::25/128\n"
    ),
}
COMMANDS = {
    "ios": [
        "object-group network SMTPGUARD",
        "host 203.0.113.9",
        "no 198.51.100.0 255.255.255.0",
    ],
    "asa": [
        "object-group network SMTPGUARD",
        "network-object host 203.0.113.9",
        "no network-object 198.51.100.0 255.255.255.0",
    ],
    "junos": [
        "set policy-options prefix-list SMTPGUARD 203.0.113.9/32",
        "delete policy-options prefix-list SMTPGUARD 198.51.100.0/24",
    ],
}


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_delta_adds_first_and_removes_with_the_devices_own_text(platform: str) -> None:
    spec = PLATFORMS[platform]
    desired = parse_config(DESIRED[platform], spec, strict=True)
    current = parse_config(RUNNING[platform], spec, strict=False)

    delta = compute_delta(current, desired)

    assert delta.networks("added") == ["203.0.113.9"]
    assert delta.networks("removed") == ["198.51.100.0/24"]
    assert delta_chunks(delta, spec, chunk_size=100) == [COMMANDS[platform]]


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_no_delta_when_the_device_holds_the_list(platform: str) -> None:
    spec = PLATFORMS[platform]
    desired = parse_config(DESIRED[platform], spec, strict=True)
    held = parse_config(DESIRED[platform], spec, strict=False)

    delta = compute_delta(held, desired)
    assert not delta
    assert delta_chunks(delta, spec, chunk_size=10) == []


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (
            1,
            [
                ["object-group network G", "host 192.0.2.1"],
                ["object-group network G", "host 192.0.2.2"],
                ["object-group network G", "host 192.0.2.3"],
            ],
        ),
        (
            2,
            [
                ["object-group network G", "host 192.0.2.1", "host 192.0.2.2"],
                ["object-group network G", "host 192.0.2.3"],
            ],
        ),
        (3, [["object-group network G", "host 192.0.2.1", "host 192.0.2.2", "host 192.0.2.3"]]),
    ],
)
def test_each_chunk_enters_its_group_again(size: int, expected: list[list[str]]) -> None:
    spec = PLATFORMS["ios"]
    desired = parse_config(
        "object-group network G\n host 192.0.2.1\n host 192.0.2.2\n host 192.0.2.3\n",
        spec,
        strict=True,
    )
    assert (
        delta_chunks(
            compute_delta(parse_config("", spec, strict=False), desired), spec, chunk_size=size
        )
        == expected
    )


def test_chunk_size_must_be_positive() -> None:
    with pytest.raises(DeviceError, match="chunk_size"):
        delta_chunks(
            compute_delta(
                parse_config("", PLATFORMS["ios"], strict=False),
                parse_config("", PLATFORMS["ios"], strict=False),
            ),
            PLATFORMS["ios"],
            chunk_size=0,
        )


@pytest.mark.parametrize(
    ("platform", "output", "expected"),
    [
        (
            "ios",
            "R1(config-nw)#hots 192.0.2.1\n ^\n% Invalid input detected at '^' marker.\n",
            ["R1(config-nw)#hots 192.0.2.1\n ^\n% Invalid input detected at '^' marker."],
        ),
        (
            "ios",
            "R1(config)#object-group\n% Incomplete command.\n",
            ["R1(config)#object-group\n% Incomplete command."],
        ),
        ("ios", "R1(config-network-group)#host 192.0.2.1\nR1(config-network-group)#end\n", []),
        (
            "asa",
            "fw(config)#network-object x\n   ^\nERROR: % Invalid input detected at '^' marker.\n",
            ["fw(config)#network-object x\n   ^\nERROR: % Invalid input detected at '^' marker."],
        ),
        ("asa", "fw(config-network-object-group)#network-object host 192.0.2.1\n", []),
        (
            "junos",
            "user@r1# set policy-options prefix-list X 300.0.0.1/32\n   ^\nsyntax error.\n",
            ["user@r1# set policy-options prefix-list X 300.0.0.1/32\n   ^\nsyntax error."],
        ),
        (
            "junos",
            "[edit policy-options]\n  'prefix-list X'\n    bad\n"
            "error: configuration check-out failed\n",
            ["  'prefix-list X'\n    bad\nerror: configuration check-out failed"],
        ),
        ("junos", "configuration check succeeds\n", []),
        ("junos", "commit complete\n", []),
    ],
)
def test_error_patterns_return_the_devices_own_message(
    platform: str, output: str, expected: list[str]
) -> None:
    assert device_errors(output, PLATFORMS[platform]) == expected


# Capacity

IMPACT = {
    "203.0.113.9": {"evidence": {"qualifying_sessions": 900, "risk": 99, "sessions": 900}},
    "203.0.113.77": {"evidence": {"qualifying_sessions": 40, "risk": 99, "sessions": 41}},
    "192.0.2.1": {"evidence": {"qualifying_sessions": 1, "risk": 95, "sessions": 1}},
}


def test_within_capacity_the_list_comes_back_unchanged() -> None:
    fit = fit_capacity([net("192.0.2.1/32"), net("192.0.2.2/32")], capacity=2)
    assert (fit.networks, fit.dropped, fit.aggregated, fit.warning) == (
        ["192.0.2.1", "192.0.2.2"],
        [],
        [],
        None,
    )


def test_over_capacity_keeps_the_highest_impact_and_warns_with_numbers() -> None:
    networks = [net(f"{ip}/32") for ip in IMPACT] + [net("198.51.100.5/32")]
    fit = fit_capacity(networks, capacity=2, impact=IMPACT)

    assert fit.networks == ["203.0.113.9", "203.0.113.77"]
    assert fit.dropped == ["192.0.2.1", "198.51.100.5"]
    assert fit.warning == (
        "the block list has 4 entries, the device holds 2; 2 entries with the least impact "
        "are left out (first: 192.0.2.1, 198.51.100.5)"
    )


def test_aggregation_only_when_allowed_and_fullest_network_first() -> None:
    networks = [net(f"198.51.100.{n}/32") for n in (1, 5, 9, 77)] + [
        net("203.0.113.9/32"),
        net("192.0.2.1/32"),
    ]

    without = fit_capacity(networks, capacity=3, impact=IMPACT)
    allowed = fit_capacity(networks, capacity=3, impact=IMPACT, aggregate=True)

    assert without.aggregated == [] and len(without.dropped) == 3
    assert allowed.networks == ["192.0.2.1", "198.51.100.0/24", "203.0.113.9"]
    assert allowed.aggregated == [{"network": "198.51.100.0/24", "members": 4}]
    assert allowed.dropped == []
    assert "4 entries were aggregated into 1 networks" in str(allowed.warning)


def test_filter_uses_the_platform_default_and_merges_neighbours_only_when_over() -> None:
    entries = ["192.0.2.0", "192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert blocklist_fit(entries, "ios")["networks"] == entries
    small = blocklist_fit(entries, "ios", capacity=1)
    assert small["networks"] == ["192.0.2.0/30"] and small["dropped"] == []
    assert (
        small["warning"]
        == "the block list has 4 entries (1 after merging neighbours), the device holds 1"
    )
    assert blocklist_fit([], "plaintext")["capacity"] == 50000


@pytest.mark.parametrize(
    ("platform", "capacity"),
    [
        ("ios", 10000),
        ("asa", 10000),
        ("junos", 85325),
        ("nftables", 65536),
        ("plaintext", 50000),
        ("postfix", 20000),
    ],
)
def test_capacity_defaults_have_a_source(platform: str, capacity: int) -> None:
    limit, source = capacity_default(platform)
    assert limit == capacity and len(source) > 30


def test_unknown_platform_is_named() -> None:
    with pytest.raises(DeviceError, match="'paloalto'"):
        capacity_default("paloalto")


# Connection settings

BASE = {"host": "r1.mgmt", "port": 22, "username": "netops", "timeout": 10}
ROUTE = Route(host="r1.mgmt", hostname="10.0.0.5", port=2222)


def test_connection_settings_carry_secrets_the_route_and_strict_host_keys() -> None:
    hop = object()
    settings = connection_settings(
        {
            **BASE,
            "password": "pw",
            "secret": "en",
            "ssh_config_file": "/etc/smtpguard/ssh_config",
            "host_key_checking": True,
            "known_hosts": "/etc/smtpguard/known_hosts",
            "session_log": "/tmp/s.log",
        },
        PLATFORMS["junos"],
        route=ROUTE,
        sock=hop,
        check=False,
    )
    assert settings["device_type"] == "juniper_junos"
    assert (settings["password"], settings["secret"]) == ("pw", "en")
    assert (settings["host"], settings["port"], settings["sock"]) == ("10.0.0.5", 2222, hop)
    assert "ssh_config_file" not in settings  # the route holds what the file says
    assert (settings["ssh_strict"], settings["alt_host_keys"], settings["alt_key_file"]) == (
        True,
        True,
        "/etc/smtpguard/known_hosts",
    )
    assert settings["session_log"] == "/tmp/s.log"


def test_connection_settings_leave_out_what_is_not_given() -> None:
    settings = connection_settings(
        {**BASE, "host_key_checking": False}, PLATFORMS["ios"], route=ROUTE, check=False
    )
    assert not {
        "password",
        "secret",
        "key_file",
        "ssh_config_file",
        "sock",
        "ssh_strict",
        "session_log",
        "allow_auto_change",
    } & set(settings)


@pytest.mark.parametrize(("check", "auto_change"), [(True, False), (False, None)])
def test_an_asa_check_run_logs_in_without_a_configuration_command(
    check: bool, auto_change: bool | None
) -> None:
    settings = connection_settings(BASE, PLATFORMS["asa"], route=ROUTE, check=check)
    assert settings.get("allow_auto_change") is auto_change
