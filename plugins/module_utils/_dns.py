"""DNS questions about sources: forward-confirmed reverse DNS and DNSBL risk, on dnspython.

Everything here is asynchronous with bounded concurrency; each question is asked once a run
(`Lookups` keeps the answers). The synchronous wrappers `confirm_names` and `dnsbl_risk` are
what modules call. Text that comes from DNS only leaves through `clean_text`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

from ansible_collections.campusnet.smtpguard.plugins.module_utils._addresses import (
    IPAddress,
    parse_address,
)

LOG = logging.getLogger(__name__)

CONFIRMED = "confirmed"
UNCONFIRMED = "unconfirmed"
NO_PTR = "none"
ERROR = "error"

# A hostile reverse zone can list many names; only this many are checked forward.
MAX_PTR_NAMES = 4

# Answers of a DNSBL: 127.0.0.0/8 means listed, except the operators' error codes.
_LISTED = ipaddress.ip_network("127.0.0.0/8")
_ERROR_CODES = ipaddress.ip_network("127.255.255.0/24")

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

Warn = Callable[[str], None]
ZoneSpec = str | Mapping[str, Any]


def clean_text(text: str, *, limit: int = 300) -> str:
    """`text` without control characters and cut to `limit` characters, for results and logs."""
    text = _CONTROL.sub("", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def name_text(name: dns.name.Name) -> str:
    """A name as escaped presentation text without the final dot, safe to show."""
    return clean_text(name.to_text(omit_final_dot=True))


def make_resolver(
    *,
    nameservers: Sequence[str] | None = None,
    port: int = 53,
    timeout: float = 2.0,
    lifetime: float | None = None,
) -> dns.asyncresolver.Resolver:
    """A resolver asking `nameservers` on `port`, or the system's resolvers when none are given.

    `timeout` bounds one attempt at one server; `lifetime` one whole question and defaults to
    one attempt per server.
    """
    if timeout <= 0:
        raise ValueError(f"the DNS timeout must be positive, not {timeout!r}")
    if not 0 < port < 65536:
        raise ValueError(f"the DNS port must be between 1 and 65535, not {port!r}")

    if nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        servers = []
        for server in nameservers:
            address = parse_address(str(server))
            if address is None:
                raise ValueError(f"nameserver {server!r} is not an IP address")
            servers.append(str(address))
        resolver.nameservers = servers
    else:
        try:
            resolver = dns.asyncresolver.Resolver(configure=True)
        except (OSError, dns.exception.DNSException) as exc:
            raise ValueError(
                f"no nameservers given and the system resolver configuration is unusable ({exc});"
                " set nameservers"
            ) from None

    resolver.port = port
    resolver.timeout = timeout
    resolver.lifetime = lifetime if lifetime else timeout * max(1, len(resolver.nameservers))
    resolver.cache = None
    return resolver


@dataclass
class LookupStats:
    """What one run asked: questions sent, answers reused, and the failures among them."""

    lookups: int = 0
    cache_hits: int = 0
    timeouts: int = 0
    failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "lookups": self.lookups,
            "cache_hits": self.cache_hits,
            "timeouts": self.timeouts,
            "failures": self.failures,
        }


@dataclass(frozen=True)
class Reply:
    """The outcome of one question: answer, nodata, nxdomain, timeout or failure."""

    kind: str
    records: tuple[Any, ...] = ()
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.kind in ("timeout", "failure")


class Lookups:
    """The DNS questions of one run: at most `concurrency` at a time, each asked once."""

    def __init__(self, resolver: dns.asyncresolver.Resolver, *, concurrency: int = 50):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency!r}")
        self.resolver = resolver
        self.stats = LookupStats()
        self._semaphore = asyncio.Semaphore(concurrency)
        self._replies: dict[tuple[dns.name.Name, int], asyncio.Future[Reply]] = {}

    async def ask(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> Reply:
        key = (name, int(rdtype))
        pending = self._replies.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._query(name, rdtype))
            self._replies[key] = pending
        else:
            self.stats.cache_hits += 1
        return await asyncio.shield(pending)

    async def _query(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> Reply:
        async with self._semaphore:
            self.stats.lookups += 1
            try:
                answer = await self.resolver.resolve(name, rdtype, raise_on_no_answer=False)
            except dns.resolver.NXDOMAIN:
                return Reply("nxdomain")
            except dns.resolver.NoAnswer:
                return Reply("nodata")
            except dns.exception.Timeout:
                self.stats.timeouts += 1
                return Reply("timeout", detail="timed out")
            except dns.exception.DNSException as exc:
                self.stats.failures += 1
                return Reply("failure", detail=_failure_detail(exc))

        if answer.rrset is None:
            return Reply("nodata")
        return Reply("answer", records=tuple(answer.rrset))


def _failure_detail(exc: dns.exception.DNSException) -> str:
    if isinstance(exc, dns.resolver.NoNameservers):
        return "no server answered (SERVFAIL or refused)"
    return clean_text(type(exc).__name__)


# Forward-confirmed reverse DNS.


@dataclass(frozen=True)
class PtrResult:
    """What reverse DNS says about one source.

    `name` is the confirmed name, or the first PTR name when none confirms; `detail` says why
    in a few words.
    """

    address: str
    status: str
    name: dns.name.Name | None = None
    detail: str = ""

    @property
    def name_text(self) -> str | None:
        return None if self.name is None else name_text(self.name)


async def check_ptr(address: IPAddress, *, lookups: Lookups) -> PtrResult:
    """Look up the PTR names of `address` and whether one resolves back to it."""
    text = str(address)
    reply = await lookups.ask(dns.reversename.from_address(text), dns.rdatatype.PTR)
    if reply.failed:
        return PtrResult(text, ERROR, detail=f"PTR lookup {reply.detail}")
    if not reply.records:
        return PtrResult(text, NO_PTR, detail="no PTR record")

    names = sorted({record.target for record in reply.records})[:MAX_PTR_NAMES]
    rdtype = dns.rdatatype.A if address.version == 4 else dns.rdatatype.AAAA
    forward = await asyncio.gather(*(lookups.ask(name, rdtype) for name in names))

    for name, answer in zip(names, forward, strict=True):
        if any(parse_address(record.address) == address for record in answer.records):
            return PtrResult(text, CONFIRMED, name=name, detail="forward-confirmed")

    failed = [(name, answer) for name, answer in zip(names, forward, strict=True) if answer.failed]
    if failed:
        name, answer = failed[0]
        return PtrResult(
            text,
            ERROR,
            name=names[0],
            detail=f"forward lookup of {name_text(name)} {answer.detail}",
        )
    return PtrResult(text, UNCONFIRMED, name=names[0], detail="does not resolve back to the source")


async def check_ptrs(addresses: Iterable[IPAddress], *, lookups: Lookups) -> dict[str, PtrResult]:
    """`check_ptr` for every address, concurrently; keys are the normalised address texts."""
    unique = list(dict.fromkeys(addresses))
    results = await asyncio.gather(*(check_ptr(a, lookups=lookups) for a in unique))
    return {result.address: result for result in results}


def confirm_names(
    addresses: Iterable[str],
    *,
    nameservers: Sequence[str] | None = None,
    port: int = 53,
    timeout: float = 2.0,
    lifetime: float | None = None,
    concurrency: int = 50,
) -> tuple[dict[str, PtrResult], LookupStats]:
    """Forward-confirmed reverse DNS for `addresses` in one run, with the run's statistics."""
    parsed = _parse_addresses(addresses)
    resolver = make_resolver(nameservers=nameservers, port=port, timeout=timeout, lifetime=lifetime)

    async def run() -> tuple[dict[str, PtrResult], LookupStats]:
        lookups = Lookups(resolver, concurrency=concurrency)
        return await check_ptrs(parsed, lookups=lookups), lookups.stats

    return asyncio.run(run())


# DNSBL risk.


@dataclass(frozen=True)
class DnsblZone:
    """One DNS block list and the risk (percent) a listing there adds."""

    zone: dns.name.Name
    weight: float = 100.0

    @property
    def label(self) -> str:
        return name_text(self.zone)


def parse_dnsbl_zones(zones: Iterable[ZoneSpec]) -> list[DnsblZone]:
    """Read `[{zone, weight}]` (or bare zone names); errors name the bad entry."""
    parsed = []
    for entry in zones or ():
        spec = {"zone": entry} if isinstance(entry, str) else dict(entry)
        unknown = sorted(set(spec) - {"zone", "weight"})
        if unknown:
            raise ValueError(f"DNSBL entry {entry!r} has unknown keys {unknown}; use zone, weight")

        zone = str(spec.get("zone") or "").strip().strip(".")
        try:
            name = dns.name.from_text(zone) if zone else None
        except dns.exception.DNSException as exc:
            raise ValueError(f"DNSBL zone {zone!r} is not a domain name: {exc}") from None
        if name is None:
            raise ValueError(f"DNSBL entry {entry!r} needs a zone")

        try:
            weight = float(spec.get("weight", 100.0))
        except (TypeError, ValueError):
            raise ValueError(f"DNSBL zone {zone!r} has a weight that is not a number") from None
        if not 0 <= weight <= 100:
            raise ValueError(f"DNSBL zone {zone!r} weight must be 0 to 100, not {weight}")
        parsed.append(DnsblZone(name, weight))
    return parsed


def dnsbl_query_name(address: IPAddress, zone: dns.name.Name) -> dns.name.Name:
    """`<reversed octets or nibbles>.<zone>`: 192.0.2.1 in zen.example is 1.2.0.192.zen.example."""
    reverse = dns.reversename.from_address(str(address))
    suffix = dns.reversename.ipv4_reverse_domain
    if address.version == 6:
        suffix = dns.reversename.ipv6_reverse_domain
    return reverse.relativize(suffix).derelativize(zone)


def classify_dnsbl(reply: Reply) -> str:
    """`listed`, `clean`, `error-code` (an operator's 127.255.255.x), `bogus` or `failed`."""
    if reply.failed:
        return "failed"
    if not reply.records:
        return "clean"
    answers = [ipaddress.ip_address(record.address) for record in reply.records]
    if any(a in _LISTED and a not in _ERROR_CODES for a in answers):
        return "listed"
    if any(a in _ERROR_CODES for a in answers):
        return "error-code"
    return "bogus"


async def check_dnsbls(
    addresses: Iterable[IPAddress],
    *,
    zones: Sequence[DnsblZone],
    lookups: Lookups,
    warn: Warn | None = None,
) -> dict[str, float | None]:
    """The risk of every address from the block lists that list it.

    The risk is the sum of the weights of the zones listing the address, at most 100; None
    when no zone gave a usable answer for it (timeout, failure, error code).
    """
    unique = list(dict.fromkeys(addresses))
    questions = [(a, z) for a in unique for z in zones]
    replies = await asyncio.gather(
        *(lookups.ask(dnsbl_query_name(a, z.zone), dns.rdatatype.A) for a, z in questions)
    )

    risk: dict[str, float | None] = {str(a): None for a in unique}
    ignored: dict[tuple[str, str, str], list[str]] = {}
    for (address, zone), reply in zip(questions, replies, strict=True):
        verdict = classify_dnsbl(reply)
        if verdict in ("error-code", "bogus"):
            codes = ", ".join(sorted({record.address for record in reply.records}))
            ignored.setdefault((zone.label, verdict, codes), []).append(str(address))
        if verdict in ("listed", "clean"):
            weight = zone.weight if verdict == "listed" else 0.0
            risk[str(address)] = min(100.0, (risk[str(address)] or 0.0) + weight)

    for (zone_label, verdict, codes), sources in ignored.items():
        meaning = "a list operator's error code" if verdict == "error-code" else "not in 127/8"
        _warn(
            warn,
            f"DNSBL {zone_label} answered {clean_text(codes)} ({meaning}) for {len(sources)}"
            f" source(s), e.g. {sources[0]}; those answers were ignored",
        )
    return risk


def dnsbl_risk(
    addresses: Iterable[str],
    *,
    zones: Iterable[ZoneSpec],
    nameservers: Sequence[str] | None = None,
    port: int = 53,
    timeout: float = 2.0,
    lifetime: float | None = None,
    concurrency: int = 50,
    warn: Warn | None = None,
) -> dict[str, float | None]:
    """Risk in percent per source from DNS block lists: 0.0 when not listed, None when unknown."""
    parsed = _parse_addresses(addresses)
    parsed_zones = parse_dnsbl_zones(zones)
    if not parsed_zones:
        raise ValueError("no DNSBL zones given")
    resolver = make_resolver(nameservers=nameservers, port=port, timeout=timeout, lifetime=lifetime)

    async def run() -> dict[str, float | None]:
        lookups = Lookups(resolver, concurrency=concurrency)
        return await check_dnsbls(parsed, zones=parsed_zones, lookups=lookups, warn=warn)

    return asyncio.run(run())


def _parse_addresses(addresses: Iterable[str]) -> list[IPAddress]:
    parsed = []
    for text in addresses:
        address = parse_address(str(text))
        if address is None:
            raise ValueError(f"{clean_text(str(text))!r} is not an IP address")
        parsed.append(address)
    return parsed


def _warn(warn: Warn | None, message: str) -> None:
    if warn is None:
        LOG.warning("%s", message)
    else:
        warn(message)
