"""Block list state on the controller: entries with a TTL, snapshots of pushed lists, plans.

Layout of a state directory:

    state.json              {version, generation, snapshot, entries: {ip: entry}}
    snapshots/NNNNNN.json   every block list that was pushed, with its entries
    state.lock              fcntl lock: shared to read, exclusive to write

A cycle plans (read-only), pushes the planned block list, then commits the plan. A plan
carries the generation it was based on; a commit refuses when another run has moved the
generation since, so two overlapping runs cannot overwrite each other's decisions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.campusnet.smtpguard.plugins.module_utils._addresses import (
    NetworkSet,
    parse_address,
    parse_network,
    sort_key,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._device_entries import (
    too_wide,
)

STATE_VERSION = 1
STATE_FILE = "state.json"
SNAPSHOT_DIR = "snapshots"
LOCK_FILE = "state.lock"
DIR_MODE = 0o700
FILE_MODE = 0o600

COUNT_EVIDENCE = ("sessions", "qualifying_sessions", "open_sessions")
MEASURE_EVIDENCE = ("longest_session", "risk")
IMPACT_ORDER = ("qualifying_sessions", "risk", "sessions")

_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SNAPSHOT_NAME = re.compile(r"^(\d{6,})\.json$")
_REBUILD_HINT = "rebuild it from the newest snapshot with action=rebuild"


class StateError(Exception):
    """A problem with the block list state, worded to say what to do about it."""


class ConflictError(StateError):
    """Another run committed to the state since the plan was made."""


# Times and durations


def utc_now() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


def parse_time(value: object, *, what: str) -> dt.datetime:
    """An ISO 8601 time as an aware UTC datetime; a time without zone is taken as UTC."""
    if isinstance(value, dt.datetime):
        moment = value
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise StateError(
                f"{what} {value!r} is not an ISO 8601 time such as 2024-05-01T10:30:00Z"
            ) from None

    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def format_time(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with a `Z`, the form every time in the state files has."""
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def parse_duration(value: object, *, what: str) -> int:
    """Seconds from an int or a number with `s`, `m`, `h` or `d`; must be positive."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        match = _DURATION.match(str(value).strip().lower()) if isinstance(value, str) else None
        if match is None:
            raise StateError(
                f"{what} must be seconds or a number with s, m, h or d such as 24h (got {value!r})"
            )
        seconds = int(match[1]) * _UNIT_SECONDS[match[2]]

    if seconds <= 0:
        raise StateError(f"{what} must be longer than zero (got {value!r})")
    return seconds


# Addresses


def address_order(ip: str) -> tuple[int, int, int]:
    """Sort key of a canonical address text: IPv4 before IPv6, then numerically."""
    address = parse_address(ip)
    if address is None:
        raise StateError(f"{ip!r} is not an address")
    return sort_key(address)


def sorted_addresses(addresses: Iterable[str]) -> list[str]:
    """Canonical address texts in block list order."""
    return sorted(addresses, key=address_order)


def _describe(item: object) -> str:
    text = repr(item)
    return text if len(text) <= 80 else text[:77] + "..."


# Candidates from the sparing module


def read_candidates(candidates: Sequence[object] | None) -> dict[str, dict[str, Any]]:
    """Validate the block list of the sparing module, keyed by canonical address.

    A source listed twice (for instance once as IPv4-mapped IPv6) keeps its stronger record.
    """
    found: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(candidates or ()):
        candidate = _read_candidate(item, label=f"candidate {index} {_describe(item)}")
        kept = found.get(candidate["ip"])
        if kept is None or impact(candidate) > impact(kept):
            found[candidate["ip"]] = candidate
    return found


def _read_candidate(item: object, *, label: str) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise StateError(f"{label}: expected a dict with ip, rule, rules and reason")

    ip = item.get("ip")
    address = parse_address(ip) if isinstance(ip, str) else None
    if address is None:
        raise StateError(f"{label}: ip is not an IPv4 or IPv6 address")

    rule = item.get("rule")
    rules = item.get("rules")
    reason = item.get("reason")
    ptr = item.get("ptr")
    if not isinstance(rule, str) or not rule:
        raise StateError(f"{label}: rule must be the name of the rule it matched")
    if not isinstance(rules, list) or not all(isinstance(name, str) for name in rules):
        raise StateError(f"{label}: rules must be the list of rule names it matched")
    if not isinstance(reason, str) or not reason:
        raise StateError(f"{label}: reason must say why the source is blocked")
    if ptr is not None and not isinstance(ptr, str):
        raise StateError(f"{label}: ptr must be a name or null")

    return {
        "ip": str(address),
        "rule": rule,
        "rules": list(rules),
        "reason": reason,
        "ptr": ptr,
        "evidence": read_evidence(item, label=label),
    }


def read_evidence(item: Mapping[str, Any], *, label: str) -> dict[str, int | float | None]:
    """The measured evidence of a source; a missing figure stays null."""
    evidence: dict[str, int | float | None] = {}
    for name in COUNT_EVIDENCE + MEASURE_EVIDENCE:
        value = item.get(name)
        if value is None:
            evidence[name] = None
            continue
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or number != number or number < 0:
            raise StateError(f"{label}: {name} must be a number of zero or more")
        evidence[name] = int(number) if name in COUNT_EVIDENCE else number
    return evidence


def impact(record: Mapping[str, Any]) -> tuple[float, ...]:
    """Most qualifying sessions first, then risk, then sessions."""
    evidence = record.get("evidence") or {}
    return tuple(float(evidence.get(name) or 0) for name in IMPACT_ORDER)


# Entries as stored


def read_entries(data: object, *, source: str) -> dict[str, dict[str, Any]]:
    """Validate stored entries: canonical addresses as keys, readable times in each entry."""
    if not isinstance(data, Mapping):
        raise ValueError(f"entries in {source} must be a mapping of address to entry")

    entries: dict[str, dict[str, Any]] = {}
    for ip, entry in data.items():
        address = parse_address(ip) if isinstance(ip, str) else None
        if address is None or str(address) != ip:
            raise ValueError(f"{_describe(ip)} in {source} is not a canonical address")
        if not isinstance(entry, Mapping):
            raise ValueError(f"entry {ip} in {source} is not a mapping")
        for name in ("first_seen", "last_seen", "expires"):
            try:
                parse_time(entry.get(name), what=name)
            except StateError as exc:
                raise ValueError(f"entry {ip} in {source}: {exc}") from None
        entries[ip] = dict(entry)
    return entries


def expiry(entry: Mapping[str, Any]) -> dt.datetime:
    """When a stored entry stops being blocked."""
    return parse_time(entry["expires"], what="expires")


@dataclass
class State:
    """Contents of state.json."""

    generation: int = 0
    snapshot: int = 0
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def blocklist(self) -> list[str]:
        return sorted_addresses(self.entries)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "generation": self.generation,
            "snapshot": self.snapshot,
            "entries": self.entries,
        }

    @classmethod
    def from_json(cls, data: object, *, source: str) -> State:
        if not isinstance(data, Mapping) or data.get("version") != STATE_VERSION:
            raise ValueError(f"{source} is not a version {STATE_VERSION} block list state")

        generation = _count(data.get("generation"), name="generation", source=source)
        snapshot = _count(data.get("snapshot"), name="snapshot", source=source)
        entries = read_entries(data.get("entries"), source=source)
        return cls(generation=generation, snapshot=snapshot, entries=entries)


def _count(value: object, *, name: str, source: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} in {source} must be a number of zero or more")
    return value


@dataclass
class Snapshot:
    """One pushed block list, as recorded under snapshots/."""

    number: int
    created: str
    generation: int
    entries: dict[str, dict[str, Any]]
    # What recorded it: a cycle's "plan", a "rollback" (restoring `restores`) or "unblock".
    action: str = "plan"
    restores: int | None = None

    @property
    def blocklist(self) -> list[str]:
        return sorted_addresses(self.entries)

    def to_json(self) -> dict[str, Any]:
        data = {
            "snapshot": self.number,
            "created": self.created,
            "generation": self.generation,
            "action": self.action,
            "blocklist": self.blocklist,
            "entries": self.entries,
        }
        if self.restores is not None:
            data["restores"] = self.restores
        return data


# Files


class StateStore:
    """The files of one state directory. Callers hold `lock()` while they read or write."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = os.path.abspath(os.path.expanduser(state_dir))
        self.state_file = os.path.join(self.state_dir, STATE_FILE)
        self.snapshot_dir = os.path.join(self.state_dir, SNAPSHOT_DIR)
        self.lock_file = os.path.join(self.state_dir, LOCK_FILE)

    @contextlib.contextmanager
    def lock(self, *, exclusive: bool) -> Iterator[None]:
        """Shared lock to read, exclusive to write; a never-written directory needs none."""
        if exclusive:
            self._make_dirs()
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, FILE_MODE)
        else:
            try:
                fd = os.open(self.lock_file, os.O_RDONLY)
            except FileNotFoundError:
                fd = -1

        if fd < 0:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def read_state(self) -> State:
        """state.json, or an empty state when nothing was ever committed here."""
        try:
            with open(self.state_file, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            if self.snapshot_numbers():
                raise StateError(
                    f"{self.state_file} is missing but {self.snapshot_dir} holds snapshots; "
                    f"{_REBUILD_HINT} before planning"
                ) from None
            return State()

        try:
            return State.from_json(json.loads(text), source=self.state_file)
        except ValueError as exc:
            raise StateError(
                f"{self.state_file} is corrupt ({exc}); {_REBUILD_HINT}, which rewrites it "
                f"from the newest file in {self.snapshot_dir}"
            ) from None

    def snapshot_numbers(self) -> list[int]:
        """Numbers of the snapshots on disk, oldest first."""
        try:
            names = os.listdir(self.snapshot_dir)
        except FileNotFoundError:
            return []
        matches = (_SNAPSHOT_NAME.match(name) for name in names)
        return sorted(int(match[1]) for match in matches if match)

    def snapshot_path(self, number: int) -> str:
        return os.path.join(self.snapshot_dir, f"{number:06d}.json")

    def read_snapshot(self, number: int) -> Snapshot:
        """One snapshot; a missing one names those that exist. Snapshot 0 is the empty list
        that was in force before the first push."""
        if number == 0:
            return Snapshot(0, "", 0, {}, action="initial")
        path = self.snapshot_path(number)
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            available = ", ".join(str(n) for n in self.snapshot_numbers()) or "none"
            raise StateError(
                f"snapshot {number} does not exist in {self.snapshot_dir}; available: {available}"
            ) from None
        except ValueError as exc:
            raise StateError(f"{path} is corrupt ({exc}); move it away") from None

        try:
            return _snapshot_from_json(data, number=number, source=path)
        except ValueError as exc:
            raise StateError(f"{path} is corrupt ({exc}); move it away") from None

    def write_state(self, state: State) -> None:
        self._make_dirs()
        self._write_json(self.state_file, state.to_json())

    def write_snapshot(self, snapshot: Snapshot) -> str:
        self._make_dirs()
        path = self.snapshot_path(snapshot.number)
        self._write_json(path, snapshot.to_json())
        return path

    def _make_dirs(self) -> None:
        for directory in (self.state_dir, self.snapshot_dir):
            if not os.path.isdir(directory):
                os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
                os.chmod(directory, DIR_MODE)

    @staticmethod
    def _write_json(path: str, data: Mapping[str, Any]) -> None:
        """Temp file in the same directory, fsync, rename over, fsync the directory."""
        directory = os.path.dirname(path)
        fd, temp_path = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp_path, FILE_MODE)
            os.replace(temp_path, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_path)
            raise

        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _snapshot_from_json(data: object, *, number: int, source: str) -> Snapshot:
    if not isinstance(data, Mapping) or data.get("snapshot") != number:
        raise ValueError(f"{source} does not hold snapshot {number}")
    generation = data.get("generation")
    if not isinstance(generation, int) or isinstance(generation, bool):
        raise ValueError(f"generation in {source} must be a number")
    entries = read_entries(data.get("entries"), source=source)
    restores = data.get("restores")
    return Snapshot(
        number,
        str(data.get("created", "")),
        generation,
        entries,
        action=str(data.get("action", "plan")),
        restores=restores if isinstance(restores, int) and not isinstance(restores, bool) else None,
    )


# Plans


@dataclass
class Plan:
    """A decided block list, not yet written; `payload()` is what commit needs."""

    action: str
    base: State
    pushed: list[str]
    last_snapshot: int
    entries: dict[str, dict[str, Any]]
    now: dt.datetime
    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    renewed: list[dict[str, Any]] = field(default_factory=list)
    capped: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def blocklist(self) -> list[str]:
        return sorted_addresses(self.entries)

    @property
    def list_changes(self) -> bool:
        return self.blocklist != self.pushed

    @property
    def changed(self) -> bool:
        return self.entries != self.base.entries or self.list_changes

    @property
    def next_snapshot(self) -> int:
        return self.last_snapshot + 1 if self.list_changes else self.base.snapshot

    def payload(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "action": self.action,
            "based_on_generation": self.base.generation,
            "based_on_snapshot": self.base.snapshot,
            "next_snapshot": self.next_snapshot,
            "now": format_time(self.now),
            "rollback_to": self.extra.get("rollback_to"),
            "blocklist": self.blocklist,
            "entries": self.entries,
        }

    def result(self, *, state_file: str) -> dict[str, Any]:
        lists = {
            "added": _in_order(self.added),
            "removed": _in_order(self.removed),
            "renewed": _in_order(self.renewed),
            "capped": self.capped,
            "refused": _in_order(self.refused),
        }
        blocklist = self.blocklist
        return {
            "changed": self.changed,
            "blocklist": blocklist,
            **lists,
            "counts": {"blocklist": len(blocklist), **{k: len(v) for k, v in lists.items()}},
            "generation": self.base.generation,
            "snapshot": self.base.snapshot,
            "state_file": state_file,
            "plan": self.payload(),
            "diff": blocklist_diff(
                self.base.blocklist,
                blocklist,
                state_file=state_file,
                before=f"generation {self.base.generation}",
                after=f"planned by {self.action}",
            ),
            **self.extra,
        }


def _in_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda record: address_order(record["ip"]))


def blocklist_diff(
    old: list[str], new: list[str], *, state_file: str, before: str, after: str
) -> dict[str, str]:
    """A diff of two block lists, one address a line, so it shows exactly what changes."""
    return {
        "before_header": f"{state_file} ({before}, {len(old)} entries)",
        "after_header": f"{state_file} ({after}, {len(new)} entries)",
        "before": "".join(f"{ip}\n" for ip in old),
        "after": "".join(f"{ip}\n" for ip in new),
    }


@dataclass
class PlannedState:
    """What a commit reads back out of a plan."""

    action: str
    generation: int
    entries: dict[str, dict[str, Any]]
    restores: int | None = None

    @property
    def blocklist(self) -> list[str]:
        return sorted_addresses(self.entries)


def read_plan(payload: object) -> PlannedState:
    """Validate a plan handed back by the playbook; its addresses are checked again."""
    hint = "pass the `plan` returned by blocklist_state action=plan, rollback or unblock"
    if not isinstance(payload, Mapping) or payload.get("version") != STATE_VERSION:
        raise StateError(f"plan is not a block list plan of version {STATE_VERSION}; {hint}")

    generation = payload.get("based_on_generation")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise StateError(f"plan has no based_on_generation; {hint}")

    try:
        entries = read_entries(payload.get("entries"), source="plan")
    except ValueError as exc:
        raise StateError(f"{exc}; {hint}") from None
    restores = payload.get("rollback_to")
    if not isinstance(restores, int) or isinstance(restores, bool):
        restores = None
    return PlannedState(str(payload.get("action", "plan")), generation, entries, restores)


def _network_text(network: Any) -> str:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _never_block(networks: Sequence[str] | None) -> NetworkSet:
    try:
        return NetworkSet(networks or ())
    except ValueError as exc:
        raise StateError(f"never_block: {exc}") from None


# A duration as operators type it, a minus sign included, so that `-5d` is answered as a
# duration that is not positive rather than as a time that cannot be parsed.
_SIGNED_DURATION = re.compile(r"^-?\s*\d+\s*[smhd]?$", re.IGNORECASE)
_EXPIRES_FORMS = (
    "a positive duration such as 7d or 12h, or an ISO 8601 time after now in the form "
    "2024-05-01T10:30:00Z"
)


def _until(expires: object, *, now: dt.datetime) -> dt.datetime | None:
    """An allowlist expiry given as a duration from now or as a time."""
    if expires in (None, ""):
        return None
    if isinstance(expires, int) or (
        isinstance(expires, str) and _SIGNED_DURATION.match(expires.strip())
    ):
        try:
            seconds = parse_duration(expires, what="expires")
        except StateError:
            raise StateError(f"expires must be {_EXPIRES_FORMS} (got {expires!r})") from None
        return now + dt.timedelta(seconds=seconds)

    try:
        until = parse_time(expires, what="expires")
    except StateError:
        raise StateError(
            f"expires {expires!r} is not an ISO 8601 time nor a duration; give {_EXPIRES_FORMS}"
        ) from None
    if until <= now:
        raise StateError(
            f"expires {expires!r} is not after now ({format_time(now)}); give {_EXPIRES_FORMS}"
        )
    return until


def _source_network(address: object, *, action: str) -> Any:
    """The address or network to unblock or allowlist: parsed, and no wider than one block
    list entry may be, so that one typo cannot allow the whole internet."""
    try:
        network = parse_network(str(address))
    except ValueError as exc:
        raise StateError(f"address: {exc}") from None
    wide = too_wide(network)
    if wide:
        raise StateError(
            f"address {address!r} is refused for {action}: {wide}; give the address or the "
            "network that was blocked"
        )
    return network


# Decisions, one step each


def _spare(plan: Plan, found: dict[str, dict[str, Any]], *, never_block: NetworkSet) -> None:
    """Remove state entries inside never_block networks and refuse such candidates."""
    if not never_block:
        return
    for ip in sorted_addresses(plan.entries):
        network = never_block.match(ip)
        if network is not None:
            del plan.entries[ip]
            plan.removed.append({"ip": ip, "reason": "never-block", "detail": str(network)})

    for ip in list(found):
        network = never_block.match(ip)
        if network is not None:
            del found[ip]
            if ip not in plan.base.entries:
                plan.refused.append({"ip": ip, "reason": "never-block", "detail": str(network)})


def _allowlist(items: Sequence[object] | None, *, now: dt.datetime) -> list[tuple[Any, str]]:
    """Allowlist networks in force at `now`: strings, or {network, reason, expires}."""
    allowed = []
    for item in items or ():
        if isinstance(item, Mapping):
            text, reason = item.get("network"), str(item.get("reason") or "allowlist")
            if item.get("expires"):
                if parse_time(item["expires"], what="allowlist expires") <= now:
                    continue  # an expired allowlist entry no longer protects the source
        else:
            text, reason = item, "allowlist"
        try:
            allowed.append((parse_network(str(text)), reason))
        except ValueError as exc:
            raise StateError(f"allowlist: {exc}") from None
    return allowed


def _spared_sources(items: Sequence[object] | None) -> dict[str, str]:
    """Sources the sparing step spared this cycle (domestic, partner), with the reason."""
    spared = {}
    for item in items or ():
        if not isinstance(item, Mapping) or "ip" not in item:
            raise StateError(f"spared: {_describe(item)} is not a spared source with an ip")
        address = parse_address(str(item["ip"]))
        if address is None:
            raise StateError(f"spared: {item['ip']!r} is not an address")
        spared[str(address)] = str(item.get("reason") or "spared")
    return spared


def _release(
    plan: Plan,
    found: dict[str, dict[str, Any]],
    *,
    spared: dict[str, str],
    allowlist: list[tuple[Any, str]],
) -> None:
    """Take spared and allowlisted sources off the block list, even before their expiry."""
    for ip in sorted_addresses(plan.entries):
        address = parse_address(ip)
        if ip in spared:
            del plan.entries[ip]
            plan.removed.append({"ip": ip, "reason": "spared", "detail": spared[ip]})
            continue
        for network, reason in allowlist:
            if address in network:
                del plan.entries[ip]
                plan.removed.append({"ip": ip, "reason": "allowlist", "detail": reason})
                break
    for ip in list(found):
        address = parse_address(ip)
        if any(address in network for network, _ in allowlist):
            del found[ip]


def _renew(plan: Plan, found: dict[str, dict[str, Any]], *, ttl: dt.timedelta) -> set[str]:
    """Sources already blocked that match again: newer evidence, later expiry."""
    matched = {ip for ip in found if ip in plan.entries}
    for ip in matched:
        old = plan.entries[ip]
        candidate = found[ip]
        renewed = {
            **old,
            "last_seen": format_time(max(parse_time(old["last_seen"], what="last_seen"), plan.now)),
            "expires": format_time(max(expiry(old), plan.now + ttl)),
            "rule": candidate["rule"],
            "rules": candidate["rules"],
            "reason": candidate["reason"],
            "ptr": candidate["ptr"] if candidate["ptr"] is not None else old.get("ptr"),
            "evidence": candidate["evidence"],
        }
        if renewed != old:
            plan.entries[ip] = renewed
            plan.renewed.append({"ip": ip, "expires": renewed["expires"]})
    return matched


def _expire(plan: Plan, *, keep: set[str]) -> None:
    """Entries whose expiry is at or before now leave the block list."""
    for ip in sorted_addresses(plan.entries):
        entry = plan.entries[ip]
        if ip not in keep and expiry(entry) <= plan.now:
            del plan.entries[ip]
            plan.removed.append({"ip": ip, "reason": "expired", "detail": entry["expires"]})


def _add(plan: Plan, found: dict[str, dict[str, Any]], *, ttl: dt.timedelta, max_new: int) -> None:
    """New sources, at most max_new of them, the highest impact first."""
    new = [found[ip] for ip in found if ip not in plan.entries]
    new.sort(key=lambda c: (tuple(-x for x in impact(c)), address_order(c["ip"])))
    kept, left_out = new[:max_new], new[max_new:]

    stamp = format_time(plan.now)
    expires = format_time(plan.now + ttl)
    for candidate in kept:
        plan.entries[candidate["ip"]] = {
            "first_seen": stamp,
            "last_seen": stamp,
            "expires": expires,
            **{name: candidate[name] for name in ("rule", "rules", "reason", "ptr", "evidence")},
        }
        plan.added.append(
            {
                "ip": candidate["ip"],
                "rule": candidate["rule"],
                "reason": candidate["reason"],
                "expires": expires,
            }
        )

    for candidate in left_out:
        figures = {name: candidate["evidence"][name] for name in IMPACT_ORDER}
        plan.capped.append({"ip": candidate["ip"], "rule": candidate["rule"], **figures})
    if left_out:
        plan.warnings.append(
            f"{len(new)} new sources exceed max_new={max_new}: blocking the {len(kept)} with "
            f"the most qualifying sessions, then risk, then sessions; {len(left_out)} left "
            f"out this run (listed in capped)"
        )


# The operations


@dataclass
class Current:
    """The state as read under a lock, with the block list that was last pushed."""

    state: State
    pushed: list[str]
    last_snapshot: int


class BlockListState:
    """Plan, commit, roll back, unblock, show and rebuild one state directory."""

    def __init__(self, state_dir: str) -> None:
        self.store = StateStore(state_dir)

    def plan(
        self,
        *,
        candidates: Sequence[object] | None,
        ttl: object,
        max_new: int,
        never_block: Sequence[str] | None,
        now: dt.datetime,
        spared_sources: Sequence[object] | None = None,
        allowlist: Sequence[object] | None = None,
    ) -> Plan:
        found = read_candidates(candidates)
        allowed = _allowlist(allowlist, now=now)
        lifetime = dt.timedelta(seconds=parse_duration(ttl, what="ttl"))
        spared = _never_block(never_block)
        if max_new < 0:
            raise StateError(f"max_new must be zero or more (got {max_new})")

        with self.store.lock(exclusive=False):
            current = self._read_current()
        plan = self._new_plan("plan", current, dict(current.state.entries), now=now)

        _spare(plan, found, never_block=spared)
        _release(plan, found, spared=_spared_sources(spared_sources), allowlist=allowed)
        matched = _renew(plan, found, ttl=lifetime)
        _expire(plan, keep=matched)
        _add(plan, found, ttl=lifetime, max_new=max_new)
        return plan

    def rollback(
        self, *, snapshot: int | None, never_block: Sequence[str] | None, now: dt.datetime
    ) -> Plan:
        spared = _never_block(never_block)
        if snapshot is not None and (isinstance(snapshot, bool) or snapshot < 0):
            raise StateError(
                f"snapshot must be the number of a snapshot, or 0 for the empty block list in "
                f"force before the first push (got {snapshot!r})"
            )
        with self.store.lock(exclusive=False):
            current = self._read_current()
            target = self._previous(current.state) if snapshot is None else snapshot
            old = self.store.read_snapshot(target)

        plan = self._new_plan("rollback", current, dict(old.entries), now=now)
        plan.extra["rollback_to"] = target
        for ip in sorted_addresses(plan.entries):
            network = spared.match(ip)
            if network is not None:
                del plan.entries[ip]
                plan.refused.append({"ip": ip, "reason": "never-block", "detail": str(network)})

        for ip in plan.base.entries:
            if ip not in plan.entries:
                plan.removed.append(
                    {"ip": ip, "reason": "rollback", "detail": f"not in snapshot {target}"}
                )
        for ip in plan.entries:
            if ip not in plan.base.entries:
                plan.added.append(
                    {
                        "ip": ip,
                        "reason": "rollback",
                        "rule": plan.entries[ip].get("rule"),
                        "expires": plan.entries[ip]["expires"],
                    }
                )
        return plan

    def unblock(
        self, *, address: str, reason: str | None, expires: object, now: dt.datetime
    ) -> Plan:
        network = _source_network(address, action="unblock")
        if not reason:
            raise StateError("reason is required to unblock: say why the source is allowed")
        until = _until(expires, now=now)

        with self.store.lock(exclusive=False):
            current = self._read_current()
        plan = self._new_plan("unblock", current, dict(current.state.entries), now=now)

        for ip in sorted_addresses(plan.entries):
            if parse_address(ip) in network:
                del plan.entries[ip]
                plan.removed.append({"ip": ip, "reason": "unblocked", "detail": reason})
        plan.extra["unblocked"] = {
            "address": _network_text(network),
            "reason": reason,
            "expires": None if until is None else format_time(until),
        }
        return plan

    def allowlist(
        self,
        path: str,
        *,
        now: dt.datetime,
        write: bool,
        address: str | None = None,
        reason: str | None = None,
        expires: object = None,
    ) -> dict[str, Any]:
        """Prune the allowlist file of expired entries and, given `address`, allowlist it."""
        add = None
        if address is not None:
            network = _source_network(address, action="allowlist")
            if not reason:
                raise StateError("reason is required to allowlist: say why the source is allowed")
            until = _until(expires, now=now)
            add = {
                "address": _network_text(network),
                "reason": reason,
                "expires": None if until is None else format_time(until),
            }
        return AllowlistFile(path, self.store).update(now=now, add=add, write=write)

    def commit(self, payload: object, *, write: bool) -> dict[str, Any]:
        wanted = read_plan(payload)

        with self.store.lock(exclusive=False):
            current = self._read_current()
        decision = self._decide(wanted, current)

        if decision is not None and write:
            with self.store.lock(exclusive=True):
                current = self._read_current()
                decision = self._decide(wanted, current)
                if decision is not None:
                    self._write(*decision)

        return self._commit_result(wanted, current, decision)

    def show(self) -> dict[str, Any]:
        with self.store.lock(exclusive=False):
            state = self.store.read_state()
            numbers = self.store.snapshot_numbers()

        expiries = [expiry(entry) for entry in state.entries.values()]
        return {
            "changed": False,
            "state_file": self.store.state_file,
            "exists": os.path.exists(self.store.state_file),
            "generation": state.generation,
            "snapshot": state.snapshot,
            "snapshots": numbers,
            "count": len(state.entries),
            "blocklist": state.blocklist,
            "next_expiry": format_time(min(expiries)) if expiries else None,
        }

    def rebuild(self, *, write: bool) -> dict[str, Any]:
        with self.store.lock(exclusive=write):
            numbers = self.store.snapshot_numbers()
            if not numbers:
                raise StateError(
                    f"no snapshot in {self.store.snapshot_dir} to rebuild "
                    f"{self.store.state_file} from; move the state file away to start with an "
                    f"empty block list"
                )
            newest = self.store.read_snapshot(numbers[-1])
            try:
                existing: State | None = self.store.read_state()
            except StateError:
                existing = None

            generation = max(newest.generation, existing.generation if existing else 0) + 1
            rebuilt = State(generation, newest.number, dict(newest.entries))
            changed = existing is None or (existing.snapshot, existing.entries) != (
                rebuilt.snapshot,
                rebuilt.entries,
            )
            if changed and write:
                self.store.write_state(rebuilt)

        final = rebuilt if changed or existing is None else existing
        return {
            "changed": changed,
            "state_file": self.store.state_file,
            "rebuilt_from": self.store.snapshot_path(newest.number),
            "generation": final.generation,
            "snapshot": final.snapshot,
            "count": len(final.entries),
            "blocklist": final.blocklist,
        }

    def _read_current(self) -> Current:
        state = self.store.read_state()
        pushed = self.store.read_snapshot(state.snapshot).blocklist if state.snapshot else []
        last = max([*self.store.snapshot_numbers(), state.snapshot])
        return Current(state, pushed, last)

    def _new_plan(
        self, action: str, current: Current, entries: dict[str, Any], *, now: dt.datetime
    ) -> Plan:
        return Plan(action, current.state, current.pushed, current.last_snapshot, entries, now)

    def _previous(self, state: State) -> int:
        """The list in force before the newest push of a cycle.

        When the current list was itself recorded by a rollback, the answer is the snapshot
        that rollback restored, so repeating a rollback changes nothing instead of flipping
        between two lists. Before the first push the list was empty: snapshot 0.
        """
        if state.snapshot == 0:
            raise StateError(
                f"no block list has been pushed yet ({self.store.state_file} names no "
                "snapshot); nothing to roll back"
            )
        current = self.store.read_snapshot(state.snapshot)
        if current.action == "rollback" and current.restores is not None:
            return current.restores
        earlier = [number for number in self.store.snapshot_numbers() if number < state.snapshot]
        return earlier[-1] if earlier else 0

    def _decide(
        self, wanted: PlannedState, current: Current
    ) -> tuple[State, Snapshot | None] | None:
        """The state and snapshot a commit writes, or None when nothing differs."""
        list_changes = wanted.blocklist != current.pushed
        if wanted.entries == current.state.entries and not list_changes:
            return None
        if wanted.generation != current.state.generation:
            raise ConflictError(
                f"another run changed the block list state since this plan (planned on "
                f"generation {wanted.generation}, {self.store.state_file} is now at "
                f"generation {current.state.generation}); rerun the cycle"
            )

        number = current.last_snapshot + 1 if list_changes else current.state.snapshot
        state = State(current.state.generation + 1, number, wanted.entries)
        if not list_changes:
            return state, None
        created = format_time(utc_now())
        snapshot = Snapshot(
            number,
            created,
            state.generation,
            wanted.entries,
            action=wanted.action,
            restores=wanted.restores,
        )
        return state, snapshot

    def _write(self, state: State, snapshot: Snapshot | None) -> None:
        """The snapshot first, so state.json never names a snapshot that is not on disk."""
        if snapshot is not None:
            self.store.write_snapshot(snapshot)
        self.store.write_state(state)

    def _commit_result(
        self,
        wanted: PlannedState,
        current: Current,
        decision: tuple[State, Snapshot | None] | None,
    ) -> dict[str, Any]:
        state, snapshot = decision if decision is not None else (current.state, None)
        blocklist = wanted.blocklist
        return {
            "changed": decision is not None,
            "action": wanted.action,
            "generation": state.generation,
            "snapshot": state.snapshot,
            "snapshot_file": snapshot and self.store.snapshot_path(snapshot.number),
            "state_file": self.store.state_file,
            "blocklist": blocklist,
            "count": len(blocklist),
            "diff": blocklist_diff(
                current.state.blocklist,
                blocklist,
                state_file=self.store.state_file,
                before=f"generation {current.state.generation}",
                after=f"generation {state.generation}",
            ),
        }


# The allowlist file


class AllowlistFile:
    """The allowlist file: a YAML list of {network, reason, expires} that unblock.yml adds to,
    operators may edit, and the spare role reads. Writing it drops the entries whose expiry has
    passed, so the file holds only what still protects a source and stays short.

    Writes are atomic (temp file, rename) with mode 0600, under the state directory's
    exclusive lock, so an unblock and a cycle that overlap do not lose each other's entries.
    """

    def __init__(self, path: str, store: StateStore) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.store = store

    def update(
        self, *, now: dt.datetime, add: Mapping[str, Any] | None = None, write: bool
    ) -> dict[str, Any]:
        """Prune expired entries and, with `add`, put in (or replace) one entry."""
        with self.store.lock(exclusive=write):
            entries = self.read()
            kept, pruned = self._prune(entries, now=now)
            if add is not None:
                network = str(add["address"])
                kept = [entry for entry in kept if entry["network"] != network]
                kept.append(
                    {"network": network, "reason": add["reason"], "expires": add.get("expires")}
                )
            changed = kept != entries
            if changed and write:
                self._write(kept)

        return {
            "file": self.path,
            "changed": changed,
            "count": len(kept),
            "pruned": pruned,
            "added": None if add is None else kept[-1],
        }

    def read(self) -> list[dict[str, Any]]:
        """The entries, each checked and normalised; a missing or empty file is no entry."""
        import yaml  # the controller's ansible-core brings PyYAML

        try:
            with open(self.path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except FileNotFoundError:
            return []
        except yaml.YAMLError as exc:
            raise StateError(f"allowlist file {self.path} is not YAML: {exc}") from None
        if data is None:
            return []
        if not isinstance(data, list):
            raise StateError(
                f"allowlist file {self.path} must be a list of {{network, reason, expires}}"
            )
        return [self._entry(item, number) for number, item in enumerate(data, start=1)]

    def _entry(self, item: object, number: int) -> dict[str, Any]:
        where = f"allowlist file {self.path}, entry {number}"
        if isinstance(item, str):
            item = {"network": item}
        if not isinstance(item, Mapping) or not item.get("network"):
            raise StateError(f"{where}: each entry needs a network ({_describe(item)})")
        try:
            network = _network_text(parse_network(str(item["network"])))
        except ValueError as exc:
            raise StateError(f"{where}: {exc}") from None
        expires = item.get("expires")
        if expires not in (None, ""):
            if isinstance(expires, dt.date) and not isinstance(expires, dt.datetime):
                expires = dt.datetime(expires.year, expires.month, expires.day)
            expires = format_time(parse_time(expires, what=f"{where}: expires"))
        return {
            "network": network,
            "reason": str(item.get("reason") or "allowlist"),
            "expires": expires or None,
        }

    @staticmethod
    def _prune(
        entries: list[dict[str, Any]], *, now: dt.datetime
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        kept, pruned = [], []
        for entry in entries:
            expired = entry["expires"] and parse_time(entry["expires"], what="expires") <= now
            (pruned if expired else kept).append(entry)
        return kept, pruned

    def _write(self, entries: list[dict[str, Any]]) -> None:
        import yaml

        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
        fd, temp_path = tempfile.mkstemp(dir=directory, prefix=".allowlist.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write("# smtpguard allowlist: {network, reason, expires}; expired entries\n")
                handle.write("# are removed whenever the block list state is written.\n")
                yaml.safe_dump(entries, handle, default_flow_style=False, sort_keys=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp_path, FILE_MODE)
            os.replace(temp_path, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_path)
            raise
