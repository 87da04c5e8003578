"""Addresses and networks: every address that leaves this collection passes through here."""

from __future__ import annotations

import ipaddress
from typing import Iterable, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def parse_address(text: str | bytes) -> IPAddress | None:
    """Return the normalised address in `text`, or None when it is not one.

    IPv4-mapped IPv6 addresses become IPv4; zone ids and brackets are refused.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return None
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
    return address


def normalise_address(text: str | bytes) -> str | None:
    """The canonical text of an address (`2001:DB8::25` -> `2001:db8::25`), or None."""
    address = parse_address(text)
    return None if address is None else str(address)


def parse_network(text: str) -> IPNetwork:
    """Parse an address or network in CIDR form; host bits must be zero.

    Raises ValueError with the offending text in the message.
    """
    try:
        network = ipaddress.ip_network(str(text).strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an address or network: {exc}") from None
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
        mapped = network.network_address.ipv4_mapped
        prefix = max(network.prefixlen - 96, 0)
        network = ipaddress.ip_network(f"{mapped}/{prefix}", strict=False)
    return network


def parse_networks(items: Iterable[str]) -> list[IPNetwork]:
    """Parse a list of networks, naming the first bad entry in the error."""
    return [parse_network(item) for item in items or ()]


class NetworkSet:
    """A fixed set of networks with a membership test for addresses."""

    def __init__(self, networks: Iterable[IPNetwork | str] = ()):
        parsed = [n if not isinstance(n, str) else parse_network(n) for n in networks]
        self._v4 = list(ipaddress.collapse_addresses(n for n in parsed if n.version == 4))
        self._v6 = list(ipaddress.collapse_addresses(n for n in parsed if n.version == 6))

    def match(self, address: IPAddress | str) -> IPNetwork | None:
        """The network that contains `address`, or None."""
        if isinstance(address, str):
            parsed = parse_address(address)
            if parsed is None:
                return None
            address = parsed
        for network in self._v4 if address.version == 4 else self._v6:
            if address in network:
                return network
        return None

    def __contains__(self, address: object) -> bool:
        return isinstance(address, (str, ipaddress.IPv4Address, ipaddress.IPv6Address)) and (
            self.match(address) is not None
        )

    def __bool__(self) -> bool:
        return bool(self._v4 or self._v6)


def sort_key(address: IPAddress | IPNetwork) -> tuple[int, int, int]:
    """Sort IPv4 before IPv6, then numerically."""
    if isinstance(address, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return (address.version, int(address.network_address), address.prefixlen)
    return (address.version, int(address), 128)
