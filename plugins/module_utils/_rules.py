"""Selection rules: which sources are candidates for the block list.

A source matches a rule when at least `min_sessions` of its sessions in the window lasted
`min_duration` seconds or more and its risk is at least `min_risk` percent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from ansible_collections.campusnet.smtpguard.plugins.module_utils._timestamps import (
    TimestampError,
    parse_duration,
)

# The source paper's values as of July 2016.
DEFAULT_RULES: tuple[dict, ...] = (
    {"name": "cond1", "min_duration": 20, "min_sessions": 40, "min_risk": 95},
    {"name": "cond2", "min_duration": 200, "min_sessions": 1, "min_risk": 95},
    {"name": "cond3", "min_duration": 0, "min_sessions": 300, "min_risk": 0},
)


class RuleError(ValueError):
    """A rule that cannot be applied, naming the rule and the field."""


@dataclass(frozen=True)
class Rule:
    name: str
    min_duration: float
    min_sessions: int
    min_risk: float

    def counts_pass(self, count: int) -> bool:
        return count >= self.min_sessions

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "min_duration": self.min_duration,
            "min_sessions": self.min_sessions,
            "min_risk": self.min_risk,
        }


def load_rules(items: Iterable[dict] | None) -> list[Rule]:
    """Validate rules given by the user; None gives the paper's three."""
    rules: list[Rule] = []
    names: set[str] = set()
    for position, item in enumerate(items if items is not None else DEFAULT_RULES, start=1):
        label = f"rule {position}"
        if not isinstance(item, dict):
            raise RuleError(
                f"{label} must be a mapping with name, min_duration, min_sessions, min_risk"
            )
        name = str(item.get("name") or f"rule{position}")
        label = f"rule {name!r}"
        if name in names:
            raise RuleError(f"{label} is defined twice; rule names must be unique")
        names.add(name)
        missing = [key for key in ("min_duration", "min_sessions") if item.get(key) is None]
        if missing:
            # A rule of only a name would select every source that sent one session.
            raise RuleError(
                f"{label} needs {' and '.join(missing)}: say how many sessions of how many "
                "seconds select a source (min_risk defaults to 0)"
            )
        try:
            duration = parse_duration(item["min_duration"], name=f"{label} min_duration")
        except TimestampError as exc:
            raise RuleError(str(exc)) from None
        sessions = _number(item["min_sessions"], label=f"{label} min_sessions", integer=True)
        risk = _number(
            item["min_risk"] if item.get("min_risk") is not None else 0, label=f"{label} min_risk"
        )
        if sessions < 1:
            raise RuleError(f"{label} min_sessions must be at least 1, not {sessions:g}")
        if not 0 <= risk <= 100:
            raise RuleError(f"{label} min_risk must be a percentage from 0 to 100, not {risk:g}")
        rules.append(Rule(name, duration, int(sessions), risk))
    if not rules:
        raise RuleError("rules is empty; give at least one rule or leave it unset for the defaults")
    return rules


def _number(value: object, *, label: str, integer: bool = False) -> float:
    if isinstance(value, bool):
        raise RuleError(f"{label} must be a number, not {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RuleError(f"{label} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise RuleError(f"{label} must be a finite number, not {value!r}")
    if integer and number != int(number):
        raise RuleError(f"{label} must be a whole number, not {value!r}")
    return number


def thresholds(rules: Sequence[Rule]) -> list[float]:
    """The distinct session lengths the rules count at, in a fixed order."""
    return sorted({rule.min_duration for rule in rules})
