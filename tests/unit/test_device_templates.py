"""Device templates (IOS, ASA, Junos, Postfix): exact text for small and large lists, and no
hostile string from logs or DNS ever reaching a rendered configuration or a command."""

from __future__ import annotations

import ipaddress

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.campusnet.smtpguard.plugins.module_utils._devices import (
    PLATFORMS,
    DeviceConfig,
    DeviceError,
    compute_delta,
    delta_chunks,
    parse_config,
)
from support.templates import render

SMALL = ["203.0.113.9", "2001:DB8::25", "198.51.100.0/24", "192.0.2.7", "2001:db8:1::/48"]


EXPECTED = {
    "ios.j2": (
        "! smtpguard block list: 5 entries, generation 7\n"
        "object-group network SMTPGUARD\n"
        " host 192.0.2.7\n"
        " 198.51.100.0 255.255.255.0\n"
        " host 203.0.113.9\n"
        "object-group v6-network SMTPGUARD-V6\n"
        " host 2001:db8::25\n"
        " 2001:db8:1::/48\n"
    ),
    "asa.j2": (
        "! smtpguard block list: 5 entries, generation 7\n"
        "object-group network SMTPGUARD\n"
        " network-object host 192.0.2.7\n"
        " network-object 198.51.100.0 255.255.255.0\n"
        " network-object host 203.0.113.9\n"
        " network-object host 2001:db8::25\n"
        " network-object 2001:db8:1::/48\n"
    ),
    "junos.j2": (
        "# smtpguard block list: 5 entries, generation 7\n"
        "set policy-options prefix-list SMTPGUARD\n"
        "set policy-options prefix-list SMTPGUARD 192.0.2.7/32\n"
        "set policy-options prefix-list SMTPGUARD 198.51.100.0/24\n"
        "set policy-options prefix-list SMTPGUARD 203.0.113.9/32\n"
        "set policy-options prefix-list SMTPGUARD 2001:db8::25/128\n"
        "set policy-options prefix-list SMTPGUARD 2001:db8:1::/48\n"
    ),
    "postfix_cidr.j2": (
        "# smtpguard block list: 5 entries, generation 7\n"
        "192.0.2.7/32\tREJECT\n"
        "198.51.100.0/24\tREJECT\n"
        "203.0.113.9/32\tREJECT\n"
        "2001:db8::25/128\tREJECT\n"
        "2001:db8:1::/48\tREJECT\n"
    ),
}

EMPTY = {
    "ios.j2": "object-group network SMTPGUARD\nobject-group v6-network SMTPGUARD-V6\n",
    "asa.j2": "object-group network SMTPGUARD\n",
    "junos.j2": "set policy-options prefix-list SMTPGUARD\n",
    "postfix_cidr.j2": "",
}


@pytest.mark.parametrize("template", sorted(EXPECTED))
def test_small_list_renders_exactly(template: str) -> None:
    assert render(template, SMALL) == EXPECTED[template]


@pytest.mark.parametrize("template", sorted(EMPTY))
def test_empty_list_keeps_the_container(template: str) -> None:
    assert render(template, [], push_blocklist_header=False) == EMPTY[template]


def test_names_and_postfix_action_come_from_the_variables() -> None:
    assert render(
        "ios.j2",
        ["192.0.2.7"],
        push_blocklist_header=False,
        push_blocklist_object_group="MAIL-BLOCK",
        push_blocklist_object_group_v6="MAIL-BLOCK6",
    ) == ("object-group network MAIL-BLOCK\n host 192.0.2.7\nobject-group v6-network MAIL-BLOCK6\n")
    assert (
        render(
            "postfix_cidr.j2",
            ["192.0.2.7"],
            push_blocklist_header=False,
            push_blocklist_postfix_action="reject",
        )
        == "192.0.2.7/32\treject\n"
    )


def _many(count: int) -> list[str]:
    first = int(ipaddress.IPv4Address("10.0.0.0"))
    v4 = [str(ipaddress.IPv4Address(first + 2 * n)) for n in range(count // 2)]
    v6 = [f"2001:db8::{n:x}:1" for n in range(count - count // 2)]
    return v6 + v4


# One line an entry, and the line each platform writes for the first IPv4 and IPv6 entry.
LARGE = {
    "ios.j2": (" host ", " host 10.0.0.0", " host 2001:db8::1"),
    "asa.j2": (
        " network-object host ",
        " network-object host 10.0.0.0",
        " network-object host 2001:db8::1",
    ),
    "junos.j2": (
        "set policy-options prefix-list SMTPGUARD ",
        "set policy-options prefix-list SMTPGUARD 10.0.0.0/32",
        "set policy-options prefix-list SMTPGUARD 2001:db8::1/128",
    ),
    "postfix_cidr.j2": ("", "10.0.0.0/32\tREJECT", "2001:db8::1/128\tREJECT"),
}


@pytest.mark.parametrize("template", sorted(LARGE))
def test_large_list_has_one_line_an_entry_in_order(template: str) -> None:
    prefix, first_v4, first_v6 = LARGE[template]
    lines = render(template, _many(10_000), push_blocklist_header=False).splitlines()
    entries = [
        line for line in lines if line.startswith(prefix) and line[len(prefix) :][:1].isdigit()
    ]

    assert len(entries) == 10_000
    assert entries[0] == first_v4
    assert entries[5000] == first_v6


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_large_rendered_list_parses_back_to_the_same_networks(platform: str) -> None:
    entries = _many(4_000)
    parsed = parse_config(render(f"{platform}.j2", entries), PLATFORMS[platform], strict=True)

    found = {network for members in parsed.containers.values() for network in members}
    assert found == {ipaddress.ip_network(entry) for entry in entries}


# Hostile input: from logs (HELO, PTR names) and DNS; CLI keywords; Jinja syntax.

HOSTILE = [
    "mail.example.org\nend",
    "192.0.2.1\nno object-group network SMTPGUARD",
    "192.0.2.1; delete policy-options",
    "host-203-0-113-9.dyn.example.net",
    "9.113.0.203.in-addr.arpa",
    "no",
    "exit",
    "end",
    "quit",
    "commit",
    "{{ 7*7 }}",
    "{% raw %}x{% endraw %}",
    "192.0.2.1 255.255.255.0",
    "192.0.2.1\r",
    " 192.0.2.1",
    "192.0.2.0/24\n permit ip any any",
    "2001:db8::1%eth0",
    "REJECT",
    "",
    None,
    {"ip": "192.0.2.1"},
]


@pytest.mark.parametrize("template", sorted(EXPECTED))
@pytest.mark.parametrize("hostile", HOSTILE, ids=repr)
def test_templates_refuse_hostile_entries(template: str, hostile: object) -> None:
    with pytest.raises(AnsibleFilterError):
        render(template, ["192.0.2.7", hostile])


HOSTILE_LINES = [
    "end",
    "exit",
    " no host 192.0.2.7",
    "no object-group network SMTPGUARD",
    " description {{ 7*7 }}",
    " host mail.example.org",
    " host 192.0.2.7; reload",
    " 192.0.2.7 255.255.0.255",
    " 192.0.2.7 255.255.255.0",
    "set policy-options prefix-list SMTPGUARD 192.0.2.0/24; delete",
    "set policy-options prefix-list SMTPGUARD 192.0.2.7/24",
    "delete policy-options prefix-list SMTPGUARD",
    "set system root-authentication plain-text-password",
    "object-group network SMTP GUARD",
    "object-group network {{ name }}",
]


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
@pytest.mark.parametrize("line", HOSTILE_LINES, ids=repr)
def test_module_refuses_a_rendered_text_with_any_foreign_line(platform: str, line: str) -> None:
    """A template edited carelessly still cannot carry text to the device."""
    rendered = render(f"{platform}.j2", SMALL, push_blocklist_header=False)
    lines = rendered.splitlines()
    lines.insert(2, line)

    with pytest.raises(DeviceError, match="rendered line 3"):
        parse_config("\n".join(lines), PLATFORMS[platform], strict=True)


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_every_command_is_a_container_or_a_checked_member_line(platform: str) -> None:
    spec = PLATFORMS[platform]
    desired = parse_config(render(f"{platform}.j2", _many(300)), spec, strict=True)
    delta = compute_delta(DeviceConfig(), desired)
    commands = [c for chunk in delta_chunks(delta, spec, chunk_size=50) for c in chunk]

    assert len([c for c in commands if not c.startswith("object-group")]) == 300
    for command in commands:
        line = command if spec.enter is None else f" {command}"
        assert any(p.fullmatch(command) for p in spec.containers) or any(
            p.fullmatch(line) for p in spec.members
        ), command


def test_names_with_hostile_text_are_refused_by_the_module() -> None:
    rendered = render("ios.j2", SMALL, push_blocklist_object_group="X\nend\nwrite erase")
    with pytest.raises(DeviceError, match="rendered line"):
        parse_config(rendered, PLATFORMS["ios"], strict=True)
