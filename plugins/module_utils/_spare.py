"""Sparing candidates: which flooding sources stay off the block list, and why.

Checks run cheapest first and the first that spares a source decides:
never-block networks, internal networks, the allowlist (no DNS needed), then the source's
forward-confirmed PTR name against the spare domains and the domestic TLDs. Everything else
goes on the block list, including every source whose DNS lookup failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import dns.exception
import dns.name

from ansible_collections.campusnet.smtpguard.plugins.module_utils._addresses import (
    IPAddress,
    IPNetwork,
    NetworkSet,
    parse_address,
    parse_network,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._dns import (
    CONFIRMED,
    ERROR,
    NO_PTR,
    UNCONFIRMED,
    DnsCache,
    LookupStats,
    PtrResult,
    clean_text,
    confirm_names,
    name_text,
)

SKIPPED = "skipped"
SPARED_BY = ("never_block", "internal", "allowlist", "spare_domain", "domestic")
PTR_STATUSES = (CONFIRMED, UNCONFIRMED, NO_PTR, ERROR, SKIPPED)

# How many sources a warning names before it only counts them.
_NAMED_IN_WARNING = 10

Warn = Callable[[str], None]


class SpareError(ValueError):
    """A setting or candidate that cannot be used; the message names it and the fix."""


@dataclass(frozen=True)
class AllowEntry:
    network: IPNetwork
    reason: str = ""
    expires: datetime | None = None
    expires_text: str = ""


@dataclass(frozen=True)
class SpareSettings:
    """Validated options of one run."""

    never_block: NetworkSet = field(default_factory=NetworkSet)
    internal: NetworkSet = field(default_factory=NetworkSet)
    allowlist: tuple[AllowEntry, ...] = ()
    domestic_tlds: tuple[dns.name.Name, ...] = ()
    spare_domains: tuple[dns.name.Name, ...] = ()
    ptr_lookup: bool = True
    nameservers: tuple[str, ...] = ()
    port: int = 53
    timeout: float = 2.0
    concurrency: int = 50
    # A file that keeps DNS answers for later runs until their TTL ends; None keeps them for
    # this run only. Read-only when the cache must not change (check mode).
    dns_cache_path: str | None = None
    dns_cache_read_only: bool = False


@dataclass(frozen=True)
class Candidate:
    address: IPAddress
    record: Mapping[str, Any]


# Reading options and candidates.


def read_settings(
    params: Mapping[str, Any], *, now: datetime, warn: Warn, check_mode: bool = False
) -> SpareSettings:
    """SpareSettings from module parameters; expired allowlist entries are left out with a warning.

    `dns_cache_path` (optional) names the DNS cache file, which check mode only reads.
    Raises SpareError naming the first unusable entry.
    """
    if params["timeout"] <= 0:
        raise SpareError(f"timeout must be a positive number of seconds, not {params['timeout']}")
    if not 0 < params["port"] < 65536:
        raise SpareError(f"port must be between 1 and 65535, not {params['port']}")
    if params["concurrency"] < 1:
        raise SpareError(f"concurrency must be at least 1, not {params['concurrency']}")

    nameservers = []
    for server in params["nameservers"] or ():
        address = parse_address(str(server))
        if address is None:
            raise SpareError(f"nameservers: {server!r} is not an IP address")
        nameservers.append(str(address))

    allowlist = []
    for entry in params["allowlist"] or ():
        parsed = read_allow_entry(entry)
        if parsed.expires is not None and parsed.expires <= now:
            warn(
                f"allowlist entry {parsed.network} ({parsed.reason or 'no reason given'}) expired"
                f" ({parsed.expires_text}) and is ignored; renew or remove it"
            )
            continue
        allowlist.append(parsed)

    return SpareSettings(
        never_block=_network_set("never_block", params["never_block"]),
        internal=_network_set("internal_networks", params["internal_networks"]),
        allowlist=tuple(allowlist),
        domestic_tlds=tuple(read_domain("domestic_tlds", d) for d in params["domestic_tlds"] or ()),
        spare_domains=tuple(read_domain("spare_domains", d) for d in params["spare_domains"] or ()),
        ptr_lookup=bool(params["ptr_lookup"]),
        nameservers=tuple(nameservers),
        port=int(params["port"]),
        timeout=float(params["timeout"]),
        concurrency=int(params["concurrency"]),
        dns_cache_path=params.get("dns_cache_path") or None,
        dns_cache_read_only=check_mode,
    )


def _network_set(option: str, items: Iterable[str] | None) -> NetworkSet:
    try:
        return NetworkSet(parse_network(item) for item in items or ())
    except ValueError as exc:
        raise SpareError(f"{option}: {exc}") from None


def read_domain(option: str, text: str) -> dns.name.Name:
    """A domain suffix (`ac.jp`, `.jp`, `jp.`) as an absolute name; the root is refused."""
    stripped = str(text).strip().strip(".")
    if not stripped:
        raise SpareError(f"{option}: {text!r} is empty; it would match every name")
    try:
        return dns.name.from_text(stripped)
    except dns.exception.DNSException as exc:
        raise SpareError(f"{option}: {text!r} is not a domain name: {exc}") from None


def read_allow_entry(entry: str | Mapping[str, Any]) -> AllowEntry:
    """An allowlist entry: a network, or `{network, reason, expires}`."""
    if isinstance(entry, str):
        return AllowEntry(_allow_network(entry))
    if not isinstance(entry, Mapping):
        raise SpareError(f"allowlist: {entry!r} is neither a network nor a dict with network")

    unknown = sorted(set(entry) - {"network", "reason", "expires"})
    if unknown:
        raise SpareError(
            f"allowlist entry {entry!r} has unknown keys {unknown}; use network, reason, expires"
        )
    if not entry.get("network"):
        raise SpareError(f"allowlist entry {entry!r} has no network")

    network = _allow_network(str(entry["network"]))
    reason = clean_text(str(entry.get("reason") or ""))
    expires = entry.get("expires")
    if expires in (None, ""):
        return AllowEntry(network, reason)
    return AllowEntry(network, reason, _expiry(network, expires), clean_text(str(expires)))


def _allow_network(text: str) -> IPNetwork:
    try:
        return parse_network(text)
    except ValueError as exc:
        raise SpareError(f"allowlist: {exc}") from None


def _expiry(network: IPNetwork, value: Any) -> datetime:
    """When an entry stops counting: a date lasts to the end of that day, local time."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value + timedelta(days=1), datetime.min.time())
    else:
        text = str(value).strip()
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
                moment = datetime.combine(day + timedelta(days=1), datetime.min.time())
            else:
                moment = datetime.fromisoformat(text)
        except ValueError:
            raise SpareError(
                f"allowlist entry {network}: expires {text!r} is not a date (YYYY-MM-DD)"
                " or an ISO 8601 time"
            ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()


def read_candidates(items: Sequence[Any]) -> list[Candidate]:
    """Candidates as flood_analyze returns them, each with its `ip` checked again."""
    candidates = []
    for number, item in enumerate(items or (), start=1):
        if not isinstance(item, Mapping):
            raise SpareError(f"candidate {number} is not a dict with ip: {clean_text(repr(item))}")
        address = parse_address(str(item.get("ip", "")))
        if address is None:
            shown = clean_text(repr(item.get("ip")), limit=80)
            raise SpareError(f"candidate {number} has ip {shown}, which is not an IP address")
        candidates.append(Candidate(address, item))
    return candidates


# Deciding.


@dataclass(frozen=True)
class Verdict:
    """`spared_by` is one of SPARED_BY, or None for the block list; `reason` says why."""

    spared_by: str | None
    reason: str


def spare_candidates(
    candidates: Sequence[Candidate], *, settings: SpareSettings, warn: Warn
) -> dict[str, Any]:
    """Split `candidates` into `block` and `spared`, each entry with `ptr`, `ptr_status`, `reason`.

    Also returns `stats`: counts per outcome, DNS lookups and timeouts, and the seconds taken.
    """
    started = time.monotonic()
    by_network = [spared_by_network(c.address, settings=settings) for c in candidates]

    to_check = [str(c.address) for c, v in zip(candidates, by_network, strict=True) if v is None]
    ptr_results, dns_stats = _reverse_dns(to_check, settings=settings, warn=warn)

    stats = _empty_stats(len(candidates))
    block: list[dict[str, Any]] = []
    spared: list[dict[str, Any]] = []
    for candidate, verdict in zip(candidates, by_network, strict=True):
        result = ptr_results.get(str(candidate.address))
        if verdict is None:
            verdict = spared_by_name(result, record=candidate.record, settings=settings)
        entry = _entry(candidate, result, verdict)

        stats["ptr"][entry["ptr_status"]] += 1
        if verdict.spared_by is None:
            block.append(entry)
        else:
            stats["spared_by"][verdict.spared_by] += 1
            spared.append(entry)

    stats.update(dns_stats, block=len(block), spared=len(spared))
    stats["seconds"] = round(time.monotonic() - started, 3)
    _warn_failed_lookups(block, warn=warn)
    return {"block": block, "spared": spared, "stats": stats}


def spared_by_network(address: IPAddress, *, settings: SpareSettings) -> Verdict | None:
    """The verdict of never-block, internal and allowlist networks on `address`, or None."""
    network = settings.never_block.match(address)
    if network is not None:
        return Verdict("never_block", f"never-block network {network}")

    network = settings.internal.match(address)
    if network is not None:
        return Verdict("internal", f"internal network {network}")

    entries = [e for e in settings.allowlist if address in e.network]
    if not entries:
        return None
    entry = max(entries, key=lambda e: e.network.prefixlen)
    reason = f": {entry.reason}" if entry.reason else ""
    return Verdict("allowlist", f"allowlist {entry.network}{reason}")


def spared_by_name(
    result: PtrResult | None, *, record: Mapping[str, Any], settings: SpareSettings
) -> Verdict:
    """The verdict of a source's reverse DNS: spared by a confirmed name, or blocked."""
    if result is None:
        return _blocked(record, "PTR lookup is off")
    shown = result.name_text
    if result.status == NO_PTR:
        return _blocked(record, "no PTR record")
    if result.status == ERROR:
        return _blocked(record, f"DNS lookup failed ({result.detail}), so it stays blocked")
    if result.status != CONFIRMED or result.name is None:
        return _blocked(
            record, f"PTR {shown} does not resolve back to the source, so it does not spare"
        )

    for domain in settings.spare_domains:
        if result.name.is_subdomain(domain):
            return Verdict(
                "spare_domain", f"spare domain: {shown} (forward-confirmed, {name_text(domain)})"
            )
    for tld in settings.domestic_tlds:
        if result.name.is_subdomain(tld):
            return Verdict(
                "domestic", f"domestic sender: {shown} (forward-confirmed, .{name_text(tld)})"
            )
    return _blocked(record, f"PTR {shown} is forward-confirmed but neither domestic nor spared")


def block_reason(record: Mapping[str, Any]) -> str:
    """Why a candidate was selected, e.g. `cond1: 42 sessions of 20 s or more, risk 96%`."""
    rule = record.get("rule") or "selected"
    sessions = record.get("qualifying_sessions", record.get("sessions"))
    if record.get("min_duration") is not None:
        noun = "session" if sessions == 1 else "sessions"
        what = f"{sessions} {noun} of {_number(record['min_duration'])} s or more"
        if record.get("longest_session") is not None:
            what += f" (longest {_number(record['longest_session'])} s)"
    else:
        what = (
            f"{sessions} qualifying sessions (longest {_number(record.get('longest_session'))} s)"
        )
    risk = record.get("risk")
    risk_text = "risk unknown" if risk is None else f"risk {_number(risk)}%"
    return f"{rule}: {what}, {risk_text}"


def _blocked(record: Mapping[str, Any], note: str) -> Verdict:
    return Verdict(None, f"{block_reason(record)}; {note}")


def _reverse_dns(
    addresses: Sequence[str], *, settings: SpareSettings, warn: Warn
) -> tuple[dict[str, PtrResult], dict[str, int]]:
    if not settings.ptr_lookup or not addresses:
        return {}, LookupStats().as_dict()
    path = settings.dns_cache_path
    cache = DnsCache.load(path, warn=warn) if path else None
    try:
        results, stats = confirm_names(
            addresses,
            nameservers=settings.nameservers,
            port=settings.port,
            timeout=settings.timeout,
            concurrency=settings.concurrency,
            cache=cache,
        )
    except ValueError as exc:
        raise SpareError(str(exc)) from None
    if cache is not None and path and not settings.dns_cache_read_only:
        try:
            cache.save(path)
        except OSError as exc:
            warn(f"the DNS cache {path} could not be written ({exc}); the next run asks again")
    return results, stats.as_dict()


def _entry(candidate: Candidate, result: PtrResult | None, verdict: Verdict) -> dict[str, Any]:
    return {
        **candidate.record,
        "ip": str(candidate.address),
        "ptr": None if result is None else result.name_text,
        "ptr_status": SKIPPED if result is None else result.status,
        "reason": clean_text(verdict.reason, limit=600),
    }


def _empty_stats(count: int) -> dict[str, Any]:
    return {
        "candidates": count,
        "block": 0,
        "spared": 0,
        "spared_by": dict.fromkeys(SPARED_BY, 0),
        "ptr": dict.fromkeys(PTR_STATUSES, 0),
    }


def _warn_failed_lookups(block: Sequence[Mapping[str, Any]], *, warn: Warn) -> None:
    failed = [entry["ip"] for entry in block if entry["ptr_status"] == ERROR]
    if not failed:
        return
    named = ", ".join(failed[:_NAMED_IN_WARNING])
    more = f" and {len(failed) - _NAMED_IN_WARNING} more" if len(failed) > _NAMED_IN_WARNING else ""
    warn(
        f"{len(failed)} source(s) could not be checked in DNS (timeout or server failure) and"
        f" stay on the block list: {named}{more}; check the nameservers or raise timeout"
    )


def _number(value: Any) -> str:
    """`96.0` as `96`, `96.5` as `96.5`; anything else as text."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return clean_text(str(value), limit=40)
