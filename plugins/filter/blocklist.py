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
from ansible_collections.campusnet.smtpguard.plugins.module_utils._device_entries import (
    MIN_PREFIX,
    SPECIAL_NETWORKS,
    merge,
    refusal,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._devices import (
    DeviceError,
    capacity_limit,
    fit_capacity,
)

# Everything an IPv4 or IPv6 address or network in CIDR form can contain; a newline, a space,
# a semicolon, a brace or a letter beyond a-f is refused before ipaddress even sees it.
_NETWORK_CHARACTERS = re.compile(r"[0-9A-Fa-f.:/]+")

# The rules themselves (the widest entry, the special ranges) live in module_utils, where the
# device_blocklist module applies the same ones to a configuration it is given directly.
__all__ = ["MIN_PREFIX", "SPECIAL_NETWORKS", "FilterModule"]


def _network(item: object) -> IPNetwork:
    """`item` as a network that went through ipaddress and may reach a device, or an error."""
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
    if network.version == 4 and network.prefixlen < 32 and ":" in item:
        return "an IPv4-mapped IPv6 network; give it in IPv4 form"
    return refusal(network)


def _networks(entries: object, *, name: str) -> set[IPNetwork]:
    """Every entry checked once by `_network`, duplicates merged."""
    return {_network(item) for item in _items(entries, name=name)}


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
    """Merge neighbours and covered networks, one address family at a time; a merge never
    gives a network wider than one entry may be (see `merge`)."""
    return merge(networks)


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
    networks = _networks(entries, name="blocklist_networks")
    if collapse:
        networks = set(_collapse(networks))
    if family is not None:
        networks = {network for network in networks if network.version == int(family)}
    return [_text(network, notation) for network in sorted(networks, key=sort_key)]


def blocklist_family(entries: object, version: int | str) -> list[str]:
    """Only the IPv4 (`4`) or only the IPv6 (`6`) entries, canonical and sorted."""
    if str(version) not in ("4", "6"):
        raise AnsibleFilterError(f"blocklist_family takes 4 or 6, not {version!r}")
    networks = _networks(entries, name="blocklist_family")
    kept = (network for network in networks if network.version == int(version))
    return [_text(network) for network in sorted(kept, key=sort_key)]


def blocklist_by_family(entries: object) -> dict[int, list[str]]:
    """`{4: [...], 6: [...]}`: the IPv4 and the IPv6 entries, canonical and sorted.

    What `blocklist_family` gives for each version, with every entry checked only once.
    """
    split: dict[int, list[str]] = {4: [], 6: []}
    for network in sorted(_networks(entries, name="blocklist_by_family"), key=sort_key):
        split[network.version].append(_text(network))
    return split


def blocklist_fit(
    entries: object,
    platform: str,
    capacity: int | None = None,
    impact: Mapping[str, object] | None = None,
    aggregate: bool = False,
    prefix_v4: int = 24,
    prefix_v6: int = 64,
    allowlist: object = (),
) -> dict[str, Any]:
    """The block list cut to a device's capacity, with the numbers to warn about.

    Within capacity the list comes back unchanged. Over it: neighbours are merged (exact,
    never wider than a /16 or /32), then, with `aggregate`, addresses are replaced by their
    /`prefix_v4` (/`prefix_v6`) network unless that network would cover part of `allowlist`
    (networks, or mappings with `network` or `ip`: the allowlist, the never-block networks,
    sources spared or unblocked) or a special range; what still does not fit is cut, the
    least impact first (`impact`: the plan's entries with their evidence). `warning` says
    what was done, with numbers.
    """
    networks = _networks(entries, name="blocklist_fit")
    requested = len(networks)
    if aggregate and (int(prefix_v4) < MIN_PREFIX[4] or int(prefix_v6) < MIN_PREFIX[6]):
        raise AnsibleFilterError(
            f"blocklist_fit: aggregation prefixes must be at least /{MIN_PREFIX[4]} (IPv4) and "
            f"/{MIN_PREFIX[6]} (IPv6), not /{prefix_v4} and /{prefix_v6}"
        )
    try:
        limit, source = capacity_limit(platform, capacity)
        if len(networks) > limit > 0:
            networks = set(_collapse(networks))
        fit = fit_capacity(
            networks,
            capacity=limit,
            impact=impact or {},
            aggregate=bool(aggregate),
            aggregate_prefix={4: int(prefix_v4), 6: int(prefix_v6)},
            merged_from=requested,
            keep_out=_items(allowlist or (), name="blocklist_fit allowlist"),
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
    return [_text(network) for network in sorted(_set_networks(listing), key=sort_key)]


def _set_networks(listing: object, *, name: str = "nft_set_networks") -> list[IPNetwork]:
    """The collapsed networks of one `nft -j list set` output (text or parsed)."""
    if isinstance(listing, str):
        try:
            listing = json.loads(listing)
        except ValueError as exc:
            raise AnsibleFilterError(f"{name}: nft output is not JSON: {exc}") from None
    if not isinstance(listing, Mapping) or not isinstance(listing.get("nftables"), list):
        raise AnsibleFilterError(f"{name} expects the output of `nft -j list set`")

    networks: list[IPNetwork] = []
    for item in listing["nftables"]:
        if isinstance(item, Mapping) and isinstance(item.get("set"), Mapping):
            for element in item["set"].get("elem", ()):
                networks.extend(_element_networks(element))
    return _collapse(networks)


def nft_set_difference(listings: object, desired: object) -> dict[str, list[str]]:
    """How a device's sets differ from the `desired` block list, both collapsed to networks.

    `listings` are `nft -j list set` outputs, one a set. Returns `missing` (desired, not on
    the device) and `unexpected` (on the device, not desired), sorted; both empty when the
    device holds exactly the list. Large lists stay inside this filter instead of passing
    through the playbook's variables several times.
    """
    device: list[IPNetwork] = []
    for listing in _items(listings, name="nft_set_difference"):
        device.extend(_set_networks(listing, name="nft_set_difference"))
    held = set(_collapse(device))
    wanted = set(_collapse(_networks(desired, name="nft_set_difference")))
    return {
        "missing": [_text(network) for network in sorted(wanted - held, key=sort_key)],
        "unexpected": [_text(network) for network in sorted(held - wanted, key=sort_key)],
    }


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
            "blocklist_by_family": blocklist_by_family,
            "nft_set_networks": nft_set_networks,
            "nft_set_difference": nft_set_difference,
            "blocklist_fit": blocklist_fit,
        }
