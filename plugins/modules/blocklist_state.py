#!/usr/bin/python
# Copyright: campusnet network operations
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible face of the block list state; the work is done in module_utils/_state.py."""

from __future__ import annotations

DOCUMENTATION = r"""
module: blocklist_state
short_description: Keep the block list state on the controller, with TTL, snapshots and rollback
version_added: 0.1.0
description:
  - Keeps the block list of the SMTP flood cycle in a state directory on the controller
    (C(state.json), C(snapshots/NNNNNN.json), C(state.lock)).
  - O(action=plan) decides the next block list from the sparing module's C(block) list
    without writing anything; O(action=commit) records a plan once the push succeeded.
  - O(action=rollback) and O(action=unblock) return plans of the same shape; commit them the
    same way. O(action=show) summarises the state; O(action=rebuild) restores C(state.json)
    from the newest snapshot.
  - O(action=allowlist) adds O(address) to the allowlist file O(allowlist_file) with
    O(reason) and O(expires). Whenever this module writes the state or that file (a commit
    or O(action=allowlist) with O(allowlist_file)), entries of the file whose expiry has
    passed are removed from it and named in a warning and in RV(allowlist).
  - Every address is validated again with the collection's address helpers; names and other
    text never enter the block list.
options:
  state_dir:
    description:
      - Directory holding the block list state. Created with mode C(0700) by the first
        commit (not in check mode).
    type: path
    required: true
  action:
    description:
      - V(plan) decides the next block list (read-only).
      - V(commit) writes a plan returned by V(plan), V(rollback) or V(unblock).
      - V(rollback) plans a return to the block list of O(snapshot) (read-only).
      - V(unblock) plans the removal of O(address) and returns the allowlist entry
        (read-only).
      - V(show) summarises the state (read-only).
      - V(rebuild) rewrites C(state.json) from the newest snapshot.
      - V(allowlist) writes O(address) into O(allowlist_file) (see O(allowlist_file)).
    type: str
    required: true
    choices: [plan, commit, rollback, unblock, show, rebuild, allowlist]
  candidates:
    description:
      - The C(block) list of the sparing module, for O(action=plan). Each item is a dict
        with at least C(ip), C(rule), C(rules) and C(reason); C(ptr), C(sessions),
        C(qualifying_sessions), C(longest_session), C(open_sessions) and C(risk) are kept as
        evidence when present.
      - An item whose C(ip) is not an IPv4 or IPv6 address fails the task, naming the item.
    type: list
    elements: dict
    default: []
  ttl:
    description:
      - How long a new or renewed entry stays blocked. Seconds, or a number with C(s), C(m),
        C(h) or C(d).
    type: raw
    default: 24h
  max_new:
    description:
      - Most new entries one O(action=plan) adds. When more sources qualify, those with the
        most qualifying sessions, then the highest risk, then the most sessions are kept; the
        others are returned in RV(capped) and named in a warning.
    type: int
    default: 1000
  never_block:
    description:
      - Networks never to block (the gateway's own ranges, partners). Entries inside are
        removed with reason C(never-block); candidates inside are returned in RV(refused).
      - Applies to O(action=plan) and O(action=rollback).
    type: list
    elements: str
    default: []
  spared:
    description:
      - For O(action=plan), the C(spared) list of the sparing step (each with C(ip) and
        C(reason)). A spared source that is on the block list, for example one whose PTR
        could not be checked during a DNS outage, is taken off with reason C(spared).
    type: list
    elements: dict
    default: []
  allowlist:
    description:
      - For O(action=plan), the partner allowlist, as network strings or
        C({network, reason, expires}). Entries inside are taken off at once with reason
        C(allowlist), instead of waiting for their expiry; expired allowlist entries count
        no more.
    type: list
    elements: raw
    default: []
  allowlist_file:
    description:
      - The allowlist file, a YAML list of C({network, reason, expires}) that the spare role
        reads (C(spare_allowlist_file)). Written atomically with mode C(0600) under the
        state's lock.
      - With O(action=commit), expired entries are removed from it after the state is
        written; with O(action=allowlist), O(address) is added (an entry for the same network
        is replaced) and expired entries are removed. Not written in check mode.
    type: path
  now:
    description:
      - ISO 8601 time of the decision. A time without zone is taken as UTC.
      - The playbooks pass the end of the analysis window, which makes replaying the same
        logs idempotent. Defaults to the current time.
    type: str
  plan:
    description:
      - For O(action=commit), the RV(plan) returned by O(action=plan), O(action=rollback) or
        O(action=unblock).
    type: dict
  snapshot:
    description:
      - For O(action=rollback), the snapshot number to return to; V(0) is the empty list in
        force before the first push.
      - Defaults to the list in force before the newest push of a cycle. Snapshots recorded
        by rollbacks are skipped, so repeating a rollback changes nothing.
    type: int
  address:
    description:
      - For O(action=unblock), the address or network to remove from the block list. Every
        entry inside a network is removed.
      - For O(action=allowlist), the address or network to allowlist.
    type: str
  reason:
    description:
      - For O(action=unblock) and O(action=allowlist), why the source is allowed; kept in
        the allowlist entry.
    type: str
  expires:
    description:
      - For O(action=unblock) and O(action=allowlist), when the allowlist entry ends; an ISO
        8601 time or a duration from O(now) such as V(7d). Omit for an entry without end.
    type: str
attributes:
  check_mode:
    support: full
    description: >-
      V(plan), V(rollback), V(unblock) and V(show) never write. In check mode V(commit) and
      V(rebuild) report what they would write and write nothing, not even the state
      directory.
  diff_mode:
    support: full
    description: >-
      The diff lists the block list one address a line, before and after, so it shows exactly
      the entries added and removed. Renewals change no line; they are listed in RV(renewed).
notes:
  - Two runs may overlap; reads take a shared and writes an exclusive C(fcntl) lock on
    C(state.lock). A commit whose plan was made on an older generation fails and asks to
    rerun the cycle, so no decision is silently overwritten.
  - A snapshot is written only when the pushed block list differs from the last snapshot;
    committing a rollback plan therefore records a new snapshot.
  - A rollback restores the entries of the snapshot as they were, including expiry times
    already past; the next O(action=plan) removes those as expired.
  - O(action=rebuild) sets the generation past anything recorded in the snapshot and the
    damaged state, but plans made before the damage should be discarded all the same.
  - Runs on the controller; use it with C(delegate_to=localhost) and C(run_once=true).
author:
  - campusnet network operations
"""

EXAMPLES = r"""
- name: Plan the next block list from the spared candidates
  campusnet.smtpguard.blocklist_state:
    state_dir: "{{ smtpguard_state_dir }}"
    action: plan
    candidates: "{{ spared.block }}"
    ttl: 24h
    never_block: [192.0.2.0/24, "2001:db8:25::/48"]
    now: "{{ analysis.stats.window_end }}"
  delegate_to: localhost
  run_once: true
  register: planned

- name: Record the block list once the push succeeded
  campusnet.smtpguard.blocklist_state:
    state_dir: "{{ smtpguard_state_dir }}"
    action: commit
    plan: "{{ planned.plan }}"
  delegate_to: localhost
  run_once: true

- name: Plan a return to snapshot 12
  campusnet.smtpguard.blocklist_state:
    state_dir: "{{ smtpguard_state_dir }}"
    action: rollback
    snapshot: 12
  delegate_to: localhost
  run_once: true
  register: rolled_back

- name: Plan the unblocking of a partner's relay
  campusnet.smtpguard.blocklist_state:
    state_dir: "{{ smtpguard_state_dir }}"
    action: unblock
    address: 198.51.100.25
    reason: partner relay, ticket 4711
    expires: 30d
  delegate_to: localhost
  run_once: true
  register: unblocked

- name: Restore state.json from the newest snapshot after losing it
  campusnet.smtpguard.blocklist_state:
    state_dir: "{{ smtpguard_state_dir }}"
    action: rebuild
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
blocklist:
  description: The block list, IPv4 before IPv6, numerically. After a plan, the planned list.
  returned: always
  type: list
  elements: str
  sample: [192.0.2.7, 203.0.113.9, "2001:db8::25"]
added:
  description: Entries a plan adds, each with C(ip), C(rule), C(reason) and C(expires).
  returned: action is plan, rollback or unblock
  type: list
  elements: dict
removed:
  description:
    - Entries a plan removes, each with C(ip), C(reason) (V(expired), V(never-block),
      V(unblocked) or V(rollback)) and C(detail) (expiry time, network, operator's reason or
      snapshot).
  returned: action is plan, rollback or unblock
  type: list
  elements: dict
renewed:
  description: Entries already blocked that matched again, with their new C(expires).
  returned: action is plan, rollback or unblock
  type: list
  elements: dict
capped:
  description:
    - New sources left out because of O(max_new), with C(ip), C(rule),
      C(qualifying_sessions), C(risk) and C(sessions).
  returned: action is plan, rollback or unblock
  type: list
  elements: dict
refused:
  description: Candidates (or snapshot entries) inside O(never_block), with the network.
  returned: action is plan, rollback or unblock
  type: list
  elements: dict
counts:
  description: Number of items in RV(blocklist), RV(added), RV(removed), RV(renewed),
    RV(capped) and RV(refused).
  returned: action is plan, rollback or unblock
  type: dict
  sample: {blocklist: 42, added: 3, removed: 1, renewed: 5, capped: 0, refused: 0}
generation:
  description:
    - Generation of the state. For a plan, the generation it is based on; after a commit or
      rebuild, the generation written (or that would be written in check mode).
  returned: always
  type: int
snapshot:
  description:
    - Number of the last pushed snapshot. For a plan, the one it is based on; after a
      commit, the snapshot recorded (or that would be recorded in check mode).
  returned: always
  type: int
plan:
  description:
    - Everything O(action=commit) needs - C(version), C(action), C(based_on_generation),
      C(based_on_snapshot), C(next_snapshot) (the number the block list gets when committed),
      C(now), C(blocklist) and C(entries).
  returned: action is plan, rollback or unblock
  type: dict
rollback_to:
  description: The snapshot a rollback plan returns to.
  returned: action is rollback
  type: int
unblocked:
  description: The allowlist entry for the playbook to add - C(address), C(reason), C(expires).
  returned: action is unblock
  type: dict
  sample: {address: 198.51.100.25, reason: partner relay, expires: "2024-06-01T10:30:00Z"}
state_file:
  description: Path of C(state.json).
  returned: always
  type: str
snapshot_file:
  description: Snapshot file a commit wrote (or would write in check mode), else null.
  returned: action is commit
  type: str
action:
  description: The action of the committed plan.
  returned: action is commit
  type: str
count:
  description: Number of entries in the block list.
  returned: action is commit, show or rebuild
  type: int
snapshots:
  description: Numbers of the snapshots on disk, oldest first.
  returned: action is show
  type: list
  elements: int
exists:
  description: Whether C(state.json) exists.
  returned: action is show
  type: bool
next_expiry:
  description: Earliest expiry among the entries, or null.
  returned: action is show
  type: str
allowlist:
  description:
    - What happened to O(allowlist_file) - C(file), C(changed), C(count) (entries kept),
      C(pruned) (the expired entries removed, or that would be in check mode) and C(added).
  returned: action is allowlist, or commit with allowlist_file
  type: dict
  sample:
    file: /var/lib/smtpguard/state/allowlist.yml
    changed: true
    count: 3
    pruned: [{network: 192.0.2.0/24, reason: conference, expires: "2026-11-30T00:00:00Z"}]
    added: null
rebuilt_from:
  description: The snapshot file C(state.json) was rebuilt from.
  returned: action is rebuild
  type: str
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.campusnet.smtpguard.plugins.module_utils._state import (
    BlockListState,
    StateError,
    parse_time,
    utc_now,
)

ARGUMENT_SPEC: dict[str, Any] = {
    "state_dir": {"type": "path", "required": True},
    "action": {
        "type": "str",
        "required": True,
        "choices": ["plan", "commit", "rollback", "unblock", "show", "rebuild", "allowlist"],
    },
    "candidates": {"type": "list", "elements": "dict", "default": []},
    "ttl": {"type": "raw", "default": "24h"},
    "max_new": {"type": "int", "default": 1000},
    "never_block": {"type": "list", "elements": "str", "default": []},
    "spared": {"type": "list", "elements": "dict", "default": []},
    "allowlist": {"type": "list", "elements": "raw", "default": []},
    "allowlist_file": {"type": "path"},
    "now": {"type": "str"},
    "plan": {"type": "dict"},
    "snapshot": {"type": "int"},
    "address": {"type": "str"},
    "reason": {"type": "str"},
    "expires": {"type": "str"},
}

REQUIRED_IF = [
    ("action", "commit", ("plan",)),
    ("action", "unblock", ("address", "reason")),
    ("action", "allowlist", ("allowlist_file", "address", "reason")),
]


def run(params: dict[str, Any], *, write: bool, warn: Any) -> dict[str, Any]:
    """Carry out one action; `write` is false in check mode."""
    blocklist = BlockListState(params["state_dir"])
    action = params["action"]

    if action == "show":
        return blocklist.show()
    if action == "rebuild":
        return blocklist.rebuild(write=write)

    now = parse_time(params["now"], what="now") if params["now"] else utc_now()
    if action in ("commit", "allowlist"):
        result = blocklist.commit(params["plan"], write=write) if action == "commit" else {}
        if params["allowlist_file"]:
            allowed = blocklist.allowlist(
                params["allowlist_file"],
                now=now,
                write=write,
                **(
                    {k: params[k] for k in ("address", "reason", "expires")}
                    if action == "allowlist"
                    else {}
                ),
            )
            _report_pruned(allowed, warn=warn)
            result["allowlist"] = allowed
            result["changed"] = result.get("changed", False) or allowed["changed"]
        return result
    if action == "plan":
        plan = blocklist.plan(
            candidates=params["candidates"],
            ttl=params["ttl"],
            max_new=params["max_new"],
            never_block=params["never_block"],
            spared_sources=params.get("spared"),
            allowlist=params.get("allowlist"),
            now=now,
        )
    elif action == "rollback":
        plan = blocklist.rollback(
            snapshot=params["snapshot"], never_block=params["never_block"], now=now
        )
    else:
        plan = blocklist.unblock(
            address=params["address"], reason=params["reason"], expires=params["expires"], now=now
        )

    for warning in plan.warnings:
        warn(warning)
    return plan.result(state_file=blocklist.store.state_file)


def _report_pruned(allowed: dict[str, Any], *, warn: Any) -> None:
    if allowed["pruned"]:
        names = ", ".join(
            f"{entry['network']} ({entry['reason']}, expired {entry['expires']})"
            for entry in allowed["pruned"][:10]
        )
        warn(
            f"{len(allowed['pruned'])} expired allowlist entries removed from "
            f"{allowed['file']}: {names}; these sources may be blocked again"
        )


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC, required_if=REQUIRED_IF, supports_check_mode=True
    )
    write = not module.check_mode

    try:
        result = run(module.params, write=write, warn=module.warn)
    except StateError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(
            msg=f"cannot use state_dir {module.params['state_dir']!r}: {exc.strerror} "
            f"({exc.filename}); it must be a directory the controller account can write"
        )

    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
