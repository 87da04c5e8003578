# Copyright: campusnet network operations
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that let only canonical addresses and networks into device templates.

Every device template calls `blocklist_networks` on its input, so a wrong variable, a PTR
name or a HELO string fails the render instead of reaching a firewall.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.campusnet.smtpguard.plugins.module_utils._addresses import (
    IPNetwork,
    parse_network,
    sort_key,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._devices import (
    DeviceError,
    capacity_default,
    fit_capacity,
)

# Everything an IPv4 or IPv6 address or network in CIDR form can contain; a newline, a space,
# a semicolon, a brace or a letter beyond a-f is refused before ipaddress even sees it.
_NETWORK_CHARACTERS = re.compile(r"[0-9A-Fa-f.:/]+")


# The widest network one entry may block. Anything wider takes out a good part of the
# internet; an operator who really means it blocks it on the device by hand.
MIN_PREFIX = {4: 16, 6: 32}


def _network(item: object) -> IPNetwork:
    if not isinstance(item, str) or not _NETWORK_CHARACTERS.fullmatch(item):
        raise AnsibleFilterError(f"block list entry {item!r} is not an IP address or network")
    try:
        network = parse_network(item)
    except ValueError as exc:
        raise AnsibleFilterError(f"block list entry {item!r} is refused: {exc}") from None
    refusal = _refusal(item, network)
    if refusal:
        raise AnsibleFilterError(f"block list entry {item!r} is refused: {refusal}")
    return network


def _refusal(item: str, network: IPNetwork) -> str | None:
    """Why an entry must never reach a device, or None."""
    if ":" in item and network.version == 4 and network.prefixlen < 32:
        return "an IPv4-mapped IPv6 network; give it in IPv4 form"
    if network.prefixlen < MIN_PREFIX[network.version]:
        return (
            f"wider than /{MIN_PREFIX[network.version]}; smtpguard never blocks so much of "
            "the internet at once"
        )
    special = (
        network.is_loopback
        or network.is_multicast
        or network.is_unspecified
        or network.is_link_local
        or (network.version == 4 and network.is_reserved)
        or network.overlaps(ipaddress.ip_network("255.255.255.255/32"))
        if network.version == 4
        else network.is_loopback
        or network.is_multicast
        or network.is_unspecified
        or network.is_link_local
        or network.is_site_local
    )
    if special:
        return "a loopback, multicast, link-local, reserved or unspecified address"
    return None


def _text(network: IPNetwork, notation: str = "cidr") -> str:
    """One network in the notation a device template asks for.

    `cidr`: a single host as the bare address, else `address/len`. `prefix`: always
    `address/len` (Junos prefix lists). `netmask`: IPv4 networks as `address mask` (Cisco),
    hosts as the bare address, IPv6 as in `cidr`.
    """
    if notation == "prefix":
        return str(network)
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    if notation == "netmask" and network.version == 4:
        return f"{network.network_address} {network.netmask}"
    return str(network)


NOTATIONS = ("cidr", "prefix", "netmask")


def _items(entries: object, *, name: str) -> Iterable[object]:
    if isinstance(entries, (str, bytes, Mapping)) or not isinstance(entries, Iterable):
        raise AnsibleFilterError(
            f"{name} expects a list of addresses and networks, not {type(entries).__name__}"
        )
    return entries


def _collapse(networks: Iterable[IPNetwork]) -> list[IPNetwork]:
    """Merge neighbours and covered networks, one address family at a time."""
    items = list(networks)
    v4 = [n for n in items if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in items if isinstance(n, ipaddress.IPv6Network)]
    return [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]


def blocklist_networks(
    entries: object, collapse: bool = False, notation: str = "cidr", family: int | None = None
) -> list[str]:
    """Canonical, sorted, de-duplicated network texts; `collapse` merges neighbours.

    `notation` is `cidr` (default), `prefix` or `netmask` (see `_text`); `family` 4 or 6
    keeps one address family. Any other value fails the render.
    """
    if notation not in NOTATIONS:
        raise AnsibleFilterError(f"blocklist_networks: notation must be one of {NOTATIONS}")
    if family is not None and str(family) not in ("4", "6"):
        raise AnsibleFilterError(f"blocklist_networks: family must be 4 or 6, not {family!r}")
    networks = {_network(item) for item in _items(entries, name="blocklist_networks")}
    if collapse:
        networks = set(_collapse(networks))
    if family is not None:
        networks = {network for network in networks if network.version == int(family)}
    return [_text(network, notation) for network in sorted(networks, key=sort_key)]


def blocklist_family(entries: object, version: int | str) -> list[str]:
    """Only the IPv4 (`4`) or only the IPv6 (`6`) entries, canonical and sorted."""
    if str(version) not in ("4", "6"):
        raise AnsibleFilterError(f"blocklist_family takes 4 or 6, not {version!r}")
    networks = {_network(item) for item in _items(entries, name="blocklist_family")}
    kept = (network for network in networks if network.version == int(version))
    return [_text(network) for network in sorted(kept, key=sort_key)]


def blocklist_fit(
    entries: object,
    platform: str,
    capacity: int | None = None,
    impact: Mapping[str, object] | None = None,
    aggregate: bool = False,
    prefix_v4: int = 24,
    prefix_v6: int = 64,
) -> dict[str, Any]:
    """The block list cut to a device's capacity, with the numbers to warn about.

    Within capacity the list comes back unchanged. Over it: neighbours are merged (exact),
    then, with `aggregate`, addresses are replaced by their /`prefix_v4` (/`prefix_v6`)
    network, and what still does not fit is cut, the least impact first (`impact`: the
    plan's entries with their evidence). `warning` says what was done, with numbers.
    """
    networks = {_network(item) for item in _items(entries, name="blocklist_fit")}
    requested = len(networks)
    if aggregate and (int(prefix_v4) < MIN_PREFIX[4] or int(prefix_v6) < MIN_PREFIX[6]):
        raise AnsibleFilterError(
            f"blocklist_fit: aggregation prefixes must be at least /{MIN_PREFIX[4]} (IPv4) and "
            f"/{MIN_PREFIX[6]} (IPv6), not /{prefix_v4} and /{prefix_v6}"
        )
    try:
        limit, source = capacity_default(platform)
        if capacity is not None:
            limit, source = int(capacity), "set by push_blocklist_capacity"
        if len(networks) > limit > 0:
            networks = set(_collapse(networks))
        fit = fit_capacity(
            networks,
            capacity=limit,
            impact=impact or {},
            aggregate=bool(aggregate),
            aggregate_prefix={4: int(prefix_v4), 6: int(prefix_v6)},
            merged_from=requested,
        )
    except (DeviceError, ValueError) as exc:
        raise AnsibleFilterError(f"blocklist_fit: {exc}") from None
    result = fit.to_dict()
    result["capacity_source"] = source
    return result


def nft_set_networks(listing: object) -> list[str]:
    """The elements of one set in `nft -j list set` output, collapsed to networks.

    nft returns single addresses, prefixes and, with auto-merge, ranges; comparing a device's
    set with the desired list is only meaningful after both are collapsed.
    """
    if isinstance(listing, str):
        try:
            listing = json.loads(listing)
        except ValueError as exc:
            raise AnsibleFilterError(f"nft_set_networks: nft output is not JSON: {exc}") from None
    if not isinstance(listing, Mapping) or not isinstance(listing.get("nftables"), list):
        raise AnsibleFilterError("nft_set_networks expects the output of `nft -j list set`")

    networks: list[IPNetwork] = []
    for item in listing["nftables"]:
        if isinstance(item, Mapping) and isinstance(item.get("set"), Mapping):
            for element in item["set"].get("elem", ()):
                networks.extend(_element_networks(element))
    return [_text(network) for network in sorted(_collapse(networks), key=sort_key)]


def _element_networks(element: object) -> list[IPNetwork]:
    if isinstance(element, Mapping) and "elem" in element:
        element = element["elem"].get("val") if isinstance(element["elem"], Mapping) else None
    if isinstance(element, str):
        return [_network(element)]
    if isinstance(element, Mapping) and isinstance(element.get("prefix"), Mapping):
        prefix = element["prefix"]
        return [_network(f"{prefix.get('addr')}/{prefix.get('len')}")]
    if isinstance(element, Mapping) and isinstance(element.get("range"), list):
        first, last = (_network(part).network_address for part in element["range"])
        try:
            return list(ipaddress.summarize_address_range(first, last))
        except (TypeError, ValueError) as exc:
            raise AnsibleFilterError(f"nft_set_networks: bad range {element!r}: {exc}") from None
    raise AnsibleFilterError(f"nft_set_networks: unknown set element {element!r}")


class FilterModule:
    """Block list filters of campusnet.smtpguard."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "blocklist_networks": blocklist_networks,
            "blocklist_family": blocklist_family,
            "nft_set_networks": nft_set_networks,
            "blocklist_fit": blocklist_fit,
        }
