"""Merging a block list to fit a device: never into an entry the templates refuse, never over a
source that is allowlisted, spared or special; and device_blocklist, called without the
templates, holds its configuration to the same rules."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.campusnet.smtpguard.plugins.filter.blocklist import (
    blocklist_fit,
    blocklist_networks,
    nft_set_difference,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._device_entries import (
    MIN_PREFIX,
    KeepOut,
    merge,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._devices import (
    PLATFORMS,
    DeviceError,
    fit_capacity,
    parse_config,
)
from support.templates import render


def net(text: str) -> Any:
    return ipaddress.ip_network(text)


# Exact merging of neighbours (collapse) stops at the widest entry one may block

NEIGHBOURS = [
    pytest.param(
        ["198.18.0.0/16", "198.19.0.0/16"], ["198.18.0.0/16", "198.19.0.0/16"], id="two-v4-16s"
    ),
    pytest.param(
        ["10.0.0.0/16", "10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"],
        ["10.0.0.0/16", "10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"],
        id="four-v4-16s",
    ),
    pytest.param(
        ["2001:db8::/32", "2001:db9::/32"], ["2001:db8::/32", "2001:db9::/32"], id="two-v6-32s"
    ),
    pytest.param(
        ["192.0.2.0/25", "192.0.2.128/25", "192.0.2.7"], ["192.0.2.0/24"], id="narrow-still-merges"
    ),
]


@pytest.mark.parametrize(("entries", "merged"), NEIGHBOURS)
def test_merging_neighbours_never_builds_an_entry_wider_than_a_16_or_32(
    entries: list[str], merged: list[str]
) -> None:
    networks = merge(map(net, entries))

    assert sorted(map(str, networks)) == sorted(merged)
    assert all(n.prefixlen >= MIN_PREFIX[n.version] for n in networks)
    assert blocklist_networks(entries, collapse=True) == merged


@pytest.mark.parametrize(("entries", "merged"), NEIGHBOURS)
def test_a_full_device_gets_a_list_its_template_renders(
    entries: list[str], merged: list[str]
) -> None:
    fit = blocklist_fit([*entries, "203.0.113.9"], "nftables", capacity=len(merged) + 1)

    assert fit["networks"] == blocklist_networks([*merged, "203.0.113.9"])
    assert fit["dropped"] == []
    for template in ("nftables.nft.j2", "ios.j2", "junos.j2", "plaintext.txt.j2"):
        assert render(template, fit["networks"])  # the templates' own checks pass


def test_a_device_set_merged_by_nft_compares_equal_to_the_list_in_16s() -> None:
    merged = {"range": ["198.18.0.0", "198.19.255.255"]}  # nft's auto-merge of the two /16s
    listing = {"nftables": [{"set": {"name": "blocked_v4", "elem": [merged]}}]}

    assert nft_set_difference([listing], ["198.18.0.0/16", "198.19.0.0/16"]) == {
        "missing": [],
        "unexpected": [],
    }


# Aggregation when the device is full: no special range, nothing allowlisted or spared

MEMBERS = ["192.0.2.7", "192.0.2.8", "198.51.100.1", "198.51.100.2", "203.0.113.9"]


@pytest.mark.parametrize(
    ("allowlist", "networks", "not_aggregated"),
    [
        pytest.param(
            [],
            ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.9"],
            [],
            id="nothing-kept-out",
        ),
        pytest.param(
            ["192.0.2.200"],
            ["192.0.2.7", "192.0.2.8", "198.51.100.0/24"],
            ["192.0.2.0/24"],
            id="allowlisted-address",
        ),
        pytest.param(
            [{"network": "192.0.2.128/25", "reason": "partner", "expires": None}],
            ["192.0.2.7", "192.0.2.8", "198.51.100.0/24"],
            ["192.0.2.0/24"],
            id="allowlist-file-entry",
        ),
        pytest.param(
            [{"ip": "198.51.100.77", "reason": "domestic"}, "192.0.0.0/16"],
            ["192.0.2.7", "192.0.2.8", "198.51.100.1"],
            ["192.0.2.0/24", "198.51.100.0/24"],
            id="spared-source-and-a-wider-allowlist",
        ),
    ],
)
def test_aggregation_never_covers_an_allowlisted_or_spared_source(
    allowlist: list[object], networks: list[str], not_aggregated: list[str]
) -> None:
    fit = blocklist_fit(MEMBERS, "ios", capacity=3, aggregate=True, allowlist=allowlist)

    kept_out = [net(i if isinstance(i, str) else i.get("network", i.get("ip"))) for i in allowlist]

    assert fit["networks"] == networks
    built = [net(n) for n in fit["networks"] if n not in MEMBERS]
    assert not any(n.overlaps(k) for n in built for k in kept_out)
    assert [item["network"] for item in fit["not_aggregated"]] == not_aggregated
    assert all("allowlisted, spared" in item["reason"] for item in fit["not_aggregated"])
    if not_aggregated:
        assert f"networks were not aggregated (first: {not_aggregated[0]}" in fit["warning"]


def test_keep_out_finds_every_overlap_among_many_spared_sources() -> None:
    spared = [{"ip": f"10.{n // 250}.{n % 250}.{n % 7}"} for n in range(0, 5000, 3)]
    kept = KeepOut([*spared, "192.0.2.128/25", "2001:db8:5::/48"])
    probes = [net(f"10.{a}.{b}.0/24") for a in range(0, 21) for b in range(0, 250, 11)]
    probes += [net("192.0.2.0/24"), net("192.0.3.0/24"), net("2001:db8:5:7::/64")]
    networks = [net(i["ip"]) for i in spared] + [net("192.0.2.128/25"), net("2001:db8:5::/48")]

    for probe in probes:
        expected = any(probe.version == n.version and probe.overlaps(n) for n in networks)
        found = kept.overlap(probe)
        assert (found is not None) == expected, probe
        assert found is None or found.overlaps(probe)


def test_aggregation_never_covers_a_special_address() -> None:
    networks = [net("::2/128"), net("::3/128"), net("2001:db8::25/128")]

    fit = fit_capacity(networks, capacity=2, aggregate=True)

    assert fit.aggregated == []
    assert fit.not_aggregated[0]["network"] == "::/64"
    assert "loopback" in fit.not_aggregated[0]["reason"]
    assert len(fit.networks) == 2 and len(fit.dropped) == 1


@pytest.mark.parametrize(
    "prefixes", [{4: 8, 6: 64}, {4: 15, 6: 64}, {4: 24, 6: 16}, {4: 33, 6: 64}], ids=str
)
def test_fit_capacity_refuses_an_aggregate_wider_than_one_entry(prefixes: dict) -> None:
    networks = [net(f"192.0.2.{n}/32") for n in range(1, 6)]

    with pytest.raises(DeviceError, match="aggregation prefix must be"):
        fit_capacity(networks, capacity=2, aggregate=True, aggregate_prefix=prefixes)


@pytest.mark.parametrize("bad", ["partner relay", {"reason": "no network"}, 7])
def test_a_bad_allowlist_entry_is_named(bad: object) -> None:
    with pytest.raises(AnsibleFilterError, match="allowlist entry"):
        blocklist_fit(MEMBERS, "ios", capacity=3, aggregate=True, allowlist=[bad])


# device_blocklist's own check of the configuration it is given

REFUSED = [
    ("ios", "object-group network SMTPGUARD\n 0.0.0.0 0.0.0.0\n", "wider than /16"),
    ("ios", "object-group network SMTPGUARD\n 10.0.0.0 255.0.0.0\n", "wider than /16"),
    ("ios", "object-group network SMTPGUARD\n host 127.0.0.1\n", "loopback"),
    ("ios", "object-group network SMTPGUARD\n host 0.0.0.9\n", "loopback"),
    ("ios", "object-group v6-network SMTPGUARD-V6\n ::/0\n", "wider than /32"),
    ("ios", "object-group v6-network SMTPGUARD-V6\n host ::1\n", "loopback"),
    ("ios", "object-group v6-network SMTPGUARD-V6\n host ::ffff:192.0.2.1\n", "IPv4-mapped"),
    ("asa", "object-group network SMTPGUARD\n network-object 0.0.0.0 0.0.0.0\n", "wider"),
    ("asa", "object-group network SMTPGUARD\n network-object host 224.0.0.5\n", "multicast"),
    ("asa", "object-group network SMTPGUARD\n network-object fe80::/64\n", "link-local"),
    ("junos", "set policy-options prefix-list SMTPGUARD 0.0.0.0/0\n", "wider than /16"),
    ("junos", "set policy-options prefix-list SMTPGUARD 2001::/16\n", "wider than /32"),
    ("junos", "set policy-options prefix-list SMTPGUARD 169.254.0.1/32\n", "link-local"),
]


@pytest.mark.parametrize(("platform", "config", "message"), REFUSED)
def test_a_configuration_given_directly_is_held_to_the_filter_rules(
    platform: str, config: str, message: str
) -> None:
    with pytest.raises(DeviceError, match=message) as refused:
        parse_config(config, PLATFORMS[platform], strict=True)

    assert "rendered line 2" in str(refused.value) or platform == "junos"


@pytest.mark.parametrize(("platform", "config", "message"), REFUSED[:1] + REFUSED[-3:-2])
def test_the_module_refuses_before_connecting(platform: str, config: str, message: str) -> None:
    pytest.importorskip("netmiko")
    from ansible_collections.campusnet.smtpguard.plugins.modules.device_blocklist import run

    params = {
        "platform": platform,
        "config": config,
        "host": "127.0.0.1",  # never reached: the check comes first
        "port": 9,
        "username": "smtpguard",
        "password": None,
        "secret": None,
        "key_file": None,
        "passphrase": None,
        "ssh_config_file": None,
        "host_key_checking": True,
        "known_hosts": None,
        "timeout": 1,
        "read_timeout": 1,
        "chunk_size": None,
        "confirm_minutes": 5,
        "session_log": None,
    }

    with pytest.raises(DeviceError, match=message):
        run(params, check=True)


def test_the_read_back_is_not_refused_for_what_an_operator_put_there() -> None:
    held = parse_config(
        "object-group network SMTPGUARD\n 10.0.0.0 255.0.0.0\n host 192.0.2.7\n",
        PLATFORMS["ios"],
        strict=False,
    )

    assert held.networks("object-group network SMTPGUARD") == {net("10.0.0.0/8"), net("192.0.2.7")}
