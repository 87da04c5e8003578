"""Device templates and the filters that guard them: exact text in, exact text out."""

from __future__ import annotations

import ipaddress

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.campusnet.smtpguard.plugins.filter.blocklist import (
    blocklist_family,
    blocklist_fit,
    blocklist_networks,
    nft_set_networks,
)
from support.templates import render

HEADER = "# smtpguard block list: {count} entries, generation {generation}\n"


def nft_text(v4: list[str], v6: list[str], *, chain: str, count: int) -> str:
    """The nftables file the role renders with its defaults."""
    text = HEADER.format(count=count, generation=7) + (
        "table inet smtpguard {\n"
        "\tset blocked_v4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n\t}\n"
        "\tset blocked_v6 {\n\t\ttype ipv6_addr\n\t\tflags interval\n\t\tauto-merge\n\t}\n"
        "\tchain smtp_drop {\n"
        "\t\ttype filter hook forward priority 0; policy accept;\n"
        "\t}\n"
        "}\n"
        "flush chain inet smtpguard smtp_drop\n"
    )
    text += chain
    text += "flush set inet smtpguard blocked_v4\nflush set inet smtpguard blocked_v6\n"
    for name, elements in (("blocked_v4", v4), ("blocked_v6", v6)):
        if elements:
            text += f"add element inet smtpguard {name} {{\n"
            text += "".join(f"\t{element},\n" for element in elements)
            text += "}\n"
    return text


NO_CHAIN = "delete chain inet smtpguard smtp_drop\n"
DROP_CHAIN = (
    "add rule inet smtpguard smtp_drop ip saddr @blocked_v4 tcp dport 25 counter drop\n"
    "add rule inet smtpguard smtp_drop ip6 saddr @blocked_v6 tcp dport 25 counter drop\n"
)
SMALL = ["203.0.113.9", "2001:DB8::25", "192.0.2.10", "198.51.100.0/24", "192.0.2.10/32"]


# Plain text


PLAINTEXT_CASES = [
    pytest.param(
        SMALL,
        HEADER.format(count=4, generation=7)
        + "192.0.2.10\n198.51.100.0/24\n203.0.113.9\n2001:db8::25\n",
        id="mixed-sorted-deduplicated",
    ),
    pytest.param(
        ["2001:db8:0:0::1", "2001:db8::/32", "::ffff:192.0.2.1"],
        HEADER.format(count=3, generation=7) + "192.0.2.1\n2001:db8::/32\n2001:db8::1\n",
        id="ipv6-canonical-and-mapped",
    ),
    pytest.param([], HEADER.format(count=0, generation=7), id="empty"),
]


@pytest.mark.parametrize(("entries", "expected"), PLAINTEXT_CASES)
def test_plaintext_renders_exactly(entries: list[str], expected: str) -> None:
    assert render("plaintext.txt.j2", entries) == expected


def test_plaintext_without_header() -> None:
    text = render("plaintext.txt.j2", ["192.0.2.1"], push_blocklist_header=False)

    assert text == "192.0.2.1\n"


# nftables


NFT_CASES = [
    pytest.param(
        SMALL,
        {"push_blocklist_nft_drop_smtp": False},
        nft_text(
            ["192.0.2.10", "198.51.100.0/24", "203.0.113.9"],
            ["2001:db8::25"],
            chain=NO_CHAIN,
            count=4,
        ),
        id="mixed-without-drop-chain",
    ),
    pytest.param(
        SMALL,
        {},
        nft_text(
            ["192.0.2.10", "198.51.100.0/24", "203.0.113.9"],
            ["2001:db8::25"],
            chain=DROP_CHAIN,
            count=4,
        ),
        id="mixed-drops-smtp-by-default",
    ),
    pytest.param(
        SMALL,
        {"push_blocklist_nft_drop_smtp": True},
        nft_text(
            ["192.0.2.10", "198.51.100.0/24", "203.0.113.9"],
            ["2001:db8::25"],
            chain=DROP_CHAIN,
            count=4,
        ),
        id="mixed-with-drop-chain",
    ),
    pytest.param(
        ["2001:db8::25"],
        {"push_blocklist_nft_drop_smtp": False},
        nft_text([], ["2001:db8::25"], chain=NO_CHAIN, count=1),
        id="ipv6-only-omits-empty-ipv4-add",
    ),
    pytest.param(
        ["192.0.2.1"],
        {"push_blocklist_nft_drop_smtp": False},
        nft_text(["192.0.2.1"], [], chain=NO_CHAIN, count=1),
        id="ipv4-only-omits-empty-ipv6-add",
    ),
    pytest.param(
        [], {"push_blocklist_nft_drop_smtp": False}, nft_text([], [], chain=NO_CHAIN, count=0),
        id="empty-flushes-only",
    ),
]


@pytest.mark.parametrize(("entries", "overrides", "expected"), NFT_CASES)
def test_nftables_renders_exactly(entries: list[str], overrides: dict, expected: str) -> None:
    assert render("nftables.nft.j2", entries, **overrides) == expected


def test_nftables_family_ip_drops_only_ipv4() -> None:
    text = render(
        "nftables.nft.j2",
        ["192.0.2.1"],
        push_blocklist_nft_family="ip",
        push_blocklist_nft_drop_smtp=True,
        push_blocklist_nft_hook="input",
        push_blocklist_nft_priority=-10,
    )

    assert "table ip smtpguard {\n" in text
    assert "\t\ttype filter hook input priority -10; policy accept;\n" in text
    rule = "add rule ip smtpguard smtp_drop ip saddr @blocked_v4 tcp dport 25 counter drop\n"
    assert rule in text
    assert "ip6 saddr" not in text


def test_nftables_flush_comes_before_add_in_one_file() -> None:
    lines = render("nftables.nft.j2", ["192.0.2.1", "2001:db8::1"]).splitlines()

    flushes = [i for i, line in enumerate(lines) if line.startswith("flush set ")]
    adds = [i for i, line in enumerate(lines) if line.startswith("add element ")]
    assert (len(flushes), len(adds)) == (2, 2)
    assert max(flushes) < min(adds)


def _many(count: int) -> list[str]:
    first = int(ipaddress.IPv4Address("10.0.0.0"))
    v4 = [str(ipaddress.IPv4Address(first + 2 * n)) for n in range(count // 2)]
    v6 = [f"2001:db8::{n:x}:1" for n in range(count - count // 2)]
    return v6 + v4


def test_large_plaintext_list() -> None:
    lines = render("plaintext.txt.j2", _many(10_000)).splitlines()

    assert len(lines) == 1 + 10_000
    assert lines[0] == "# smtpguard block list: 10000 entries, generation 7"
    assert (lines[1], lines[5000], lines[5001], lines[-1]) == (
        "10.0.0.0",
        "10.0.39.14",
        "2001:db8::1",
        "2001:db8::1387:1",
    )


def test_large_nftables_list_has_one_line_an_entry() -> None:
    text = render("nftables.nft.j2", _many(10_000))
    elements = [line for line in text.splitlines() if line.startswith("\t") and line.endswith(",")]

    assert len(elements) == 10_000
    assert text.count("add element ") == 2
    assert elements[0] == "\t10.0.0.0,"
    assert elements[4999] == "\t10.0.39.14,"


# Hostile input never reaches a device file


HOSTILE = [
    "192.0.2.1\nflush ruleset",
    "192.0.2.1; drop",
    "{{ 7*7 }}",
    "no ip access-list",
    "exit",
    "mail.example.org",
    "host-203-0-113-9.dyn.example.net",
    "9.113.0.203.in-addr.arpa",
    "192.0.2.1 ",
    " 192.0.2.1",
    "192.0.2.1\r",
    "192.0.2.1/24",
    "192.0.2.256",
    "1.2.3",
    "0x7f000001",
    "fe80::1%eth0",
    "[2001:db8::1]",
    "\u0661\u0669\u0662.0.2.1",
    "",
    "}",
    3221225985,
    None,
    ["192.0.2.1"],
    {"ip": "192.0.2.1"},
]


@pytest.mark.parametrize("hostile", HOSTILE, ids=repr)
def test_filter_refuses_hostile_entries_naming_them(hostile: object) -> None:
    with pytest.raises(AnsibleFilterError) as raised:
        blocklist_networks(["192.0.2.7", hostile])

    assert repr(hostile) in str(raised.value)


@pytest.mark.parametrize("template", ["plaintext.txt.j2", "nftables.nft.j2"])
@pytest.mark.parametrize("hostile", HOSTILE, ids=repr)
def test_templates_refuse_hostile_entries(template: str, hostile: object) -> None:
    with pytest.raises(AnsibleFilterError):
        render(template, ["192.0.2.7", hostile])


@pytest.mark.parametrize("entries", ["192.0.2.1", b"192.0.2.1", {"192.0.2.1": 1}, None, 7])
def test_filter_wants_a_list(entries: object) -> None:
    with pytest.raises(AnsibleFilterError, match="expects a list"):
        blocklist_networks(entries)


# Filters


NETWORK_CASES = [
    pytest.param(["2001:DB8:0:0::25"], False, ["2001:db8::25"], id="ipv6-canonical"),
    pytest.param(["::ffff:192.0.2.1"], False, ["192.0.2.1"], id="mapped-becomes-ipv4"),
    pytest.param(
        ["192.0.2.1/32", "2001:db8::/128"],
        False,
        ["192.0.2.1", "2001:db8::"],
        id="host-prefixes-bare",
    ),
    pytest.param(
        ["2001:db8::1", "10.0.0.1", "9.0.0.0/16"],
        False,
        ["9.0.0.0/16", "10.0.0.1", "2001:db8::1"],
        id="ipv4-first-numerically",
    ),
    pytest.param(["192.0.2.1", "192.0.2.1"], False, ["192.0.2.1"], id="deduplicated"),
    pytest.param(
        ["192.0.2.0", "192.0.2.1"],
        False,
        ["192.0.2.0", "192.0.2.1"],
        id="neighbours-kept-without-collapse",
    ),
    pytest.param(["192.0.2.0", "192.0.2.1"], True, ["192.0.2.0/31"], id="neighbours-collapsed"),
    pytest.param(
        ["192.0.2.0/24", "192.0.2.5", "2001:db8::1"],
        True,
        ["192.0.2.0/24", "2001:db8::1"],
        id="covered-collapsed",
    ),
    pytest.param([], True, [], id="empty"),
]


@pytest.mark.parametrize(("entries", "collapse", "expected"), NETWORK_CASES)
def test_blocklist_networks(entries: list[str], collapse: bool, expected: list[str]) -> None:
    assert blocklist_networks(entries, collapse=collapse) == expected


@pytest.mark.parametrize(
    ("version", "expected"),
    [(4, ["192.0.2.1", "198.51.100.0/24"]), ("6", ["2001:db8::1"])],
)
def test_blocklist_family(version: object, expected: list[str]) -> None:
    entries = ["2001:db8::1", "198.51.100.0/24", "192.0.2.1"]

    assert blocklist_family(entries, version) == expected


@pytest.mark.parametrize("version", [5, "ipv4", None])
def test_blocklist_family_refuses_other_versions(version: object) -> None:
    with pytest.raises(AnsibleFilterError, match="4 or 6"):
        blocklist_family(["192.0.2.1"], version)


NFT_LISTING = {
    "nftables": [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {
            "set": {
                "family": "inet",
                "name": "blocked_v4",
                "table": "smtpguard",
                "type": "ipv4_addr",
                "flags": ["interval"],
                "elem": [
                    {"range": ["192.0.2.1", "192.0.2.4"]},
                    {"prefix": {"addr": "198.51.100.0", "len": 24}},
                    "203.0.113.9",
                    {"elem": {"val": "203.0.113.10", "timeout": 60}},
                ],
            }
        },
    ]
}


def test_nft_set_networks_collapses_ranges_prefixes_and_addresses() -> None:
    assert nft_set_networks(NFT_LISTING) == [
        "192.0.2.1",
        "192.0.2.2/31",
        "192.0.2.4",
        "198.51.100.0/24",
        "203.0.113.9",
        "203.0.113.10",
    ]


def test_nft_set_networks_reads_text_and_empty_sets() -> None:
    empty = '{"nftables": [{"set": {"name": "blocked_v6", "type": "ipv6_addr"}}]}'

    assert nft_set_networks(empty) == []


@pytest.mark.parametrize(
    "listing", ["not json", {"sets": []}, {"nftables": [{"set": {"elem": ["flush ruleset"]}}]}]
)
def test_nft_set_networks_refuses_other_output(listing: object) -> None:
    with pytest.raises(AnsibleFilterError):
        nft_set_networks(listing)


@pytest.mark.parametrize(
    "entry",
    [
        "0.0.0.0/0",
        "::/0",
        "0.0.0.0/1",
        "10.0.0.0/8",
        "2001::/16",
        "::ffff:0:0/96",
        "::ffff:0.0.0.0/97",
        "127.0.0.1",
        "::1",
        "224.0.0.0/16",
        "ff02::1",
        "0.0.0.0",
        "::",
        "255.255.255.255",
        "169.254.1.1",
        "fe80::1",
        "240.0.0.1",
    ],
)
def test_entries_that_would_block_too_much_or_ourselves_never_render(entry: str) -> None:
    with pytest.raises(AnsibleFilterError, match="is refused"):
        render("plaintext.txt.j2", ["192.0.2.1", entry])


def test_aggregation_never_goes_wider_than_the_floor() -> None:
    with pytest.raises(AnsibleFilterError, match="aggregation prefixes must be at least /16"):
        blocklist_fit(
            [f"192.0.2.{n}" for n in range(1, 51)],
            "ios",
            capacity=10,
            aggregate=True,
            prefix_v4=0,
        )
