#!/usr/bin/python
# Copyright: campusnet network operations
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module campusnet.smtpguard.log_increment."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: log_increment
short_description: Fetch only the new part of a gateway's logs, following rotation
version_added: 0.2.0
description:
  - The three steps of an incremental fetch; the role M(campusnet.smtpguard.fetch_logs) with
    C(fetch_logs_method=incremental) chains them.
  - A file is known by the hash of its first line, so a copy follows its file through renaming
    and compression by the rotation, also when the rotation happened between two cycles.
  - V(known) (controller) returns the offsets reached per file from the record in O(dest).
  - V(read) (gateway) writes, for every file matching O(paths), the complete lines after the
    offset in O(known_offsets) into a gzip chunk under O(spool), and returns the list.
  - V(apply) (controller) writes each chunk fetched into O(chunks) at its offset into the copy
    in O(dest), renames copies as their files were renamed, removes copies of files gone from
    the gateway, and records the offsets. Writing at the recorded offset (not appending) makes
    a repeated or interrupted cycle safe - no line is lost or counted twice.
author:
  - campusnet network operations
attributes:
  check_mode:
    support: full
    details: The module changes no managed state; the copies are the controller's cache.
options:
  action:
    description: Which step to run.
    type: str
    choices: [known, read, apply]
    required: true
  paths:
    description: Files or glob patterns on the gateway (V(read)).
    type: list
    elements: str
  known_offsets:
    description: Identity to offset, as V(known) returned it (V(read)).
    type: dict
    default: {}
  spool:
    description: Directory on the gateway for the chunks (V(read)).
    type: path
  dest:
    description: Directory on the controller holding the copies and their record.
    type: path
  increments:
    description: The C(increments) that V(read) returned (V(apply)).
    type: list
    elements: dict
  chunks:
    description: Directory on the controller where the chunks were fetched to (V(apply)).
    type: path
notes:
  - A file must end in a newline to be read up to its end; a partial last line waits for the
    next cycle.
  - Logs truncated in place (copytruncate) get a new first line and are fetched again whole.
"""

EXAMPLES = r"""
- name: Read the offsets reached so far
  campusnet.smtpguard.log_increment:
    action: known
    dest: /var/lib/smtpguard/logs/gw1
  delegate_to: localhost
  register: known

- name: Cut the new lines on the gateway
  campusnet.smtpguard.log_increment:
    action: read
    paths: [/var/log/mail.log*]
    known_offsets: "{{ known.offsets }}"
    spool: /var/tmp/smtpguard-fetch
  register: read
"""

RETURN = r"""
offsets:
  description: Identity to offset (V(known)).
  returned: action is known
  type: dict
increments:
  description:
    - One entry per file - C(name), C(identity), C(offset), C(length), C(chunk), C(compressed).
  returned: action is read
  type: list
  elements: dict
paths:
  description: The copies on the controller, for the analysis (V(apply)).
  returned: action is apply
  type: list
  elements: str
fetched_bytes:
  description: Bytes of new lines written into the copies (V(apply)).
  returned: action is apply
  type: int
renamed:
  description: Copies renamed after their files (V(apply)).
  returned: action is apply
  type: list
  elements: str
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.campusnet.smtpguard.plugins.module_utils._increment import (
    IncrementError,
    apply_increments,
    known_offsets,
    read_increments,
)

ARGUMENT_SPEC = {
    "action": {"type": "str", "choices": ["known", "read", "apply"], "required": True},
    "paths": {"type": "list", "elements": "str"},
    "known_offsets": {"type": "dict", "default": {}},
    "spool": {"type": "path"},
    "dest": {"type": "path"},
    "increments": {"type": "list", "elements": "dict"},
    "chunks": {"type": "path"},
}
REQUIRED_IF = [
    ("action", "known", ["dest"]),
    ("action", "read", ["paths", "spool"]),
    ("action", "apply", ["dest", "increments", "chunks"]),
]


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC, required_if=REQUIRED_IF, supports_check_mode=True
    )
    params = module.params
    try:
        if params["action"] == "known":
            result = {"offsets": known_offsets(Path(params["dest"]))}
        elif params["action"] == "read":
            known = {key: int(value) for key, value in params["known_offsets"].items()}
            increments, warnings = read_increments(
                params["paths"], known, spool=Path(params["spool"])
            )
            for warning in warnings:
                module.warn(warning)
            result = {"increments": [increment.as_dict() for increment in increments]}
        else:
            result = apply_increments(
                Path(params["dest"]), params["increments"], chunks=Path(params["chunks"])
            )
    except (IncrementError, OSError) as exc:
        module.fail_json(msg=str(exc))

    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
