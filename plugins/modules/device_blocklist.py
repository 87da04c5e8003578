#!/usr/bin/python
# Copyright: campusnet network operations
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible face of the netmiko push; the work is done in module_utils/_device_push.py."""

from __future__ import annotations

DOCUMENTATION = r"""
module: device_blocklist
short_description: Push a rendered block list to a Cisco IOS, Cisco ASA or Junos device over netmiko
version_added: 0.2.0
description:
  - Takes the whole block list as the device's configuration text, rendered by the
    C(push_blocklist) role from the platform's template (C(ios.j2), C(asa.j2), C(junos.j2)),
    reads what the device holds now, and sends only the difference - additions first, in
    chunks of O(chunk_size) commands.
  - "After the push it reads the list back. When a line is rejected (the platform's error
    patterns, for example C(% Invalid input detected) on IOS, C(ERROR: %) on ASA,
    C(syntax error) or C(error: configuration check-out failed) on Junos) or the read-back
    differs, the device is put back to what it held before and the task fails with the
    device's own message."
  - On Junos the difference goes into the candidate configuration, then C(commit check),
    C(commit confirmed) O(confirm_minutes), a read-back, and a plain C(commit) that confirms.
    A failed check discards the candidate; a read-back that differs rolls back to the
    previous commit; a controller lost in between leaves the device to roll back by itself.
  - Every line of O(config) must be a container (object group, prefix list) or a member
    whose address passes Python's C(ipaddress) and the rules of the
    C(campusnet.smtpguard.blocklist_networks) filter - no network wider than a /16 (IPv4) or
    a /32 (IPv6), none touching a loopback, link-local, multicast, reserved or C(0.0.0.0/8)
    range, no IPv4-mapped IPv6 address; any other text fails the task before a connection
    is made, also when O(config) was not rendered by the role's templates.
options:
  platform:
    description: The device's platform.
    type: str
    required: true
    choices: [ios, asa, junos]
  config:
    description:
      - The device's configuration for the whole block list, as the platform's template of
        the C(push_blocklist) role renders it. Comment lines (C(!) for Cisco, C(#) for Junos)
        are ignored.
    type: str
    required: true
  host:
    description: Address or name of the device, as the SSH config or the network knows it.
    type: str
    required: true
  port:
    description: SSH port of the device.
    type: int
    default: 22
  username:
    description: Login name.
    type: str
    required: true
  password:
    description: Login password; keep it in Ansible Vault.
    type: str
  secret:
    description: Enable secret (Cisco), when the login does not land in privileged mode.
    type: str
  key_file:
    description: Private key for the login.
    type: path
  passphrase:
    description: Passphrase of O(key_file).
    type: str
  ssh_config_file:
    description:
      - OpenSSH client configuration to read, for example one holding a C(ProxyJump) through
        the bastion. The device's C(HostName) and C(Port) come from its entry (O(port) other
        than 22 wins over C(Port)).
      - A C(ProxyJump) (one hop or several, comma-separated) runs the controller's OpenSSH
        client as C(ssh -F ssh_config_file -o BatchMode=yes -W host:port bastion), so the
        bastion's user, key and known hosts come from the same file; a C(ProxyCommand) runs
        as written. When the bastion refuses or is down, the task fails at once with what
        ssh said.
      - A hop may name its user and port, C(user@bastion:2222) or
        C(ssh://user@bastion:2222) (an IPv6 bastion in brackets before a port); the port of
        the last hop is passed to ssh as C(-p), the others are OpenSSH's own C(-J).
    type: path
  host_key_checking:
    description:
      - Refuse devices whose host key is not in the system's or O(known_hosts)' known hosts.
      - Turn off only for lab devices.
    type: bool
    default: true
  known_hosts:
    description: A known_hosts file to check the device's host key against.
    type: path
  timeout:
    description: Seconds to wait for the connection and the login.
    type: int
    default: 30
  read_timeout:
    description: Seconds to wait for the output of one command or chunk.
    type: int
    default: 120
  chunk_size:
    description:
      - Commands sent in one go. Defaults per platform (200 for IOS and ASA, 500 for Junos).
    type: int
  confirm_minutes:
    description: Junos only. Minutes of C(commit confirmed) before the device rolls back by itself.
    type: int
    default: 5
  session_log:
    description:
      - Append the session transcript to this file (mode 0600). netmiko replaces the password
        and the enable secret in it by C(********).
    type: path
attributes:
  check_mode:
    support: full
    description: >-
      Reads the device and returns the difference without sending any configuration command;
      on Junos it loads the difference, runs C(commit check) and discards the candidate.
  diff_mode:
    support: full
    description: The block list members on the device before and after, one a line.
notes:
  - Tested against the fake IOS, ASA and Junos devices of the collection's tests, which follow
    the platforms' command syntax and error messages; not yet against real devices.
  - The ACL, access rule or firewall filter that uses the group or prefix list is the
    operator's; this module only keeps the list's members.
  - On IOS, IPv6 entries go to a separate C(object-group v6-network).
  - On the ASA, a check run logs in without setting C(terminal width) (a configuration-mode
    command there) and sends only C(show) commands, so it never enters configuration mode.
    A real push lets netmiko set C(terminal width 511) as usual.
  - Tested through a real OpenSSH bastion with C(ProxyJump), one hop and two.
  - An IOS or ASA push is not one transaction; between the first and the last chunk the
    device holds part of the new list. Additions go first so nothing blocked is let through.
requirements:
  - netmiko >= 4.8
  - the OpenSSH client (C(ssh)) on the controller, for a C(ProxyJump) in O(ssh_config_file)
author:
  - campusnet network operations
"""

EXAMPLES = r"""
- name: Push the block list to the border router
  campusnet.smtpguard.device_blocklist:
    platform: ios
    config: "{{ lookup('ansible.builtin.template', 'ios.j2') }}"
    host: "{{ ansible_host | default(inventory_hostname) }}"
    username: "{{ vault_device_username }}"
    password: "{{ vault_device_password }}"
    ssh_config_file: /etc/smtpguard/ssh_config
  delegate_to: localhost
"""

RETURN = r"""
added:
  description: Networks added (or, in check mode, that would be added).
  returned: always
  type: list
  elements: str
  sample: [192.0.2.7, 198.51.100.0/24]
removed:
  description: Networks removed (or that would be removed).
  returned: always
  type: list
  elements: str
commands:
  description: The commands sent (or that would be sent), chunk by chunk.
  returned: always
  type: list
  elements: str
chunks:
  description: Number of chunks.
  returned: always
  type: int
count:
  description: Members on the device before and after (C(before), C(after)).
  returned: always
  type: dict
messages:
  description: What the device said that matters, such as C(commit check succeeded).
  returned: always
  type: list
  elements: str
"""

import os
import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.campusnet.smtpguard.plugins.module_utils._bastion import (
    login_failure,
    resolve,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._device_push import (
    DevicePush,
    connection_settings,
    verify_echo,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._devices import (
    DeviceError,
    parse_config,
    whole_number,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._devices import (
    platform as lookup_platform,
)

try:
    from netmiko import ConnectHandler
    from netmiko.exceptions import NetmikoAuthenticationException, NetmikoTimeoutException
except ImportError:
    NETMIKO_ERROR: str | None = traceback.format_exc()
else:
    NETMIKO_ERROR = None

ARGUMENT_SPEC: dict[str, Any] = {
    "platform": {"type": "str", "required": True, "choices": ["ios", "asa", "junos"]},
    "config": {"type": "str", "required": True},
    "host": {"type": "str", "required": True},
    "port": {"type": "int", "default": 22},
    "username": {"type": "str", "required": True},
    "password": {"type": "str", "no_log": True},
    "secret": {"type": "str", "no_log": True},
    "key_file": {"type": "path"},
    "passphrase": {"type": "str", "no_log": True},
    "ssh_config_file": {"type": "path"},
    "host_key_checking": {"type": "bool", "default": True},
    "known_hosts": {"type": "path"},
    "timeout": {"type": "int", "default": 30},
    "read_timeout": {"type": "int", "default": 120},
    "chunk_size": {"type": "int"},
    "confirm_minutes": {"type": "int", "default": 5},
    "session_log": {"type": "path"},
}


def run(params: dict[str, Any], *, check: bool) -> dict[str, Any]:
    """Connect, push (or, with `check`, only compare) and disconnect."""
    platform = lookup_platform(params["platform"])
    for name in ("port", "timeout", "read_timeout", "confirm_minutes", "chunk_size"):
        if params[name] is not None:
            params[name] = whole_number(params[name], name=name, minimum=1)
    parse_config(params["config"], platform, strict=True)
    if params["session_log"]:
        _private_file(params["session_log"])

    route = resolve(
        params["host"],
        port=params["port"],
        ssh_config_file=params["ssh_config_file"],
        timeout=params["timeout"],
    )
    hop = route.open()
    try:
        settings = connection_settings(params, platform, route=route, sock=hop, check=check)
        try:
            connection = ConnectHandler(**settings)
        except (
            NetmikoAuthenticationException,
            NetmikoTimeoutException,
            OSError,
            ValueError,
        ) as exc:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            raise DeviceError(
                login_failure(route, hop, lines[0] if lines else type(exc).__name__)
            ) from None
        verify_echo(connection, settings)

        try:
            push = DevicePush(
                connection,
                platform,
                host=params["host"],
                chunk_size=params["chunk_size"],
                confirm_minutes=params["confirm_minutes"],
                read_timeout=params["read_timeout"],
            )
            return push.run(params["config"], check=check).to_dict(platform)
        finally:
            connection.disconnect()
    finally:
        if hop is not None:
            hop.close()


def _private_file(path: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(descriptor)
    os.chmod(path, 0o600)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if NETMIKO_ERROR is not None:
        module.fail_json(msg=missing_required_lib("netmiko"), exception=NETMIKO_ERROR)

    try:
        result = run(module.params, check=module.check_mode)
    except DeviceError as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # a session that died outside a push step: name it, no traceback
        module.fail_json(msg=f"{module.params.get('host')}: {type(exc).__name__}: {exc}")

    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
