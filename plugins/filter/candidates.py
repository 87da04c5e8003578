"""Filters that combine the analyses of several gateways."""

from __future__ import annotations

from typing import Any, Iterable

from ansible.errors import AnsibleFilterError

DOCUMENTATION_MERGE = """
name: merge_candidates
short_description: Merge the candidates of several gateways into one entry per source
"""


def merge_candidates(analyses: Iterable[Any]) -> list[dict]:
    """One candidate per source from a list of flood_analyze results (or candidate lists).

    A source seen by several gateways keeps the entry with the most qualifying sessions; its
    `rules` are the union in rule order, and `gateways` counts how many saw it.
    """
    merged: dict[str, dict] = {}
    for analysis in analyses or []:
        if isinstance(analysis, dict):
            candidates = analysis.get("candidates", [])
        elif isinstance(analysis, list):
            candidates = analysis
        else:
            raise AnsibleFilterError(
                f"merge_candidates expects analyses, got {type(analysis).__name__}"
            )
        for candidate in candidates:
            if not isinstance(candidate, dict) or "ip" not in candidate:
                raise AnsibleFilterError(f"merge_candidates: {candidate!r} is not a candidate")
            previous = merged.get(candidate["ip"])
            if previous is None:
                merged[candidate["ip"]] = {**candidate, "gateways": 1}
                continue
            best = max(previous, candidate, key=lambda entry: entry.get("qualifying_sessions", 0))
            rules = list(dict.fromkeys([*previous.get("rules", []), *candidate.get("rules", [])]))
            merged[candidate["ip"]] = {**best, "rules": rules, "gateways": previous["gateways"] + 1}
    return sorted(
        merged.values(),
        key=lambda entry: (-entry.get("qualifying_sessions", 0), entry["ip"]),
    )


class FilterModule:
    def filters(self) -> dict:
        return {"merge_candidates": merge_candidates}
