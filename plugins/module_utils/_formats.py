"""The log formats flood_analyze reads, by the name of the `format` option.

Each entry is a module of this package with NAME, looks_like, line_time and read (see
`_engine`). The imports are plain ones so that Ansible ships every reader with the module.
`auto` tries the formats in DETECTION order on the first lines of each file: the more
particular shapes first, so that a syslog line that merely mentions another program does
not decide.
"""

from __future__ import annotations

from types import ModuleType

from ansible_collections.campusnet.smtpguard.plugins.module_utils import (
    _esa,
    _exchange,
    _exim,
    _jsonl,
    _postfix,
    _sendmail,
)

# format name -> reader module, in detection order
READERS: dict[str, ModuleType] = {
    module.NAME: module for module in (_exchange, _jsonl, _esa, _exim, _sendmail, _postfix)
}
DETECTION = tuple(READERS)
FORMATS = ("auto", *READERS)


def available() -> tuple[str, ...]:
    """The formats there are readers for, in detection order."""
    return DETECTION


def load(name: str) -> ModuleType:
    """The reader module of format `name` (KeyError for an unknown name)."""
    return READERS[name]


def detect(head: list[bytes]) -> str | None:
    """The first format whose shape the lines `head` have, or None."""
    for name in DETECTION:
        if READERS[name].looks_like(head):
            return name
    return None
