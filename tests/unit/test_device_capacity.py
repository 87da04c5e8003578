"""Capacity and other count options: whole numbers only, and a default with a cited source
for every platform."""

from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._devices import (
    PLATFORMS,
    Delta,
    DeviceError,
    all_platforms,
    capacity_default,
    capacity_limit,
    delta_chunks,
    fit_capacity,
    whole_number,
)

NETWORKS = [ipaddress.ip_network(f"192.0.2.{n}") for n in range(1, 6)]


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 0), (2, 2), ("2", 2), (" 85325 ", 85325), (10**6, 10**6)]
)
def test_whole_numbers_and_their_text_are_taken(value: object, expected: int) -> None:
    assert whole_number(value, name="capacity", minimum=0) == expected


@pytest.mark.parametrize("value", [True, False, "true", "yes", -1, "-1", 1.5, 2.0, "1.5", "", None])
def test_anything_else_is_refused_naming_the_value_and_its_type(value: object) -> None:
    with pytest.raises(DeviceError, match=r"capacity must be a whole number of 0 or more, not "):
        whole_number(value, name="capacity", minimum=0)


def test_true_is_not_a_capacity_of_one() -> None:
    with pytest.raises(DeviceError, match=r"not True \(bool\)"):
        fit_capacity(NETWORKS, capacity=True)  # type: ignore[arg-type]
    with pytest.raises(DeviceError, match=r"not True \(bool\)"):
        capacity_limit("plaintext", True)


def test_capacity_limit_uses_the_default_unless_given() -> None:
    assert capacity_limit("junos") == capacity_default("junos")
    assert capacity_limit("junos", "7") == (7, "set by push_blocklist_capacity")
    assert capacity_limit("postfix", 0)[0] == 0
    with pytest.raises(DeviceError, match="unknown platform 'paloalto'"):
        capacity_limit("paloalto", 5)


def test_a_boolean_chunk_size_is_refused() -> None:
    delta = Delta(added={"object-group network SMTPGUARD": [(NETWORKS[0], "host 192.0.2.1")]})
    with pytest.raises(DeviceError, match="chunk_size must be a whole number of 1 or more"):
        delta_chunks(delta, PLATFORMS["ios"], chunk_size=True)  # type: ignore[arg-type]


# Each default names where its figure comes from: a vendor document, not a guess.
SOURCES = {
    "nftables": (65536, "IPSET_DEFAULT_MAXELEM"),
    "plaintext": (50000, "docs.paloaltonetworks.com"),
    "postfix": (20000, "cidr_table(5)"),
    "ios": (10000, "Configuring Object Group ACLs"),
    "asa": (10000, "community.cisco.com"),
    "junos": (85325, "juniper.net"),
}


@pytest.mark.parametrize("platform", sorted(all_platforms()))
def test_every_platform_default_cites_its_source(platform: str) -> None:
    limit, note = capacity_default(platform)
    assert (limit, SOURCES[platform][1] in note) == (SOURCES[platform][0], True)


@pytest.mark.parametrize(
    "capacity", [True, -1, 2.5, "many"], ids=["bool", "negative", "fraction", "text"]
)
def test_the_fit_filter_refuses_a_capacity_that_is_no_whole_number(capacity):
    from ansible.errors import AnsibleFilterError

    from ansible_collections.campusnet.smtpguard.plugins.filter.blocklist import blocklist_fit

    with pytest.raises(AnsibleFilterError, match="capacity"):
        blocklist_fit(["192.0.2.1", "192.0.2.2"], platform="nftables", capacity=capacity)
