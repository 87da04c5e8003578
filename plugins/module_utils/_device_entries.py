"""Which networks may reach a device, and how a block list may be merged without breaking that.

The block list filters (plugins/filter/blocklist.py), the netmiko module (device_blocklist)
and the capacity fit all hold entries to the same two rules: no entry wider than MIN_PREFIX,
and none that touches a SPECIAL_NETWORKS range. Merging entries - exact collapsing of
neighbours or aggregation into a /24 when a device is full - must produce entries that pass
the same rules, and aggregation must also leave out every network operators allowed.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Mapping

from ansible_collections.campusnet.smtpguard.plugins.module_utils._addresses import (
    IPNetwork,
    parse_network,
)

# The widest network one entry may block. Anything wider takes out a good part of the
# internet; an operator who really means it blocks it on the device by hand.
MIN_PREFIX = {4: 16, 6: 32}

# No entry may overlap these: IPv4's "this network" (a source only while a host boots, never
# a mail client) and the unspecified address, loopback, link-local, multicast, IPv4's
# reserved class E (with the broadcast address) and IPv6's old site-local range.
SPECIAL_NETWORKS = {
    4: ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4"),
    6: ("::/128", "::1/128", "fe80::/10", "fec0::/10", "ff00::/8"),
}
# The same as (first, last) integers, so that checking an entry builds no objects.
_SPECIAL_RANGES = {
    version: tuple(
        (int(network.network_address), int(network.broadcast_address))
        for network in map(ipaddress.ip_network, networks)
    )
    for version, networks in SPECIAL_NETWORKS.items()
}

SPECIAL_REFUSAL = "a loopback, multicast, link-local, reserved or unspecified address"


def _bounds(network: IPNetwork) -> tuple[int, int]:
    first = int(network.network_address)
    return first, first | ((1 << (network.max_prefixlen - network.prefixlen)) - 1)


def touches_special(network: IPNetwork) -> bool:
    """Whether `network` overlaps one of SPECIAL_NETWORKS."""
    first, last = _bounds(network)
    return any(first <= high and low <= last for low, high in _SPECIAL_RANGES[network.version])


def too_wide(network: IPNetwork) -> str | None:
    """Why `network` is wider than one entry may be, or None."""
    limit = MIN_PREFIX[network.version]
    if network.prefixlen < limit:
        return (
            f"wider than /{limit}; smtpguard never blocks or unblocks so much of the internet "
            f"at once (at most a /{MIN_PREFIX[4]} for IPv4, a /{MIN_PREFIX[6]} for IPv6)"
        )
    return None


def refusal(network: IPNetwork) -> str | None:
    """Why `network` must never reach a device as a block list entry, or None."""
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
        return "an IPv4-mapped IPv6 address; give it in IPv4 form"
    wide = too_wide(network)
    if wide:
        return wide
    if touches_special(network):
        return SPECIAL_REFUSAL
    return None


def merge(networks: Iterable[IPNetwork]) -> list[IPNetwork]:
    """Neighbours and covered networks merged, one address family at a time, never wider
    than MIN_PREFIX: a merge that would give a wider network gives its /16 (/32) parts.

    Merging only joins what the entries already cover, so entries that pass `refusal` give
    networks that pass it too.
    """
    items = list(networks)
    merged: list[IPNetwork] = []
    for version in (4, 6):
        family = [n for n in items if n.version == version]
        for network in ipaddress.collapse_addresses(family):  # type: ignore[type-var]
            if network.prefixlen < MIN_PREFIX[version]:
                merged.extend(network.subnets(new_prefix=MIN_PREFIX[version]))
            else:
                merged.append(network)
    return merged


class KeepOut:
    """Networks an aggregate must not cover: the allowlist, the never-block networks and the
    sources spared or unblocked. Entries are texts, or mappings with `network` or `ip` (as
    the allowlist file and the spare role's `spared` list hold them).

    Kept as sorted, disjoint ranges per family, so that a cycle with thousands of spared
    sources still checks each candidate aggregate with one binary search.
    """

    def __init__(self, items: Iterable[object] = ()) -> None:
        parsed = [keep_out_network(item) for item in items]
        self._networks: dict[int, list[IPNetwork]] = {}
        self._highs: dict[int, list[int]] = {}
        for version in (4, 6):
            family = [n for n in parsed if n.version == version]
            disjoint = list(ipaddress.collapse_addresses(family))  # type: ignore[type-var]
            self._networks[version] = disjoint
            self._highs[version] = [_bounds(network)[1] for network in disjoint]

    def overlap(self, network: IPNetwork) -> IPNetwork | None:
        """A network kept out that overlaps `network`, or None."""
        first, last = _bounds(network)
        index = bisect.bisect_left(self._highs[network.version], first)
        kept = self._networks[network.version]
        if index < len(kept) and int(kept[index].network_address) <= last:
            return kept[index]
        return None

    def __len__(self) -> int:
        return len(self._networks[4]) + len(self._networks[6])


def keep_out_network(item: object) -> IPNetwork:
    """One allowlist, never-block or spared entry as a network; ValueError names a bad one."""
    text = item
    if isinstance(item, Mapping):
        text = item.get("network", item.get("ip"))
    if not isinstance(text, str):
        raise ValueError(
            f"allowlist entry {item!r} is neither a network nor a mapping with `network` or `ip`"
        )
    try:
        return parse_network(text)
    except ValueError as exc:
        raise ValueError(f"allowlist entry {exc}") from None


def aggregate_refusal(supernet: IPNetwork, *, keep_out: KeepOut) -> str | None:
    """Why the entries inside `supernet` may not be replaced by it, or None."""
    reason = refusal(supernet)
    if reason:
        return reason
    kept = keep_out.overlap(supernet)
    if kept is not None:
        return f"it would cover {kept}, which is allowlisted, spared or never to be blocked"
    return None
