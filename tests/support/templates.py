"""Render the push_blocklist role's device templates with plain Jinja2, as the role does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import yaml

from ansible_collections.campusnet.smtpguard.plugins.filter.blocklist import FilterModule

ROLE = Path(__file__).resolve().parents[2] / "roles" / "push_blocklist"


def environment() -> jinja2.Environment:
    """Plain Jinja2 set up as ansible.builtin.template renders: trim_blocks, final newline."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        trim_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    for name, function in FilterModule().filters().items():
        env.filters[f"campusnet.smtpguard.{name}"] = function
    return env


def render(template: str, entries: list[Any], **overrides: Any) -> str:
    """`template` with the role's plain defaults (not those that Ansible would template),
    `entries` as the block list, generation 7, and `overrides`."""
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    variables = {key: value for key, value in defaults.items() if not str(value).startswith("{{")}
    variables.update(push_blocklist_entries=entries, push_blocklist_generation=7, **overrides)
    return environment().get_template(template).render(**variables)
