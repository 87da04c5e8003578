#!/usr/bin/python
# Copyright: campusnet network operations
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module campusnet.smtpguard.spare_candidates."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: spare_candidates
short_description: Spare domestic, partner and internal senders among flooding candidates
version_added: 0.1.0
description:
  - Splits the candidates that M(campusnet.smtpguard.flood_analyze) selected into a block list
    and a list of spared sources, with one readable reason for each decision.
  - Checks run in this order and the first that spares a source decides
    (1) O(never_block) networks, (2) O(internal_networks), (3) the O(allowlist);
    none of these needs DNS.
  - (4) The source's PTR name, only when it is forward-confirmed (the name resolves back to the
    same address through A or AAAA) and ends, on a label boundary, in one of O(spare_domains)
    or O(domestic_tlds).
  - Every other source goes on the block list, including sources with no PTR record, with a
    PTR name that does not resolve back, or whose DNS lookups timed out or failed.
  - The module only reads DNS; it changes nothing and runs the same in check mode.
author:
  - campusnet network operations
requirements:
  - dnspython (tested with 2.9) on the host that runs the module
options:
  candidates:
    description:
      - The sources to judge, as returned in C(candidates) by
        M(campusnet.smtpguard.flood_analyze).
      - Each is a dict with at least C(ip); C(rule), C(qualifying_sessions), C(longest_session)
        and C(risk) are used in the reason of a block, and every key is passed through to the
        result. An C(ip) that is not an IP address fails the module.
    type: list
    elements: dict
    required: true
  nameservers:
    description:
      - Addresses of the DNS servers to ask.
      - When empty, the host's resolver configuration (C(/etc/resolv.conf)) is used.
    type: list
    elements: str
    default: []
  port:
    description: UDP and TCP port of the O(nameservers).
    type: int
    default: 53
  timeout:
    description:
      - Seconds to wait for one answer from one nameserver. A question gets one attempt per
        nameserver; when all time out, the source stays on the block list.
    type: float
    default: 2
  concurrency:
    description: Most DNS questions in flight at the same time.
    type: int
    default: 50
  ptr_lookup:
    description:
      - Look up PTR names at all. When V(false), only networks and the allowlist spare a
        source and every entry has C(ptr_status=skipped).
    type: bool
    default: true
  domestic_tlds:
    description:
      - Top-level domains of domestic senders; a forward-confirmed name under one of them is
        spared. Matching is by whole labels, case-insensitive; a leading or trailing dot is
        ignored.
    type: list
    elements: str
    default: [jp]
  spare_domains:
    description:
      - Domains of partners (universities, publishers) whose forward-confirmed senders are
        spared. V(example.ac.jp) matches C(mail.example.ac.jp) but not C(badexample.ac.jp).
    type: list
    elements: str
    default: []
  allowlist:
    description:
      - Networks that are always spared, each a network string (V(192.0.2.0/24)) or a dict
        with C(network), an optional C(reason) and an optional C(expires).
      - C(expires) is a date (V(2025-03-31), valid to the end of that day, local time) or an
        ISO 8601 time. An expired entry is ignored with a warning.
      - When several entries contain a source, the most specific one gives the reason.
    type: list
    elements: raw
    default: []
  never_block:
    description:
      - Networks that must never be blocked whatever the analysis says. The default holds
        loopback, "this network", link-local and multicast ranges.
      - Sites add their own campus, DNS and upstream relay networks here; setting this option
        replaces the default, so repeat the default entries you want to keep.
    type: list
    elements: str
    default: [127.0.0.0/8, "::1/128", 0.0.0.0/8, 169.254.0.0/16, "fe80::/10", 224.0.0.0/4,
              "ff00::/8"]
  internal_networks:
    description:
      - Campus networks. Their sources are never blocked and the reason says internal.
    type: list
    elements: str
    default: []
  dns_cache_path:
    description:
      - Keep DNS answers in this file (JSON, mode 0600, written atomically) for later runs,
        each as long as its TTL says (at most a day; a negative answer as long as its zone's
        SOA says, at most an hour). Timeouts and server failures are never kept.
      - Check mode reads the file but does not write it. Without it, answers are kept for
        this run only.
    type: path
attributes:
  check_mode:
    support: full
    description: The module only reads DNS; check mode runs the same lookups.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to compare.
  platform:
    platforms: posix
    description: Runs wherever Python and dnspython run; usually the controller.
notes:
  - Only a forward-confirmed name spares a source. Anyone can publish any PTR name for their
    own addresses; the forward check proves that the owner of the domain agrees.
  - At most four PTR names of one source are checked forward.
  - A DNS timeout or server failure never spares; the module warns and counts it in
    RV(stats.ptr.error) and RV(stats.timeouts).
  - Answers are cached for this run, and with O(dns_cache_path) for later runs by their TTLs.
  - PTR names appear only in C(ptr) and C(reason), as escaped DNS text with control characters
    removed; they never reach a device template.
  - A candidate's C(reason) names the rule's minimum session time only when the candidate
    carries C(min_duration); otherwise it names the longest session.
seealso:
  - module: campusnet.smtpguard.flood_analyze
"""

EXAMPLES = r"""
- name: Spare domestic and partner senders among the candidates
  campusnet.smtpguard.spare_candidates:
    candidates: "{{ analysis.candidates }}"
    nameservers: [192.0.2.53, 192.0.2.54]
    timeout: 1.5
    domestic_tlds: [jp]
    spare_domains: [partner-university.ac.uk, publisher.example]
    internal_networks: [198.51.100.0/24, "2001:db8:100::/48"]
    allowlist:
      - network: 203.0.113.0/28
        reason: partner university relay
        expires: "2026-03-31"
      - 192.0.2.25
  register: spare

- name: Show the sources that stay off the block list
  ansible.builtin.debug:
    msg: "{{ spare.spared | map(attribute='reason') | list }}"
"""

RETURN = r"""
block:
  description:
    - Candidates to block, in input order; each is the candidate dict plus C(ptr),
      C(ptr_status) and C(reason). C(ip) is normalised.
  returned: always
  type: list
  elements: dict
  sample:
    - ip: 198.51.100.7
      rule: cond1
      rules: [cond1]
      sessions: 50
      qualifying_sessions: 42
      longest_session: 40
      open_sessions: 1
      risk: 96.0
      ptr: host7.dynamic.example.net
      ptr_status: confirmed
      reason: >-
        cond1: 42 qualifying sessions (longest 40 s), risk 96%; PTR host7.dynamic.example.net
        is forward-confirmed but neither domestic nor spared
  contains:
    ptr:
      description: The PTR name (escaped DNS text), or null when there is none or none was asked.
      type: str
    ptr_status:
      description: >-
        V(confirmed), V(unconfirmed) (the name does not resolve back), V(none) (no PTR record),
        V(error) (timeout or server failure), or V(skipped) (not looked up).
      type: str
    reason:
      description: One sentence saying why the source is blocked or spared.
      type: str
spared:
  description:
    - Candidates kept off the block list, in the same shape as RV(block).
  returned: always
  type: list
  elements: dict
  sample:
    - ip: 203.0.113.9
      rule: cond1
      ptr: mail.example.ac.jp
      ptr_status: confirmed
      reason: "domestic sender: mail.example.ac.jp (forward-confirmed, .jp)"
    - ip: 192.0.2.10
      rule: cond3
      ptr: null
      ptr_status: skipped
      reason: "allowlist 192.0.2.0/24: partner university"
stats:
  description: Counts of this run.
  returned: always
  type: dict
  sample:
    candidates: 3
    block: 1
    spared: 2
    spared_by: {never_block: 0, internal: 0, allowlist: 1, spare_domain: 0, domestic: 1}
    ptr: {confirmed: 2, unconfirmed: 0, none: 0, error: 0, skipped: 1}
    lookups: 4
    cache_hits: 0
    timeouts: 0
    failures: 0
    seconds: 0.012
  contains:
    spared_by:
      description: Spared sources per check that spared them.
      type: dict
    ptr:
      description: Sources per C(ptr_status).
      type: dict
    lookups:
      description: DNS questions sent (each asked once a run).
      type: int
    timeouts:
      description: DNS questions that timed out.
      type: int
    failures:
      description: DNS questions that failed otherwise (SERVFAIL, refused).
      type: int
    seconds:
      description: Time the module took.
      type: float
"""

import traceback
from datetime import datetime

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from ansible_collections.campusnet.smtpguard.plugins.module_utils._spare import (
        SpareError,
        read_candidates,
        read_settings,
        spare_candidates,
    )
except ModuleNotFoundError as exc:
    if not (exc.name or "").startswith("dns"):
        raise
    DNSPYTHON_ERROR: str | None = traceback.format_exc()
else:
    DNSPYTHON_ERROR = None

NEVER_BLOCK = [
    "127.0.0.0/8",
    "::1/128",
    "0.0.0.0/8",
    "169.254.0.0/16",
    "fe80::/10",
    "224.0.0.0/4",
    "ff00::/8",
]

ARGUMENT_SPEC = dict(
    candidates=dict(type="list", elements="dict", required=True),
    nameservers=dict(type="list", elements="str", default=[]),
    port=dict(type="int", default=53),
    timeout=dict(type="float", default=2.0),
    concurrency=dict(type="int", default=50),
    ptr_lookup=dict(type="bool", default=True),
    domestic_tlds=dict(type="list", elements="str", default=["jp"]),
    spare_domains=dict(type="list", elements="str", default=[]),
    allowlist=dict(type="list", elements="raw", default=[]),
    never_block=dict(type="list", elements="str", default=NEVER_BLOCK),
    internal_networks=dict(type="list", elements="str", default=[]),
    dns_cache_path=dict(type="path"),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if DNSPYTHON_ERROR is not None:
        module.fail_json(msg=missing_required_lib("dnspython"), exception=DNSPYTHON_ERROR)

    now = datetime.now().astimezone()
    try:
        settings = read_settings(module.params, now=now, warn=module.warn,
                                 check_mode=module.check_mode)  # fmt: skip
        candidates = read_candidates(module.params["candidates"])
        result = spare_candidates(candidates, settings=settings, warn=module.warn)
    except SpareError as exc:
        module.fail_json(msg=str(exc))

    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
