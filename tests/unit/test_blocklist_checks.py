"""The checks every block list entry passes on its way into a device template, once each."""

from __future__ import annotations

import ipaddress
import json

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.campusnet.smtpguard.plugins.filter import blocklist
from ansible_collections.campusnet.smtpguard.plugins.filter.blocklist import (
    SPECIAL_NETWORKS,
    blocklist_by_family,
    blocklist_family,
    blocklist_networks,
    nft_set_difference,
)
from support.templates import render

# What ipaddress calls each special network; the table must agree with it at both ends.
PREDICATES = {
    "0.0.0.0/8": "is_private",  # "this network" (RFC 6890); never a mail client's address
    "127.0.0.0/8": "is_loopback",
    "169.254.0.0/16": "is_link_local",
    "224.0.0.0/4": "is_multicast",
    "240.0.0.0/4": "is_reserved",
    "::/128": "is_unspecified",
    "::1/128": "is_loopback",
    "fe80::/10": "is_link_local",
    "fec0::/10": "is_site_local",
    "ff00::/8": "is_multicast",
}


@pytest.mark.parametrize("text", [n for networks in SPECIAL_NETWORKS.values() for n in networks])
def test_special_networks_are_what_ipaddress_says_they_are(text: str) -> None:
    network = ipaddress.ip_network(text)
    predicate = PREDICATES[text]

    assert getattr(network.network_address, predicate)
    assert getattr(network.broadcast_address, predicate)
    before = network.network_address - 1 if int(network.network_address) else None
    assert before is None or not getattr(before, predicate)


@pytest.mark.parametrize(
    "entry",
    [
        "0.0.0.0",
        "0.0.0.0/16",  # holds the unspecified address
        "0.0.0.1",
        "0.255.255.255",
        "127.0.0.1",
        "127.255.0.0/16",
        "169.254.10.0/24",
        "224.0.0.251",
        "239.255.255.255",
        "240.0.0.1",
        "255.255.255.255",
        "255.255.0.0/16",
        "::",
        "::1",
        "::/32",  # holds :: and ::1
        "fe80::1",
        "febf:ffff::/32",
        "fec0::1",
        "ff02::1",
    ],
)
def test_an_entry_touching_a_special_network_is_refused(entry: str) -> None:
    with pytest.raises(AnsibleFilterError, match="loopback, multicast, link-local, reserved"):
        blocklist_networks(["192.0.2.7", entry])


@pytest.mark.parametrize(
    "entry",
    [
        "1.0.0.0",
        "1.0.0.0/16",
        "126.255.255.255",
        "128.0.0.0/16",
        "169.253.255.0/24",
        "169.255.0.0/16",
        "223.255.255.255",
        "::2",
        "fe7f:ffff::/32",
        "fd00:5::/48",
        "2001:db8::/32",
    ],
)
def test_a_neighbour_of_a_special_network_passes(entry: str) -> None:
    assert len(blocklist_networks([entry])) == 1


MIXED = ["2001:DB8::25", "203.0.113.9", "192.0.2.0/24", "2001:db8:1::/48", "203.0.113.9"]


def test_by_family_is_both_families_at_once() -> None:
    split = blocklist_by_family(MIXED)

    assert split == {4: blocklist_family(MIXED, 4), 6: blocklist_family(MIXED, 6)}
    assert split == {4: ["192.0.2.0/24", "203.0.113.9"], 6: ["2001:db8::25", "2001:db8:1::/48"]}


@pytest.mark.parametrize("hostile", ["192.0.2.1\n", "mail.example.jp", "10.0.0.0/8", None])
def test_by_family_refuses_what_blocklist_networks_refuses(hostile: object) -> None:
    with pytest.raises(AnsibleFilterError, match="block list entry"):
        blocklist_by_family(["192.0.2.7", hostile])


def test_the_nftables_template_checks_each_entry_exactly_once(monkeypatch) -> None:
    parsed: list[str] = []
    real = blocklist.parse_network

    def counting(text: str):
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(blocklist, "parse_network", counting)
    entries = [f"198.51.{index // 200}.{index % 200 + 1}" for index in range(600)] + MIXED

    text = render("nftables.nft.j2", entries)

    assert sorted(parsed) == sorted(entries)
    assert "\t2001:db8:1::/48,\n" in text and "\t198.51.2.200,\n" in text


def nft_listing(name: str, elements: list[object]) -> str:
    return json.dumps({"nftables": [{"metainfo": {}}, {"set": {"name": name, "elem": elements}}]})


def test_set_difference_compares_collapsed_networks() -> None:
    listings = [
        nft_listing("blocked_v4", [
            "192.0.2.1",
            {"prefix": {"addr": "198.51.100.0", "len": 24}},
            {"range": ["203.0.113.0", "203.0.113.3"]},  # auto-merge of four neighbours
            "203.0.113.99",
        ]),
        nft_listing("blocked_v6", [{"elem": {"val": "2001:db8::25"}}]),
    ]  # fmt: skip
    desired = ["192.0.2.1", "198.51.100.0/24", "203.0.113.0/30", "2001:db8::25", "192.0.2.77"]

    assert nft_set_difference(listings, desired) == {
        "missing": ["192.0.2.77"],
        "unexpected": ["203.0.113.99"],
    }
    assert nft_set_difference(listings[:1], ["203.0.113.99", "203.0.113.0/30",
                                            "198.51.100.0/24", "192.0.2.1"]) == {
        "missing": [], "unexpected": []}  # fmt: skip


@pytest.mark.parametrize(
    ("listings", "desired"),
    [
        (["not json"], []),
        ([nft_listing("blocked_v4", ["mail.example.jp"])], []),
        ([nft_listing("blocked_v4", [])], ["10.0.0.0/8"]),
        ("one listing, not a list", []),
    ],
    ids=["not-json", "hostile-element", "refused-desired-entry", "not-a-list"],
)
def test_set_difference_refuses_what_it_cannot_trust(listings: object, desired: list) -> None:
    with pytest.raises(AnsibleFilterError):
        nft_set_difference(listings, desired)
