# Copyright: campusnet network operations
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that read the device targets operators give on the command line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible.inventory.manager import split_host_pattern

DOCUMENTATION_HOST_PATTERN_ELEMENTS = """
name: host_pattern_elements
short_description: The elements of an inventory host pattern, split the way Ansible splits it
"""


def host_pattern_elements(pattern: object) -> list[str]:
    """`ips1,ips2:&enforcers` as `['ips1', 'ips2', '&enforcers']`, by Ansible's own rules
    (commas, else colons outside IPv6 addresses and ranges); a list gives its elements' parts.

    The rollback role checks each element on its own, so that one misspelt device in a list
    is named instead of silently left out.
    """
    if isinstance(pattern, str):
        parts = [pattern]
    elif isinstance(pattern, (list, tuple)) and all(isinstance(p, str) for p in pattern):
        parts = list(pattern)
    else:
        raise AnsibleFilterError(
            f"host_pattern_elements expects a host pattern such as 'ips1,ips2', not "
            f"{type(pattern).__name__}"
        )
    return [element for part in parts for element in split_host_pattern(part) if element]


class FilterModule:
    """Target filters of campusnet.smtpguard."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"host_pattern_elements": host_pattern_elements}
