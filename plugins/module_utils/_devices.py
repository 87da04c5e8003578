"""CLI devices that hold the block list: line shapes, error patterns, delta, chunks, capacity.

What a platform differs in is one row of PLATFORMS (data); the code below it is the same for
all. A configuration text, whether rendered from the platform's Jinja template or read back
from the device, is parsed into containers (an object group, a prefix list) holding members
(one network each). The delta between two parsed texts becomes the commands a push sends,
and the same parser compares the device with the desired list afterwards.

The rendered text is held to a stricter standard than the read-back: every line must be a
container, a member whose address passes `ipaddress` and the block list filters' rules (no
wider than a /16 or /32, nothing special such as loopback), or a comment. So even a template
edited carelessly, or a caller that bypasses the templates, cannot carry text from logs or
DNS, or an entry that cuts off half the internet, to a device.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.campusnet.smtpguard.plugins.module_utils._addresses import (
    IPNetwork,
    sort_key,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._device_entries import (
    MIN_PREFIX,
    KeepOut,
    aggregate_refusal,
    refusal,
)

_NAME = r"[A-Za-z][A-Za-z0-9_.-]{0,63}"
_V4 = r"\d{1,3}(?:\.\d{1,3}){3}"
_V6 = r"[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*"


class DeviceError(Exception):
    """A device or a configuration text that cannot be used, worded to say what to do."""


@dataclass(frozen=True)
class Platform:
    """Everything the push needs to know about one CLI platform."""

    name: str
    device_type: str
    read_back: str
    containers: tuple[re.Pattern[str], ...]
    members: tuple[re.Pattern[str], ...]
    enter: str | None
    add: str
    remove: str
    errors: tuple[re.Pattern[str], ...]
    comment: str
    chunk_size: int
    capacity: int
    capacity_note: str
    commit: bool = False


def _lines(*patterns: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(pattern) for pattern in patterns)


PLATFORMS: dict[str, Platform] = {
    "ios": Platform(
        name="Cisco IOS / IOS-XE",
        device_type="cisco_ios",
        read_back="show running-config | section object-group",
        containers=_lines(rf"^object-group (?:network|v6-network) {_NAME}$"),
        members=_lines(
            rf"^ host (?P<address>{_V4}|{_V6})$",
            rf"^ (?P<address>{_V4}) (?P<mask>{_V4})$",
            rf"^ (?P<address>{_V6})/(?P<length>\d{{1,3}})$",
        ),
        enter="{container}",
        add="{member}",
        remove="no {member}",
        errors=_lines(
            r"^% Invalid input detected",
            r"^% Incomplete command",
            r"^% Ambiguous command",
            r"^%\s*Error",
        ),
        comment="!",
        chunk_size=200,
        capacity=10000,
        capacity_note=(
            "Cisco documents no size limit for an IOS object group, but an ACE that uses it is "
            "expanded into one TCAM entry per member, so 10,000 is a conservative bound to "
            "raise after checking the platform's TCAM (Catalyst 4500 IOS XE 3.9 configuration "
            "guide, 'Configuring Object Group ACLs')"
        ),
    ),
    "asa": Platform(
        name="Cisco ASA",
        device_type="cisco_asa",
        read_back="show running-config object-group",
        containers=_lines(rf"^object-group network {_NAME}$"),
        members=_lines(
            rf"^ network-object host (?P<address>{_V4}|{_V6})$",
            rf"^ network-object (?P<address>{_V4}) (?P<mask>{_V4})$",
            rf"^ network-object (?P<address>{_V6})/(?P<length>\d{{1,3}})$",
        ),
        enter="{container}",
        add="{member}",
        remove="no {member}",
        errors=_lines(r"^ERROR:", r"^% Invalid input detected", r"^WARNING: .*not"),
        comment="!",
        chunk_size=200,
        capacity=10000,
        capacity_note=(
            "Cisco gives no fixed number of access-list elements for the ASA: it depends on "
            "memory and the rest of the configuration (Cisco support: 25,000 elements tested "
            "on an ASA 5505); each member of a group used by an access rule is one element, "
            "so 10,000 leaves room for the site's own rules "
            "(community.cisco.com, 'ASA5505 Security + IOS: Maximum ACE Allowance?')"
        ),
    ),
    "junos": Platform(
        name="Juniper Junos",
        device_type="juniper_junos",
        read_back="show configuration policy-options | display set",
        containers=_lines(rf"^set (?P<container>policy-options prefix-list {_NAME})$"),
        members=_lines(
            rf"^set (?P<container>policy-options prefix-list {_NAME}) "
            rf"(?P<address>{_V4}|{_V6})/(?P<length>\d{{1,3}})$",
        ),
        enter=None,
        add="set {container} {member}",
        remove="delete {container} {member}",
        errors=_lines(
            r"^syntax error",
            r"^error:",
            r"^unknown command",
            r"^\s*missing argument",
            r"configuration check-out failed",
        ),
        comment="#",
        chunk_size=500,
        capacity=85325,
        capacity_note=(
            "Junos takes up to 85,325 prefixes in one prefix list; more need several lists "
            "and filter terms (juniper.net, Junos CLI reference, 'prefix-list (Policy "
            "Options)')"
        ),
        commit=True,
    ),
}

# Devices written as files or feeds; their capacity is documented here beside the CLI ones.
FILE_CAPACITY: dict[str, tuple[int, str]] = {
    "nftables": (
        65536,
        "an nftables set without `size` has no fixed limit; 65,536 is the kernel's default "
        "maxelem of an ipset hash set, the figure firewall tooling sizes sets by "
        "(IPSET_DEFAULT_MAXELEM, include/linux/netfilter/ipset/ip_set_hash.h)",
    ),
    "plaintext": (
        50000,
        "the smallest of the feed readers: PAN-OS external dynamic lists hold 50,000 IP "
        "addresses in total (150,000 on PA-5000/7000; docs.paloaltonetworks.com, 'Objects > "
        "External Dynamic Lists'); FortiGate threat feeds 10 MB or 131,072 entries a feed before "
        "FortiOS 7.4.4 and 300,000 IP addresses a device since (docs.fortinet.com, 'External "
        "resource entry limit enhancements 7.4.4'); Cisco FMC feeds a file of up to 500 MB "
        "(FireSIGHT System User Guide, 'Security Intelligence Lists and Feeds')",
    ),
    "postfix": (
        20000,
        "Postfix documents no size limit for a cidr table but compares each client with the "
        "table's patterns one after the other (postfix.org, cidr_table(5)), so 20,000 keeps "
        "the lookup per connection short",
    ),
}


def whole_number(value: object, *, name: str, minimum: int) -> int:
    """A count option: an integer (or its decimal text) of at least `minimum`.

    Booleans are refused although Python counts them as integers (`true` would otherwise be a
    capacity of 1), and so are fractions and any other text.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        number = None
    elif isinstance(value, int):
        number = value
    else:
        number = int(value.strip()) if value.strip().isdigit() else None
    if number is None or number < minimum:
        raise DeviceError(
            f"{name} must be a whole number of {minimum} or more, not {value!r} "
            f"({type(value).__name__})"
        )
    return number


def capacity_limit(platform: str, capacity: object = None) -> tuple[int, str]:
    """The capacity to fit a block list to: `capacity` when given (0 means no limit), else the
    platform's default, with where the figure comes from."""
    if capacity is None:
        return capacity_default(platform)
    capacity_default(platform)  # an unknown platform fails here, whatever the capacity
    return whole_number(capacity, name="capacity", minimum=0), "set by push_blocklist_capacity"


def capacity_default(platform: str) -> tuple[int, str]:
    """The default capacity of a platform and where the figure comes from."""
    if platform in PLATFORMS:
        return PLATFORMS[platform].capacity, PLATFORMS[platform].capacity_note
    if platform in FILE_CAPACITY:
        return FILE_CAPACITY[platform]
    raise DeviceError(f"unknown platform {platform!r}; use one of {sorted(all_platforms())}")


def all_platforms() -> set[str]:
    return set(PLATFORMS) | set(FILE_CAPACITY)


def platform(name: str) -> Platform:
    try:
        return PLATFORMS[name]
    except KeyError:
        raise DeviceError(
            f"platform {name!r} is not pushed over netmiko; use one of {sorted(PLATFORMS)}"
        ) from None


# Parsing configuration text


@dataclass
class DeviceConfig:
    """Containers (an object group, a prefix list) and their members, network to member text."""

    containers: dict[str, dict[IPNetwork, str]] = field(default_factory=dict)

    def networks(self, container: str) -> set[IPNetwork]:
        return set(self.containers.get(container, {}))

    def lines(self, platform: Platform) -> list[str]:
        """Containers and members one a line, sorted: the text a diff shows."""
        shown = []
        for container in sorted(self.containers):
            members = self.containers[container]
            for network in sorted(members, key=sort_key):
                if platform.enter is None:
                    shown.append(platform.add.format(container=container, member=members[network]))
                else:
                    shown.append(f"{container} | {members[network]}")
        return shown

    def count(self) -> int:
        return sum(len(members) for members in self.containers.values())


def _member_network(match: re.Match[str]) -> IPNetwork:
    """The network a member line names; raises ValueError for anything ipaddress refuses."""
    address = match["address"]
    groups = match.groupdict()
    if groups.get("mask"):
        return ipaddress.ip_network(f"{address}/{groups['mask']}", strict=True)
    if groups.get("length"):
        return ipaddress.ip_network(f"{address}/{groups['length']}", strict=True)
    return ipaddress.ip_network(address, strict=True)


def parse_config(text: str, platform: Platform, *, strict: bool) -> DeviceConfig:
    """Parse configuration text; `strict` (rendered text) refuses any line it cannot place."""
    config = DeviceConfig()
    container: str | None = None

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.startswith(platform.comment):
            continue
        header = _match_any(line, platform.containers)
        if header is not None:
            container = header.groupdict().get("container") or line
            config.containers.setdefault(container, {})
            continue

        member = _match_any(line, platform.members)
        if member is not None:
            owner = member.groupdict().get("container") or container
            try:
                network = _member_network(member)
            except ValueError as exc:
                if strict:
                    raise DeviceError(f"rendered line {number} {line!r}: {exc}") from None
                continue
            refused = refusal(network) if strict else None
            if refused:
                raise DeviceError(
                    f"rendered line {number} {line!r} is refused: {refused}; the block list "
                    "may only hold what the blocklist_networks filter lets through"
                )
            if owner is not None:
                text_of_member = (
                    str(network.with_prefixlen) if platform.enter is None else line.strip()
                )
                config.containers.setdefault(owner, {})[network] = text_of_member
                continue

        if strict:
            raise DeviceError(
                f"rendered line {number} {line!r} is neither a container nor a member of "
                f"{platform.name}; the template may only print blocklist_networks output"
            )
        if not line.startswith(" "):
            container = None
    return config


def _match_any(line: str, patterns: tuple[re.Pattern[str], ...]) -> re.Match[str] | None:
    for pattern in patterns:
        match = pattern.fullmatch(line)
        if match is not None:
            return match
    return None


# The delta


@dataclass
class Delta:
    """Members to add and to remove, per container, in block list order."""

    added: dict[str, list[tuple[IPNetwork, str]]] = field(default_factory=dict)
    removed: dict[str, list[tuple[IPNetwork, str]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(self.added.values()) or any(self.removed.values())

    def networks(self, which: str) -> list[str]:
        side = self.added if which == "added" else self.removed
        found = {network for members in side.values() for network, _ in members}
        return [_text(network) for network in sorted(found, key=sort_key)]


def _text(network: IPNetwork) -> str:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def compute_delta(current: DeviceConfig, desired: DeviceConfig) -> Delta:
    """What turns `current` into `desired`, for the containers `desired` names."""
    delta = Delta()
    for container, wanted in desired.containers.items():
        held = current.containers.get(container, {})
        added = [(n, wanted[n]) for n in sorted(set(wanted) - set(held), key=sort_key)]
        removed = [(n, held[n]) for n in sorted(set(held) - set(wanted), key=sort_key)]
        if added:
            delta.added[container] = added
        if removed:
            delta.removed[container] = removed
    return delta


def delta_chunks(delta: Delta, platform: Platform, *, chunk_size: int) -> list[list[str]]:
    """The commands of a delta in chunks; additions come first, so blocking never lapses.

    Each chunk of a hierarchical platform starts by entering its container, so a chunk can be
    sent on its own and a rejected chunk names the container it was working on.
    """
    chunk_size = whole_number(chunk_size, name="chunk_size", minimum=1)

    steps: list[tuple[str, str]] = []
    for container, members in delta.added.items():
        steps.extend(
            (container, platform.add.format(container=container, member=m)) for _, m in members
        )
    for container, members in delta.removed.items():
        steps.extend(
            (container, platform.remove.format(container=container, member=m)) for _, m in members
        )

    chunks: list[list[str]] = []
    for start in range(0, len(steps), chunk_size):
        part = steps[start : start + chunk_size]
        chunk: list[str] = []
        entered = None
        for container, command in part:
            if platform.enter is not None and container != entered:
                chunk.append(platform.enter.format(container=container))
                entered = container
            chunk.append(command)
        chunks.append(chunk)
    return chunks


def device_errors(output: str, platform: Platform) -> list[str]:
    """The device's own error message in `output`, with the lines that show what it refused."""
    lines = output.splitlines()
    messages = []
    for index, line in enumerate(lines):
        if any(pattern.search(line.strip()) for pattern in platform.errors):
            context = [text.rstrip() for text in lines[max(0, index - 2) : index + 1]]
            messages.append("\n".join(text for text in context if text.strip()))
    return messages


# Capacity


@dataclass
class Fit:
    """A block list cut to a device's capacity, with the numbers to warn about."""

    networks: list[str]
    requested: int
    capacity: int
    aggregated: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    merged_from: int | None = None
    not_aggregated: list[dict[str, Any]] = field(default_factory=list)

    @property
    def warning(self) -> str | None:
        merged = self.merged_from is not None and self.merged_from != self.requested
        if not self.aggregated and not self.dropped and not merged and not self.not_aggregated:
            return None
        total = self.merged_from or self.requested
        merged = f" ({self.requested} after merging neighbours)" if total != self.requested else ""
        parts = [f"the block list has {total} entries{merged}, the device holds {self.capacity}"]
        if self.aggregated:
            covered = sum(item["members"] for item in self.aggregated)
            parts.append(f"{covered} entries were aggregated into {len(self.aggregated)} networks")
        if self.not_aggregated:
            first = self.not_aggregated[0]
            parts.append(
                f"{len(self.not_aggregated)} networks were not aggregated (first: "
                f"{first['network']}, {first['reason']})"
            )
        if self.dropped:
            parts.append(
                f"{len(self.dropped)} entries with the least impact are left out "
                f"(first: {', '.join(self.dropped[:5])})"
            )
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "networks": self.networks,
            "requested": self.merged_from or self.requested,
            "capacity": self.capacity,
            "count": len(self.networks),
            "aggregated": self.aggregated,
            "not_aggregated": self.not_aggregated,
            "dropped": self.dropped,
            "warning": self.warning,
        }


IMPACT_ORDER = ("qualifying_sessions", "risk", "sessions")


def _impact(entry: object) -> tuple[float, ...]:
    evidence = entry.get("evidence", entry) if isinstance(entry, Mapping) else {}
    if not isinstance(evidence, Mapping):
        return (0.0, 0.0, 0.0)
    return tuple(float(evidence.get(name) or 0) for name in IMPACT_ORDER)


def fit_capacity(
    networks: Iterable[IPNetwork],
    *,
    capacity: int,
    impact: Mapping[str, object] | None = None,
    aggregate: bool = False,
    aggregate_prefix: Mapping[int, int] | None = None,
    merged_from: int | None = None,
    keep_out: Iterable[object] = (),
) -> Fit:
    """Cut a block list to `capacity` entries: aggregate where allowed, then keep the strongest.

    Aggregation replaces the addresses inside one /24 (IPv4) or /64 (IPv6), or the prefixes
    given in `aggregate_prefix` (at most as wide as one entry may be), by that network, the
    fullest first, until the list fits. A network that would cover part of `keep_out` (the
    allowlist, never-block networks, sources spared or unblocked) or a special range is not
    used and is named in `not_aggregated`. What still does not fit is cut by impact (`impact`
    maps an address to its state entry or evidence: most qualifying sessions, then risk, then
    sessions); without it, by address.
    """
    capacity = whole_number(capacity, name="capacity", minimum=0)
    prefixes = _aggregate_prefixes(aggregate_prefix or {4: 24, 6: 64}) if aggregate else {}
    try:
        kept_out = KeepOut(keep_out)
    except ValueError as exc:
        raise DeviceError(f"{exc}; give an address or network in CIDR form") from None
    items = sorted(set(networks), key=sort_key)
    fit = Fit([], len(items), capacity, merged_from=merged_from)
    if capacity == 0 or len(items) <= capacity:
        fit.networks = [_text(n) for n in items]
        return fit

    if aggregate:
        items = _aggregate(items, capacity, fit, prefixes=prefixes, keep_out=kept_out)

    if len(items) > capacity:
        weights = impact or {}

        def strength(network: IPNetwork) -> tuple[float, ...]:
            inside = (
                [_impact(entry) for ip, entry in weights.items() if _contains(network, ip)]
                if network.prefixlen != network.max_prefixlen
                else [_impact(weights.get(_text(network), {}))]
            )
            return max(inside, default=(0.0, 0.0, 0.0))

        ranked = sorted(items, key=lambda n: (tuple(-x for x in strength(n)), sort_key(n)))
        kept, left = ranked[:capacity], ranked[capacity:]
        fit.dropped = [_text(n) for n in left]
        items = kept
    fit.networks = [_text(n) for n in sorted(items, key=sort_key)]
    return fit


def _contains(network: IPNetwork, ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in network
    except ValueError:
        return False


def _aggregate_prefixes(prefixes: Mapping[int, object]) -> dict[int, int]:
    """The aggregation prefix of each family, each no wider than one entry may be."""
    checked = {}
    for version, widest, longest in ((4, MIN_PREFIX[4], 32), (6, MIN_PREFIX[6], 128)):
        length = whole_number(prefixes.get(version, longest), name="prefix", minimum=0)
        if not widest <= length <= longest:
            raise DeviceError(
                f"the IPv{version} aggregation prefix must be /{widest} to /{longest}, not "
                f"/{length}: an aggregate is one block list entry, and none is wider than "
                f"/{widest}"
            )
        checked[version] = length
    return checked


def _aggregate(
    items: list[IPNetwork],
    capacity: int,
    fit: Fit,
    *,
    prefixes: Mapping[int, int],
    keep_out: KeepOut,
) -> list[IPNetwork]:
    groups: dict[IPNetwork, list[IPNetwork]] = {}
    for network in items:
        length = prefixes[network.version]
        if network.prefixlen <= length:
            continue
        groups.setdefault(network.supernet(new_prefix=length), []).append(network)

    remaining = set(items)
    for supernet, members in sorted(groups.items(), key=lambda g: (-len(g[1]), sort_key(g[0]))):
        if len(remaining) <= capacity or len(members) < 2:
            break
        reason = aggregate_refusal(supernet, keep_out=keep_out)
        if reason:
            fit.not_aggregated.append(
                {"network": str(supernet), "members": len(members), "reason": reason}
            )
            continue
        remaining.difference_update(members)
        remaining.add(supernet)
        fit.aggregated.append({"network": str(supernet), "members": len(members)})
    return sorted(remaining, key=sort_key)
